"""Run every experiment and print a table of verdicts: ``python -m experiments [--quick]``
from a clone; one experiment is ``python -m experiments.NAME [--quick | --full]``.

Each script prints its claim, evidence and PASS/FAIL and writes JSON and a
figure to ``--out`` (default ``./jaxreg-experiments``). ``--quick`` runs every one in
its reduced configuration (the one the test suite runs: fewer epochs, rates or
members, the same claim and verdict).

``--confirm`` runs the pre-registered configurations on fresh seeds (a confirmatory
run); ``--record DIR`` copies each result into ``DIR`` with its provenance (commit,
date, host, library versions, wall time) — how ``experiments/results/`` is written.

A script that crashes, or exits without writing a fresh JSON, is reported as
ERROR, not judged. Exit status: 0 when every verdict is PASS; 3 when every script
ran and a claim FAILed (an honest outcome, e.g. ``swa_flatness``); 2 when a script
could not run (ERROR); 1 only if this runner itself crashed. One script alone
exits 0 on PASS and 3 on FAIL (``experiments.common.EXIT_FAIL``), 1 on a crash.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from experiments.common import DEFAULT_OUT, EXIT_FAIL, provenance

EXPERIMENTS = [
    "l1_vs_l2",
    "noise_equals_l2",
    "early_stopping_vs_l2",
    "augmentation",
    "label_smoothing",
    "dropout",
    "batch_size",
    "parameter_sharing",
    "sharp_vs_flat",
    "ensembles",
    "bias_variance",
    "swa_flatness",
    "evidence_weight_decay",
    "laplace_predictive",
    "generalization_measures",
]
PACKAGE = "experiments"


def _sklearn_missing() -> bool:
    """The experiments compare against scikit-learn: say how to get it, not a traceback."""
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        print(
            "python -m experiments: the experiments need scikit-learn: "
            "pip install 'jaxreg[sklearn]'",
            file=sys.stderr,
        )
        return True
    return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Run every experiment script and print a table of verdicts.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every experiment in its reduced configuration (a few minutes in all)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for results (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--confirm", action="store_true", help="the pre-registered configurations on fresh seeds"
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        help="also copy each result, with its provenance, into this folder",
    )
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run only these")
    return parser


def _record(name: str, out: Path, folder: Path, confirm: bool, elapsed: float) -> None:
    written = json.loads((out / f"{name}.json").read_text())
    written["provenance"] = provenance(elapsed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".confirmatory" if confirm else ""
    (folder / f"{name}{suffix}.json").write_text(json.dumps(written, indent=2) + "\n")


def _run(name: str, out: Path, *flags: str) -> tuple[str, float, str]:
    """Verdict, seconds and claim (or the end of stderr) of one experiment script."""
    # A crashed script must not be judged by the JSON an earlier run left behind.
    result = out / f"{name}.json"
    result.unlink(missing_ok=True)
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.{name}", "--out", str(out), *flags],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    written = json.loads(result.read_text()) if result.exists() else None
    if (
        run.returncode not in (0, EXIT_FAIL)
        or written is None
        or written.get("verdict")
        not in (
            "PASS",
            "FAIL",
        )
    ):
        detail = (run.stderr or run.stdout).strip().splitlines()
        return "ERROR", elapsed, detail[-1] if detail else f"exit status {run.returncode}"
    return written["verdict"], elapsed, written["claim"]


def evidence_line(result: Path, width: int = 200) -> str:
    """The scalar numbers of an experiment's evidence, on one line (what its verdict rests on).

    Example:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "x.json"
      >>> evidence = {"gain_lower_95": 0.0291, "seeds": 5, "per_seed": [0.1, 0.2]}
      >>> _ = path.write_text(json.dumps({"evidence": evidence}))
      >>> evidence_line(path)
      'evidence: gain_lower_95=0.0291, seeds=5'
    """
    evidence = json.loads(result.read_text()).get("evidence", {}) if result.exists() else {}
    items = [
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in evidence.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    line = "evidence: " + (", ".join(items) or "(see the JSON)")
    return line if len(line) <= width else line[: width - 1] + "…"


def results_table(folder: Path) -> str:
    """Markdown table of the recorded verdicts in ``folder``: the full run and the
    confirmatory run (fresh seeds) of each experiment, with their commits.

    Example:
      >>> import tempfile
      >>> folder = Path(tempfile.mkdtemp())
      >>> seen = {"commit": "abc1234def", "elapsed_seconds": 5.0}
      >>> record = {"verdict": "PASS", "provenance": seen}
      >>> _ = (folder / "dropout.json").write_text(json.dumps(record))
      >>> print(results_table(folder).splitlines()[2])
      | dropout | PASS (5 s, abc1234) | — |
    """
    lines = [
        "| experiment | full run (seeds from 0) | confirmatory run (fresh seeds) |",
        "|---|---|---|",
    ]
    for name in EXPERIMENTS:
        cells = []
        for suffix in ("", ".confirmatory"):
            path = folder / f"{name}{suffix}.json"
            if not path.exists():
                cells.append("—")
                continue
            written = json.loads(path.read_text())
            seen = written["provenance"]
            cells.append(
                f"{written['verdict']} ({seen['elapsed_seconds']:.0f} s, {seen['commit'][:7]})"
            )
        if cells != ["—", "—"]:
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if _sklearn_missing():
        return 2
    verdicts = []
    flags = (["--quick"] if args.quick else []) + (["--confirm"] if args.confirm else [])
    for name in args.only or EXPERIMENTS:
        verdict, elapsed, claim = _run(name, args.out, *flags)
        verdicts.append(verdict)
        if args.record is not None and verdict != "ERROR":
            _record(name, args.out, args.record, args.confirm, elapsed)
        print(f"{verdict:<5} {name:<22} {elapsed:6.1f}s  {claim}", flush=True)
        if verdict != "ERROR":
            print(f"{'':36}{evidence_line(args.out / f'{name}.json')}", flush=True)
    counts = {v: verdicts.count(v) for v in ("PASS", "FAIL", "ERROR")}
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} could not run")
    if counts["ERROR"]:
        return 2
    return EXIT_FAIL if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
