"""The benchmark protocol's shared pieces (see ``benchmarks/README.md``).

Imports neither JAX nor torch, so a side that runs in another framework's
virtualenv (``python benchmarks/_hessian_torch.py``) can use it too.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MIN_STARTS = 5
WARMUP_START = 100  # the seed of the warm-up start, apart from the measured 0 … starts-1

# The Hessian benchmark's budgets, shared by its JAX and PyTorch sides.
TOL = 1e-4  # the relative eigenvalue error every method is held to
TRACE_HVPS = 30
DENSITY_STEPS = 20


# Run at module scope, as ``python -c "..."`` would run it (global names are slower
# than a function's locals): the convention of every host speed quoted in the README.
_LOOP = compile("total = 0\nfor i in range(10_000_000):\n    total += i\n", "<loop>", "exec")


def host_loop_seconds(repeats: int = 3) -> float:
    """The host's speed: the fastest of ``repeats`` pure-Python loops of 10⁷ additions."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        exec(_LOOP, {})
        best = min(best, time.perf_counter() - start)
    return best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host() -> dict:
    """What every result records about the machine it ran on."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loop_1e7_additions_s": round(host_loop_seconds(), 3),
    }


def spread(values: Sequence[float]) -> dict:
    """Median, min and max of a side's per-start measurements (and the values)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("spread: values is empty")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def relative_error(values, reference) -> float:
    """The largest relative difference, in float64."""
    import numpy as np

    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def measure_starts(run: Callable[[int], tuple[int, float]], starts: int) -> dict:
    """One warm-up start (reported as the first call), then ``starts`` timed starts.

    ``run(seed)`` runs the method from one random start to completion (blocking)
    and returns ``(hvps, error)``.
    """
    start = time.perf_counter()
    run(WARMUP_START)
    first = time.perf_counter() - start
    seconds, hvps, errors = [], [], []
    for seed in range(starts):
        start = time.perf_counter()
        count, error = run(seed)
        seconds.append(time.perf_counter() - start)
        hvps.append(count)
        errors.append(error)
    return {
        "first_call_s": first,
        "seconds": spread(seconds),
        "hvps": spread(hvps),
        "error": spread(errors),
    }


def interleaved(calls: dict[str, Callable], repeats: int, wait: Callable) -> dict[str, list]:
    """Seconds of each call over ``repeats`` rounds in which every call runs once, the order
    rotated each round (the protocol's "within JAX: one process, interleaved"). ``wait``
    blocks on a call's result (``jax.block_until_ready``); warm the calls up first."""
    names, times = list(calls), {name: [] for name in calls}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            wait(calls[name]())
            times[name].append(time.perf_counter() - start)
    return times


def thread_env(threads: int) -> dict:
    """The environment of a side's process: thread pools sized to ``threads``."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        BENCHMARK_THREADS=str(threads),
    )
    return env


def run_side(python: str, module: str, args: Sequence[str], threads: int) -> dict:
    """Run one side of a comparison in a fresh process and return the JSON it prints last.

    Each side (jaxreg, and each anchor) gets its own process, so neither
    framework's thread pools, caches or allocator state touch the other's.
    """
    command = [python, "-m", module, *args]
    print(f"  $ {' '.join(command)}", flush=True)
    cores = os.cpu_count() or threads
    # XLA has no flag for "N threads"; pinning the process to N cores holds every framework
    # to the same N.
    pin = (lambda: os.sched_setaffinity(0, range(threads))) if threads < cores else None
    completed = subprocess.run(
        command,
        cwd=ROOT,
        env=thread_env(threads),
        preexec_fn=pin,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    for line in lines[:-1]:
        print(f"    {line}", flush=True)
    return json.loads(lines[-1])


def thread_count() -> int:
    """The threads this side was given (``BENCHMARK_THREADS``, else every core)."""
    return int(os.environ.get("BENCHMARK_THREADS", os.cpu_count() or 1))


def emit(result: dict) -> None:
    """A side's last line on stdout: its result as one JSON object."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def write(name: str, result: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` (the README's numbers are generated from it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return path
