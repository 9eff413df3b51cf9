"""Hessian eigenvalues, trace and density against PyHessian, hessian-eigenthings, curvlinops
and matfree, under the protocol of ``benchmarks/README.md``.

Workloads (prepared once, then read by every side from the same file):

A. MLP 40-512-512-10 (288,778 parameters) after 10 epochs of Adam on MNIST-1D;
   the 4,000 training examples in 8 batches of 500. Top-5 eigenvalues.
B. ResNet-20 with BatchNorm (eval mode, the trained statistics) on
   CIFAR-10-shaped inputs: scikit-learn's digits upsampled to 32×32×3 (no
   download), trained for 2 epochs; ported to PyTorch for the anchors (the port
   is checked on the logits). Top-1, top-5, trace and spectral density.

Every side runs in its own process with the same thread count, one warm-up start
(its time, compilation included, is reported as the first call) and then
``--starts`` random starts (median, min and max). Errors are against the same
references: float64 Lanczos to 1e-10 for the MLP's eigenvalues (float32 to 1e-7
for the ResNet's), Hutch++ with 300 HVPs for the trace (its standard error is
recorded). Each method is held to a
relative eigenvalue error of 1e-4:

* jaxreg: adaptive Lanczos (``tol=1e-4``; it stops on its own error bound);
* hessian-eigenthings 1.0.0a5 (Lanczos) and matfree 0.6 (``tridiag_sym``, on the
  MLP only: it runs jaxreg's own HVP): a
  fixed step count, the fewest that reach 1e-4 on the warm-up start, chosen with
  the reference (an advantage no user has);
* curvlinops 3.0 (SciPy ``eigsh``/ARPACK): the largest ``tol`` in 1e-1…1e-5
  that reaches 1e-4 on the warm-up start;
* PyHessian 0.1: its defaults (power iteration with deflation, ``tol=1e-3``).

Trace: Hutch++ with 30 HVPs (jaxreg, hessian-eigenthings, curvlinops);
PyHessian's Hutchinson at its defaults. Density: SLQ with 20 Lanczos steps, one
run; its largest node against λmax.

The MLP also records HVP / gradient time and thick-restart Lanczos's memory. Both
workloads record the first call in a new process with jaxreg's compilation cache
(:func:`jaxreg.enable_compilation_cache`) cold and warm: top-5 on the MLP, top-1 on
the ResNet. The ResNet section first times a convolution's weight gradient inside a
loop on XLA:CPU (which ``jaxreg.nn.patch_conv``, used by jaxreg's models, avoids).

The anchors need a second virtualenv (``pip install torch pyhessian
hessian-eigenthings==1.0.0a5 curvlinops-for-pytorch``), passed as
``--torch-python``; matfree installs beside jaxreg (``pip install matfree``).
Missing sides are skipped with a message. Results: ``benchmarks/results/hessian.json``,
from which the README's performance paragraph is generated (``python -m benchmarks.readme``).

Run: ``python -m benchmarks.hessian --torch-python VENV/bin/python [--starts 5]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import _protocol

JAX_SIDE = "benchmarks._hessian_jax"
TORCH_SIDE = "benchmarks._hessian_torch"
TASKS = {"mlp": "top5", "resnet": "top1,top5,trace,density"}
ANCHORS = ("pyhessian", "eigenthings", "curvlinops", "matfree")


def _side(python: str, module: str, args: list[str], threads: int) -> dict | None:
    try:
        return _protocol.run_side(python, module, args, threads)
    except Exception as error:  # a failing anchor is reported, not fatal to the others
        print(f"  side failed: {error}", flush=True)
        return None


def workload_section(kind: str, folder: Path, options: argparse.Namespace) -> dict:
    """Prepare one workload, then run every available side on it, each in its own process."""
    path = folder / f"{kind}.npz"
    common = ["--workload", str(path)]
    prepared = _side(
        sys.executable,
        JAX_SIDE,
        ["prepare", "--kind", kind, "--examples", str(options.examples), *common],
        options.threads,
    )
    if prepared is None:
        raise RuntimeError(f"could not prepare the {kind} workload")
    section = {"workload": prepared, "sides": {}}
    measured = [*common, "--tasks", TASKS[kind], "--starts", str(options.starts)]
    for name, (python, module, args) in _commands(kind, measured, options).items():
        result = _side(python, module, args, options.threads)
        if result is not None:
            section["sides"][name] = result
    section["ratios"] = ratios(section["sides"])
    return section


def _commands(kind: str, measured: list[str], options: argparse.Namespace) -> dict:
    """The sides to run on this workload: ``{name: (python, module, args)}``."""
    sides = {"jaxreg": (sys.executable, JAX_SIDE, ["jaxreg", *measured])}
    if kind == "resnet":
        print(
            "  matfree: on the MLP only (it runs jaxreg's HVP; its step search compiles each count)"
        )
    elif importlib.util.find_spec("matfree") is not None:
        sides["matfree"] = (sys.executable, JAX_SIDE, ["matfree", *measured])
    else:
        print("  matfree skipped: not installed (pip install matfree)")
    if options.torch_python:
        for anchor in ("pyhessian", "eigenthings", "curvlinops"):
            sides[anchor] = (options.torch_python, TORCH_SIDE, [anchor, *measured])
    else:
        print("  PyTorch anchors skipped: no --torch-python")
    return {name: command for name, command in sides.items() if name in options.sides}


def merge(recorded: dict, fresh: dict, kind: str) -> dict:
    """A recorded workload section with the re-run sides replaced and its ratios recomputed.

    The workload is prepared afresh, deterministically; its references must equal the
    recorded ones exactly, or the sides would not have measured the same problem.
    """
    old, new = recorded[kind], fresh[kind]
    if old["workload"] != new["workload"]:
        raise ValueError(f"the re-prepared {kind} workload differs from the recorded one")
    sides = {**old["sides"], **new["sides"]}
    extras = {key: new[key] for key in ("extras", "compilation_cache") if key in new}
    return {**old, **extras, "sides": sides, "ratios": ratios(sides)}


def ratios(sides: dict) -> dict:
    """Each anchor's time over jaxreg's, per task: median over starts, and the range.

    ``steady`` divides medians of warm calls; the range divides the anchor's fastest
    start by jaxreg's slowest and its slowest by jaxreg's fastest. ``first_call``
    divides the first calls in a new process (the warm-up start: compilation
    included for the JAX sides; the PyTorch anchors compile nothing).
    """
    ours = sides.get("jaxreg", {})
    out: dict = {}
    for anchor in ANCHORS:
        for task, theirs in sides.get(anchor, {}).items():
            if task not in ours or not isinstance(theirs, dict) or "seconds" not in theirs:
                continue
            a, b = theirs["seconds"], ours[task]["seconds"]
            out.setdefault(anchor, {})[task] = {
                "steady": a["median"] / b["median"],
                "range": [a["min"] / b["max"], a["max"] / b["min"]],
                "first_call": theirs["first_call_s"] / ours[task]["first_call_s"],
            }
    return out


def cache_section(folder: Path, threads: int, kind: str, task: str) -> dict:
    """One task's first call in a new process, jaxreg's compilation cache cold then warm."""
    cache = folder / f"cache-{kind}"
    args = ["cached", "--workload", str(folder / f"{kind}.npz"), "--cache", str(cache)]
    args += ["--tasks", task]
    cold = _side(sys.executable, JAX_SIDE, args, threads)
    warm = _side(sys.executable, JAX_SIDE, args, threads)
    return {"cold_first_call_s": cold["first_call_s"], "warm_first_call_s": warm["first_call_s"]}


def print_table(name: str, section: dict) -> None:
    print(f"\n{name}: {section['workload']['parameters']:,} parameters")
    print("| side | task | median s [min, max] | first call s | HVPs | max error |")
    for side, result in section["sides"].items():
        for task, r in result.items():
            if not isinstance(r, dict) or task == "versions":
                continue
            if "failed" in r:
                print(f"| {side} | {task} | failed: {r['failed']} | | | |")
                continue
            s = r["seconds"]
            print(
                f"| {side} | {task} | {s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}] | "
                f"{r['first_call_s']:.2f} | {r['hvps']['median']:.0f} | {r['error']['max']:.1e} |"
            )
    for anchor, tasks in section["ratios"].items():
        for task, r in tasks.items():
            print(
                f"  {anchor}/jaxreg {task}: {r['steady']:.2f}x steady "
                f"[{r['range'][0]:.2f}, {r['range'][1]:.2f}], {r['first_call']:.2f}x vs first call"
            )


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = sorted(set(names) - set(allowed))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {allowed}")
        return names

    return parse


def run(options: argparse.Namespace, folder: Path) -> dict:
    result = {"host": _protocol.host(), "threads": options.threads, "starts": options.starts}
    print(f"host: {result['host']}", flush=True)
    if "mlp" in options.workloads:
        result["mlp"] = workload_section("mlp", folder, options)
        if "jaxreg" in options.sides:
            args = ["extras", "--workload", str(folder / "mlp.npz")]
            result["mlp"]["extras"] = _side(sys.executable, JAX_SIDE, args, options.threads)
            result["mlp"]["compilation_cache"] = cache_section(
                folder, options.threads, "mlp", "top5"
            )
        print_table("A. MLP", result["mlp"])
    if "resnet" in options.workloads:
        if "jaxreg" in options.sides:
            result["conv_in_loop"] = _side(sys.executable, JAX_SIDE, ["conv"], options.threads)
        result["resnet"] = workload_section("resnet", folder, options)
        if "jaxreg" in options.sides:
            result["resnet"]["compilation_cache"] = cache_section(
                folder, options.threads, "resnet", "top1"
            )
        print_table("B. ResNet-20", result["resnet"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=None, help="a venv with the PyTorch anchors")
    parser.add_argument("--starts", type=int, default=_protocol.MIN_STARTS)
    parser.add_argument("--examples", type=int, default=64, help="ResNet-20 examples")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workloads", type=_names(("mlp", "resnet")), default=["mlp", "resnet"])
    parser.add_argument("--sides", type=_names(("jaxreg", *ANCHORS)), default=["jaxreg", *ANCHORS])
    parser.add_argument(
        "--update",
        action="store_true",
        help="merge the re-run --sides and --workloads into the recorded result",
    )
    parser.add_argument("--out", default="hessian", help="name of the result in results/")
    options = parser.parse_args()
    if options.starts < _protocol.MIN_STARTS:
        print(f"note: fewer than {_protocol.MIN_STARTS} starts does not follow the protocol")
    with tempfile.TemporaryDirectory() as tmp:
        result = run(options, Path(tmp))
    if options.update:
        recorded = json.loads((_protocol.RESULTS / f"{options.out}.json").read_text())
        for kind in options.workloads:
            recorded[kind] = merge(recorded, result, kind)
        update = {"host": result["host"], "workloads": options.workloads, "sides": options.sides}
        recorded.setdefault("updates", []).append(update)
        result = recorded
    print(f"wrote {_protocol.write(options.out, result)}")


if __name__ == "__main__":
    main()
