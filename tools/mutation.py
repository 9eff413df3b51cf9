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
code. So a selected test module must not run JAX at import (module-level test data is
NumPy); the script refuses a run where the server started JAX, whose timeouts would all
be deadlocks.

A group too slow to run in full (augment, sharpness: thousands of mutants, each
compiling its tests' programs) is measured on a random sample of its mutants
(``--sample``), with the score's 95% Wilson interval. After adding tests,
``--workdir DIR --resume`` reruns only that run's survivors.

Run::

    pip install mutmut
    python tools/mutation.py                    # every group, scores to tools/mutation_scores.json
    python tools/mutation.py penalties labels   # some groups
    python tools/mutation.py prox --survivors   # and print each surviving mutant's diff
    python tools/mutation.py augment --sample 0.2 --workdir /tmp/augment   # a fifth
    python tools/mutation.py augment --sample 0.2 --workdir /tmp/augment --resume
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

import numpy as np

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
_FORK_WARNING = "os.fork() is incompatible with multithreaded code"
#: Mutant numbers a sample draws from; a function with more mutants is refused.
SAMPLED_UP_TO = 1000


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
        # mutmut copies each function's docstring into every mutant of it; without the
        # -k filter, doctest would collect one example per mutant and select them all
        # for every mutant of the function.
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n    -k\n    not __mutmut_",
        "also_copy =\n"
        + "\n".join(
            f"    {p}"
            for p in ("conftest.py", "benchmarks", "docs", "notebooks", "README.md", ".ci")
        ),
        "process_isolation = forkserver",
        "use_git_change_detection = false",
    ]
    (workdir / "setup.cfg").write_text("\n".join(lines) + "\n")


def _results(workdir: Path) -> dict[str, str]:
    """Every mutant's status (``"killed"``, ``"survived"``, ``"not checked"``, ...) by name,
    from the ``.meta`` files mutmut writes."""
    from mutmut.stats import status_by_exit_code

    return {
        key: status_by_exit_code[code]
        for meta in (workdir / "mutants").rglob("*.meta")
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items()
    }


def _statuses(workdir: Path) -> Counter:
    return Counter(_results(workdir).values())


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


def sample_patterns(fraction: float, seed: int, largest: int = SAMPLED_UP_TO) -> list[str]:
    """mutmut name patterns that select each mutant with probability ``fraction``.

    mutmut numbers the mutants of every function 1, 2, ...; a mutant is in the sample
    when its number is in a random set that holds each integer with probability
    ``fraction`` (so every mutant has the same chance; one function's sampled mutants
    are spread over its body).
    """
    draws = np.random.default_rng(seed).random(largest)
    return [f"*__mutmut_{n + 1}" for n in np.flatnonzero(draws < fraction)]


def wilson_interval(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if total == 0:
        return (0.0, 1.0)
    share = killed / total
    centre = (share + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z * np.sqrt(share * (1 - share) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    return (round(float(centre - half), 4), round(float(centre + half), 4))


def _survivor_names(workdir: Path) -> list[str]:
    return [key for key, status in _results(workdir).items() if status == "survived"]


_FORKS_AFTER_COLLECTION = """
import os, sys, warnings
import pytest
pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]])
with warnings.catch_warnings(record=True) as caught:  # JAX warns at a fork once started
    warnings.simplefilter("always")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
if any("JAX is multithreaded" in str(w.message) for w in caught):
    sys.exit("JAX started during collection")
"""


def check_collection_leaves_jax_idle(workdir: Path, tests: list[str]) -> None:
    """mutmut's server forks after collecting the tests; JAX must not have started."""
    done = subprocess.run(
        [sys.executable, "-c", _FORKS_AFTER_COLLECTION, "-k", "not __mutmut_", *tests],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(
            "collecting the tests ran JAX (e.g. a module-level jnp array or PRNG key in a "
            "test file): mutmut's forked processes would deadlock and every mutant would "
            "time out. Make module-level test data NumPy.\n" + done.stderr[-2000:]
        )


def _run_mutmut(workdir: Path, name: str, max_children: int, patterns: list[str]) -> Counter:
    mutate, tests = GROUPS[name]
    mutmut = Path(sys.executable).parent / "mutmut"
    _scratch_copy(workdir)
    selected = [t for t in tests if (workdir / t).exists()]
    check_collection_leaves_jax_idle(workdir, selected)
    _configure(workdir, mutate, selected)
    done = subprocess.run(
        [mutmut, "run", "--max-children", str(max_children), *patterns],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    counts = _statuses(workdir)
    if _FORK_WARNING in done.stdout + done.stderr:
        # Each mutant's process then deadlocks and dies at its CPU limit: a "timeout",
        # counted as killed, whatever the tests would have said.
        raise RuntimeError(
            f"{name}: the test server started JAX before forking (a JAX computation at "
            "import or collection time, e.g. a module-level jnp array in a test file); "
            "mutants' processes deadlock, so their timeouts say nothing. Make the "
            "module-level values NumPy."
        )
    if not counts or counts["not checked"] == sum(counts.values()):
        raise RuntimeError(f"mutmut produced no results for {name}:\n{done.stdout[-3000:]}")
    if patterns and _largest_mutant_number(workdir) > SAMPLED_UP_TO:
        raise RuntimeError(f"{name}: a function has over {SAMPLED_UP_TO} mutants; raise it")
    return counts


def _largest_mutant_number(workdir: Path) -> int:
    return max(int(key.rsplit("_", 1)[1]) for key in _results(workdir))


def run_group(
    name: str,
    max_children: int,
    show_survivors: bool,
    *,
    sample: float = 1.0,
    seed: int = 0,
    workdir: Path | None = None,
    resume: bool = False,
) -> dict:
    """Runs mutmut over one group in a scratch copy; returns its counts and score.

    With ``sample < 1``, only a random share of the mutants is run, and the result
    adds the score's 95% Wilson interval. ``workdir`` keeps the scratch copy there
    (to read survivors with ``mutmut show``); by default it is a temporary directory.
    ``resume`` refreshes the tests in ``workdir`` and reruns only its survivors (give
    the first run's ``sample`` and ``seed`` again).
    """
    patterns = sample_patterns(sample, seed) if sample < 1 else []
    with tempfile.TemporaryDirectory(prefix="jaxreg-mutation-") as scratch:
        where = Path(workdir or scratch)
        where.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        # Resuming: the earlier results stand (tests were only added), the survivors rerun.
        rerun = _survivor_names(where) if resume else patterns
        if resume and not rerun:
            raise RuntimeError(f"{name}: nothing to resume in {where} (no survivors)")
        counts = _run_mutmut(where, name, max_children, rerun)
        seconds = time.perf_counter() - start
        if show_survivors:
            print(_survivors(where, Path(sys.executable).parent / "mutmut"))
    # Sampled runs leave the other mutants "not checked"; a full run has none.
    total = sum(counts.values()) - counts["skipped"] - (counts["not checked"] if patterns else 0)
    killed = sum(counts[status] for status in KILLED)
    result = {
        "mutants": total,
        "killed": killed,
        "survived": counts["survived"],
        "timeouts": counts["timeout"],
        "no_tests": counts["no tests"],
        "score": round(killed / max(total, 1), 4),
        "seconds": round(seconds, 1),
    }
    if patterns:
        result |= {"sample": sample, "seed": seed, "interval": wilson_interval(killed, total)}
    if resume:
        result["resumed"] = True  # "seconds" is then the rerun's time only
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "groups", nargs="*", help=f"groups to run (default all): {', '.join(GROUPS)}"
    )
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--survivors", action="store_true", help="print surviving mutants")
    parser.add_argument("--no-save", action="store_true", help="do not update the scores file")
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="run this share of each group's mutants, at random (default 1: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--workdir", type=Path, help="keep the scratch copy here (one group)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --workdir: refresh the tests there and rerun only the survivors",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {sorted(GROUPS)}")
    if not 0 < args.sample <= 1:
        parser.error(f"--sample must lie in (0, 1], got {args.sample}")
    if args.workdir and len(args.groups) != 1:
        parser.error("--workdir keeps one group's copy: name exactly one group")
    if args.resume and not (args.workdir and (args.workdir / "mutants").is_dir()):
        parser.error("--resume needs the --workdir of an earlier run")
    scores = json.loads(SCORES.read_text()) if SCORES.exists() else {}
    for name in args.groups or list(GROUPS):
        result = run_group(
            name,
            args.max_children,
            args.survivors,
            sample=args.sample,
            seed=args.seed,
            workdir=args.workdir,
            resume=args.resume,
        )
        print(
            f"{name:18s} {result['killed']:4d}/{result['mutants']:4d} killed "
            f"({100 * result['score']:.1f}%), {result['survived']} survived "
            f"({result['no_tests']} with no test), {result['seconds']:.0f} s"
            + (f", 95% interval {result['interval']}" if "interval" in result else ""),
            flush=True,
        )
        scores[name] = result
        if not args.no_save:
            SCORES.write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
