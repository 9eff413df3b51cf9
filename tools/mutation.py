"""Mutation testing of jaxreg's numeric core with mutmut (not part of the default suite).

Each module group runs in its own scratch copy of the working tree: mutmut rewrites the
group's functions into mutants (a flipped comparison, a changed constant, a dropped
argument, ...), runs the tests that cover each function against each mutant, and a mutant
that no test notices "survives". The score is the share of mutants killed (a failing test
or a timeout) among all mutants of the group; a mutant whose function no selected test
calls counts as survived, not as skipped.

mutmut forks one process per mutant from a server that has only imported the tests
(``process_isolation = forkserver``): forking after JAX has started its thread pools can
deadlock, and a forked child must not inherit compiled programs traced from unmutated
code.

Run::

    pip install mutmut
    python tools/mutation.py                    # every group, scores to tools/mutation_scores.json
    python tools/mutation.py penalties labels   # some groups
    python tools/mutation.py prox --survivors   # and print each surviving mutant's diff
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCORES = ROOT / "tools" / "mutation_scores.json"

#: Module group -> (files mutmut mutates, tests selected for them). The tests are the
#: group's unit tests and its docstring examples; the study statistics also run the test
#: that recomputes the study's conclusions.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "penalties": (
        ["jaxreg/penalties.py"],
        ["tests/test_penalties.py", "tests/test_modern_regularizers.py", "jaxreg/penalties.py"],
    ),
    "prox": (["jaxreg/prox.py"], ["tests/test_prox.py", "jaxreg/prox.py"]),
    "transforms": (
        ["jaxreg/transforms.py"],
        ["tests/test_transforms.py", "tests/test_modern_regularizers.py", "jaxreg/transforms.py"],
    ),
    "averaging": (
        ["jaxreg/averaging.py"],
        ["tests/test_averaging.py", "tests/test_noise.py", "jaxreg/averaging.py"],
    ),
    "sharpness": (["jaxreg/sharpness/*"], ["tests/test_sharpness.py", "jaxreg/sharpness"]),
    "metrics": (["jaxreg/metrics.py"], ["tests/test_metrics.py", "jaxreg/metrics.py"]),
    "labels": (["jaxreg/labels.py"], ["tests/test_labels.py", "jaxreg/labels.py"]),
    "augment": (["jaxreg/augment/*"], ["tests/test_augment.py", "jaxreg/augment"]),
    "study statistics": (
        ["jaxreg/stats.py", "experiments/study/report.py"],
        [
            "tests/test_conclusions.py",
            "tests/test_study.py",
            "tests/test_study_bayes.py",
            "jaxreg/stats.py",
            "experiments/study/report.py",
        ],
    ),
}

KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def _scratch_copy(destination: Path) -> None:
    """Copies the working tree's tracked and untracked, not ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _configure(workdir: Path, mutate: list[str], tests: list[str]) -> None:
    lines = [
        "[mutmut]",
        "source_paths =\n    jaxreg\n    experiments",
        "only_mutate =\n" + "\n".join(f"    {path}" for path in mutate),
        "pytest_add_cli_args_test_selection =\n" + "\n".join(f"    {t}" for t in tests),
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q",
        "also_copy =\n"
        + "\n".join(
            f"    {p}"
            for p in ("conftest.py", "benchmarks", "docs", "notebooks", "README.md", ".ci")
        ),
        "process_isolation = forkserver",
        "use_git_change_detection = false",
    ]
    (workdir / "setup.cfg").write_text("\n".join(lines) + "\n")


def _statuses(workdir: Path) -> Counter:
    from mutmut.stats import status_by_exit_code

    counts: Counter = Counter()
    for meta in (workdir / "mutants").rglob("*.meta"):
        for code in json.loads(meta.read_text())["exit_code_by_key"].values():
            counts[status_by_exit_code[code]] += 1
    return counts


def _survivors(workdir: Path, mutmut: Path) -> str:
    listed = subprocess.run(
        [mutmut, "results"], cwd=workdir, capture_output=True, text=True, check=False
    ).stdout
    names = [line.split(":")[0].strip() for line in listed.splitlines() if ": " in line]
    shown = []
    for name in names:
        diff = subprocess.run(
            [mutmut, "show", name], cwd=workdir, capture_output=True, text=True, check=False
        ).stdout
        changed = [
            line
            for line in diff.splitlines()
            if line[:1] in "+-" and line[:3] not in ("+++", "---")
        ]
        shown.append(
            f"{name} ({listed.split(name + ': ')[1].splitlines()[0]})\n  " + "\n  ".join(changed)
        )
    return "\n".join(shown)


def run_group(name: str, max_children: int, show_survivors: bool) -> dict:
    """Runs mutmut over one group in a scratch copy; returns its counts and score."""
    mutate, tests = GROUPS[name]
    mutmut = Path(sys.executable).parent / "mutmut"
    with tempfile.TemporaryDirectory(prefix="jaxreg-mutation-") as scratch:
        workdir = Path(scratch)
        _scratch_copy(workdir)
        _configure(workdir, mutate, [t for t in tests if (workdir / t).exists()])
        start = time.perf_counter()
        done = subprocess.run(
            [mutmut, "run", "--max-children", str(max_children)],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
        counts = _statuses(workdir)
        if not counts or counts["not checked"] == sum(counts.values()):
            raise RuntimeError(f"mutmut produced no results for {name}:\n{done.stdout[-3000:]}")
        if show_survivors:
            print(_survivors(workdir, mutmut))
    total = sum(counts.values()) - counts["skipped"]
    killed = sum(counts[status] for status in KILLED)
    return {
        "mutants": total,
        "killed": killed,
        "survived": counts["survived"],
        "no_tests": counts["no tests"],
        "score": round(killed / max(total, 1), 4),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "groups", nargs="*", help=f"groups to run (default all): {', '.join(GROUPS)}"
    )
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--survivors", action="store_true", help="print surviving mutants")
    parser.add_argument("--no-save", action="store_true", help="do not update the scores file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {sorted(GROUPS)}")
    scores = json.loads(SCORES.read_text()) if SCORES.exists() else {}
    for name in args.groups or list(GROUPS):
        result = run_group(name, args.max_children, args.survivors)
        print(
            f"{name:18s} {result['killed']:4d}/{result['mutants']:4d} killed "
            f"({100 * result['score']:.1f}%), {result['survived']} survived "
            f"({result['no_tests']} with no test), {result['seconds']:.0f} s",
            flush=True,
        )
        scores[name] = result
        if not args.no_save:
            SCORES.write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
