"""Run every experiment and print a table of verdicts: ``jaxreg experiments [--quick]``
(or ``python -m jaxreg.experiments``).

Each script prints its claim, evidence and PASS/FAIL and writes JSON and a
figure to ``--out`` (default ``./jaxreg-experiments``). ``--quick`` skips the slowest ones
(sharp_vs_flat, ensembles, bias_variance, parameter_sharing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from jaxreg.experiments._common import DEFAULT_OUT

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
]
SLOW = {"parameter_sharing", "sharp_vs_flat", "ensembles", "bias_variance"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxreg experiments",
        description="Run every experiment script and print a table of verdicts.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"skip the slowest ones ({', '.join(sorted(SLOW))})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for results (default: {DEFAULT_OUT})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quick, out = args.quick, args.out
    rows = []
    for name in EXPERIMENTS:
        if quick and name in SLOW:
            continue
        # A crashed script must not be judged by the JSON an earlier run left behind.
        (out / f"{name}.json").unlink(missing_ok=True)
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", f"jaxreg.experiments.{name}", "--out", str(out)],
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        verdict = "ERROR"
        result = out / f"{name}.json"
        if run.returncode in (0, 1) and result.exists():
            verdict = json.loads(result.read_text())["verdict"]
        claim = json.loads(result.read_text())["claim"] if result.exists() else run.stderr[-200:]
        rows.append((name, verdict, elapsed, claim))
        print(f"{verdict:<5} {name:<22} {elapsed:6.1f}s  {claim}", flush=True)
    passed = sum(v == "PASS" for _, v, _, _ in rows)
    print(f"\n{passed} passed, {len(rows) - passed} failed")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
