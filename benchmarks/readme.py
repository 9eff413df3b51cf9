"""The README's performance paragraphs, generated from ``benchmarks/results/*.json``.

``python -m benchmarks.readme`` prints them; ``--write`` replaces the text between
each ``<!-- benchmarks:NAME -->`` / ``<!-- /benchmarks:NAME -->`` pair in
``README.md``. ``tests/test_benchmarks.py`` fails when the README's text differs
from what the recorded results generate, so every performance number the README
gives is a recorded one (protocol: ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from benchmarks import _protocol

NAMES = {
    "pyhessian": "PyHessian",
    "eigenthings": "hessian-eigenthings",
    "curvlinops": "curvlinops",
    "matfree": "matfree",
}


def load(name: str) -> dict:
    return json.loads((_protocol.RESULTS / f"{name}.json").read_text())


def _failure(message: str) -> str:
    if "torch.linalg.eig" in message:  # PyHessian 0.1's density calls torch.eig
        return "fails (`torch.eig`, removed in torch 1.9)"
    return f"fails ({message[:60]})"


def _anchor_cell(section: dict, anchor: str, task: str) -> str:
    r = section["ratios"].get(anchor, {}).get(task)
    if r is None:
        failed = section["sides"].get(anchor, {}).get(task, {}).get("failed")
        return _failure(failed) if failed else "—"
    error = section["sides"][anchor][task]["error"]["median"]
    return f"{r['steady']:.1f}× ({r['range'][0]:.1f}–{r['range'][1]:.1f}), {error:.0e}"


def _row(label: str, section: dict, task: str) -> str:
    r = section["sides"]["jaxreg"][task]
    s = r["seconds"]
    cells = [
        label,
        f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})",
        f"{r['hvps']['median']:.0f}",
        f"{r['error']['median']:.0e}",
        f"{r['first_call_s']:.1f}",
        *(_anchor_cell(section, anchor, task) for anchor in NAMES),
    ]
    return "| " + " | ".join(cells) + " |"


LABELS = {
    "top1": "top-1",
    "top5": "top-5",
    "trace": "trace, Hutch++ 30 HVPs",
    "density": "density, SLQ 20 steps",
}


def _host(result: dict) -> str:
    host = result["host"]
    return (
        f"a {host['cores']}-core CPU host (a pure-Python loop of 10⁷ additions: "
        f"{host['loop_1e7_additions_s']:.2f} s)"
    )


def first_call_sentence(result: dict) -> str:
    """The first call in a new process (jaxreg compiling) as a multiple of PyHessian's."""
    mlp, resnet = result["mlp"]["ratios"]["pyhessian"], result["resnet"]["ratios"]["pyhessian"]
    sentence = (
        f"A first call in a new process, jaxreg's compile included, against PyHessian's first "
        f"call: MLP top-5 {mlp['top5']['first_call']:.1f}×, ResNet top-1 "
        f"{resnet['top1']['first_call']:.2f}×, top-5 {resnet['top5']['first_call']:.2f}×"
    )
    cache = result["resnet"].get("compilation_cache")
    if cache is None:
        return sentence + "."
    pyhessian = result["resnet"]["sides"]["pyhessian"]["top1"]["first_call_s"]
    return sentence + (
        f"; with jaxreg's compilation cache (`enable_compilation_cache()`) warm, ResNet "
        f"top-1's first call takes {cache['warm_first_call_s']:.1f} s "
        f"({pyhessian / cache['warm_first_call_s']:.2f}× PyHessian's "
        f"{pyhessian:.1f} s; {cache['cold_first_call_s']:.1f} s with the cache cold)."
    )


def hessian_paragraph(result: dict) -> str:
    """A table: jaxreg's time per task, each anchor as a multiple of it, from the JSON."""
    mlp, resnet = result["mlp"], result["resnet"]
    torch = mlp["sides"]["pyhessian"]["versions"]["torch"]
    header = (
        f"Measured on {_host(result)}, torch {torch}, {result['threads']} threads per side, "
        f"{result['starts']} random starts each. jaxreg: median seconds (range over starts), "
        f"Hessian-vector products, median relative error, and the first call in a new process "
        f"(compile included). Anchors: time as a multiple of jaxreg's (median, range; above 1 "
        f"jaxreg is faster), then their median error. PyHessian runs at its defaults; "
        f"hessian-eigenthings and matfree get the fewest Lanczos steps, curvlinops (ARPACK) "
        f"the largest `tol`, that reach jaxreg's 1e-4 on a warm-up start, chosen with the "
        f"reference.\n\n"
        f"| workload, task | jaxreg s | HVPs | error | first call s | "
        + " | ".join(NAMES.values())
        + " |\n|---|---:|---:|---:|---:|---|---|---|---|\n"
    )
    mlp_label = f"MLP ({mlp['workload']['parameters'] / 1000:.0f}k params), "
    rows = [_row(mlp_label + LABELS["top5"], mlp, "top5")]
    resnet_label = f"ResNet-20 + BatchNorm ({resnet['workload']['parameters'] / 1000:.0f}k), "
    rows += [_row(resnet_label + LABELS[task], resnet, task) for task in TASKS_RESNET]
    workload = resnet["workload"]
    footer = (
        f"\n\nThe MLP sees the {mlp['workload']['examples']:,} MNIST-1D training examples, "
        f"the ResNet {workload['examples']} digits upsampled to 32×32×3. The trace reference "
        f"(Hutch++, 300 HVPs) has a standard error of "
        f"{100 * workload['reference_trace_se'] / workload['reference_trace']:.0f}%, so trace "
        f"errors under that are noise; PyHessian's trace is its Hutchinson loop at its "
        f"defaults. " + first_call_sentence(result) + " "
        "Fastest median per row: "
        + "; ".join(
            [f"MLP top-5 {_fastest(mlp, 'top5')}"]
            + [
                f"ResNet {LABELS[task].split(',')[0]} {_fastest(resnet, task)}"
                for task in TASKS_RESNET
            ]
        )
        + "."
    )
    return header + "\n".join(rows) + footer


def _fastest(section: dict, task: str) -> str:
    medians = {
        name: side[task]["seconds"]["median"]
        for name, side in section["sides"].items()
        if "seconds" in side.get(task, {})
    }
    return {"jaxreg": "jaxreg", **NAMES}[min(medians, key=medians.get)]


TASKS_RESNET = ("top1", "top5", "trace", "density")


def cache_phrase(result: dict) -> str:
    """The compilation-cache row's numbers: top-5 on the MLP, first call in a new process."""
    cache = result["mlp"]["compilation_cache"]
    return (
        f"first call in a new process {cache['warm_first_call_s']:.1f} s with a warm cache, "
        f"{cache['cold_first_call_s']:.1f} s cold"
    )


def conv_phrase(result: dict) -> str:
    """How much slower ``lax.conv``'s weight gradient runs in a loop body on XLA:CPU."""
    conv = result["conv_in_loop"]
    return f"{conv['lax_in_loop_s'] / conv['lax_unrolled_s']:.0f}× slower in a loop body"


def tour_sentence(result: dict) -> str:
    """The tour's run times (each mode measured by ``python -m benchmarks.tour``)."""
    minutes = {mode: entry["wall_s"] / 60 for mode, entry in result.items()}
    loops = {mode: entry["host"]["loop_1e7_additions_s"] for mode, entry in result.items()}
    if len({f"{loop:.2f}" for loop in loops.values()}) == 1:
        host, each = f"{loops['default']:.2f} s", dict.fromkeys(loops, "")
    else:  # the host's speed moved between the runs: each time with its own loop time
        host = "timed beside each run"
        each = {mode: f" (loop {loop:.2f} s)" for mode, loop in loops.items()}
    return (
        f"Measured on a quiet 2-core CPU host (a pure-Python loop of 10⁷ additions: {host}): "
        f"the tour {minutes['default']:.1f} minutes{each['default']}, `--extended` "
        f"{minutes['extended']:.1f}{each['extended']}, `--quick` (short training, 2 seeds, a "
        f"smoke test of every default row and section) {minutes['quick']:.1f}{each['quick']}."
    )


_GALLERY_NAMES = {
    "nnx_cnn": "NNX tutorial CNN",
    "linen_resnet": "Linen ResNet",
    "equinox_cnn": "Equinox CNN",
    "transformer": "NNX Transformer",
    "gru": "NNX GRU",
}


def frameworks_paragraph(result: dict) -> str:
    """``fit`` on the gallery's stock models against each framework's hand-written loop."""
    models = result["models"]
    rows = ", ".join(
        f"{_GALLERY_NAMES[name]} {entry['host_call_ratio']:.2f}×" for name, entry in models.items()
    )
    scan = ", ".join(f"{entry['scan_ratio']:.1f}×" for entry in models.values())
    return (
        f'The time of `fit` driven from the host (`HostOptions(steps="host")`) as a '
        f"multiple of each framework's idiomatic hand-written loop (NNX `nnx.jit` + "
        f"`nnx.Optimizer`, Linen `TrainState`, Equinox `filter_jit`), 5 epochs, steady, median "
        f'of {result["repeats"]} interleaved rounds: {rows}. With `steps="scan"` (one '
        f"program, the form a vmapped sweep takes): {scan}; the NNX CNN and the Linen "
        f"ResNet are slow there (XLA:CPU gives a convolution inside a loop body a slow "
        f"layout; see `HostOptions` and, for NNX, `swap_stock_convs` below). One HVP costs "
        f"{result['transformer_hvp_over_gradient']:.2f}× one gradient on the Transformer."
    )


def stock_conv_paragraph(result: dict) -> str:
    """A stock NNX CNN in jaxreg's loops before and after ``swap_stock_convs``."""
    top1, fits, ratios = result["top1"], result["fit_scan"], result["ratios"]
    difference = result["top1_relative_difference"]
    agreement = "bit for bit" if difference == 0 else f"to {difference:.0e} relative"
    return (
        f"`jaxreg.nn.swap_stock_convs(module)` gives a stock NNX model's `nnx.Conv` layers "
        f"`patch_conv` (`python -m benchmarks.stock_conv`: the NNX tutorial CNN on the 8×8 "
        f"digits, one process, interleaved, median of {result['repeats']} rounds, on "
        f"{_host(result)}). Its top "
        f"Hessian eigenvalue (Lanczos, `tol=1e-4`) takes {top1['swapped']['steady']:.2f} s "
        f"steady instead of {top1['stock']['steady']:.2f} s ({ratios['top1_steady']:.1f}× "
        f"faster; {top1['swapped']['first_call']:.1f} s instead of "
        f"{top1['stock']['first_call']:.1f} s on the first call), the same value "
        f"{agreement}; {result['epochs']} epochs of "
        f'`fit` with `steps="scan"` take {fits["swapped"]["steady"]:.2f} s instead of '
        f"{fits['stock']['steady']:.2f} s, {ratios['swapped_scan_over_hand']:.2f}× the "
        f"hand-written NNX loop (the stock module {ratios['stock_scan_over_hand']:.1f}×)."
    )


def kfac_conv_paragraph(result: dict) -> str:
    """Convolution KFAC factors against curvlinops: the worst relative distance, the times."""
    ours, theirs = result["jaxreg_seconds"], result["curvlinops_seconds"]
    return (
        f"`python -m benchmarks.kfac_conv --torch-python VENV/bin/python` computes KFAC "
        f"factors of jaxreg's `CNN2D` (two convolutions found in its jaxpr, two dense layers; "
        f"13,706 parameters) on the 1,797 8×8 digits in float64 and curvlinops "
        f"{result['curvlinops']} (`KFACLinearOperator`, type-2, in its own process) on a "
        f"PyTorch port: every factor of every layer agrees to within "
        f"{result['worst_relative']:.0e} relative, for KFAC-expand and KFAC-reduce. All "
        f"factors take jaxreg {ours['expand']['steady_median']:.2f} s steady "
        f"({ours['expand']['first_call']:.1f} s on the first call, compile included) and "
        f"curvlinops {theirs['expand']:.2f} s (expand; recorded in "
        f"`benchmarks/results/kfac_conv.json`)."
    )


def blocks() -> dict[str, str]:
    return {
        "hessian": hessian_paragraph(load("hessian")),
        "tour": tour_sentence(load("tour")),
        "frameworks": frameworks_paragraph(load("frameworks")),
        "stock_conv": stock_conv_paragraph(load("stock_conv")),
        "kfac_conv": kfac_conv_paragraph(load("kfac_conv")),
    }


def write(readme: Path) -> None:
    text = readme.read_text()
    for name, block in blocks().items():
        pattern = re.compile(
            rf"(<!-- benchmarks:{name} -->\n).*?(\n<!-- /benchmarks:{name} -->)", re.S
        )
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- benchmarks:{name} --> block")
        text = pattern.sub(lambda m, b=block: m.group(1) + b + m.group(2), text)
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the blocks in README.md")
    options = parser.parse_args()
    if options.write:
        write(_protocol.ROOT / "README.md")
    for name, block in blocks().items():
        print(f"<!-- benchmarks:{name} -->\n{block}\n")


if __name__ == "__main__":
    main()
