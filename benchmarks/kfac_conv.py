"""KFAC for convolutions against curvlinops: the same CNN, weights and digits, two processes.

jaxreg's ``CNN2D`` (two 3×3 convolutions with 2×2 average pooling, a ReLU MLP
head: 13,706 parameters) at its initial weights on scikit-learn's 1,797 8×8
digits, float64 on both sides. jaxreg finds the convolutions in the model's
jaxpr (:func:`jaxreg.curvature.conv_kfac_factors`; on CPU its convolutions run
as im2col products) and the dense layers by name
(:func:`jaxreg.curvature.kfac_factors`); curvlinops 3's ``KFACLinearOperator``
(``fisher_type="type-2"``: the GGN; weight and bias separate) hooks the
PyTorch port's modules. Reported per layer and for ``kfac_approx`` expand and
reduce: the relative Frobenius distance of each factor (target ≤ 1e-8), and
each side's time to compute all factors (jaxreg: first call with compile and
the median of 5 steady calls; curvlinops: the median of 3).

curvlinops runs in its own process and venv (``--torch-python``:
``pip install torch einops curvlinops-for-pytorch``).

Run: ``python -m benchmarks.kfac_conv --torch-python /path/to/venv/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from benchmarks._machine import describe  # noqa: E402
from jaxreg.curvature import conv_kfac_factors, kfac_factors  # noqa: E402
from jaxreg.data import batches  # noqa: E402
from jaxreg.masks import leaf_path  # noqa: E402
from jaxreg.nn import CNN2D, from_nnx  # noqa: E402

BATCH = 256
#: jaxreg leaf path prefix -> the PyTorch port's module name.
LAYERS = {"convs/0": "convs_0", "convs/1": "convs_1", "hidden": "hidden", "head": "head"}


def workload():
    digits = load_digits()
    x = (digits.images / 16.0)[..., None].astype(np.float64)
    model = from_nnx(CNN2D(rngs=nnx.Rngs(0)))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
    return model.bind(), params, x, digits.target


def _weights(params) -> dict:
    flat = {leaf_path(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    return {f"{name}_{leaf}": flat[f"{path}/{leaf}"] for path, name in LAYERS.items()
            for leaf in ("kernel", "bias")}  # fmt: skip


def ours(apply, params, data) -> tuple[dict, dict]:
    out, seconds = {}, {}
    for approximation in ("expand", "reduce"):

        @jax.jit
        def run(p, approximation=approximation):
            convs = conv_kfac_factors(apply, p, data, approximation=approximation)
            return convs, kfac_factors(apply, p, data)

        start = time.perf_counter()
        convs, dense = jax.block_until_ready(run(params))
        first = time.perf_counter() - start
        steady = []
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(run(params))
            steady.append(time.perf_counter() - start)
        seconds[approximation] = {"first_call": first, "steady_median": float(np.median(steady))}
        layers = {f.layer.path: f for f in (*convs, *dense)}
        out[approximation] = {
            "convs_0": _torch_order(layers["convs/0"]), "convs_1": _torch_order(layers["convs/1"]),
            "hidden": _dense(layers["hidden"]), "head": _dense(layers["head"]),
        }  # fmt: skip
        out[approximation]["unrecovered"] = float(layers["hidden"].unrecovered)
    return out, seconds


def _torch_order(f) -> tuple[np.ndarray, np.ndarray]:
    """A in PyTorch's (in, kh, kw) patch order (jaxreg's is the Flax kernel's (kh, kw, in))."""
    a = np.asarray(f.inputs)
    d = a.shape[0]
    taps = 9
    order = np.arange(d).reshape(3, 3, d // taps).transpose(2, 0, 1).ravel()
    return a[np.ix_(order, order)], np.asarray(f.output_grads)


def _dense(f) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(f.inputs), np.asarray(f.output_grads)


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def compare(mine: dict, theirs: dict) -> dict:
    table = {}
    for approximation in ("expand", "reduce"):
        for name in LAYERS.values():
            a, g = mine[approximation][name]
            ref = theirs[approximation][name]
            table[f"{approximation}/{name}"] = {
                "inputs": relative(a, ref["inputs"]),
                "output_grads": relative(g, ref["output_grads"]),
            }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kfac_conv.json"))
    args = parser.parse_args()
    print(describe())
    apply, params, x, y = workload()
    data = batches(jnp.asarray(x), jnp.asarray(y), BATCH)
    mine, seconds = ours(apply, params, data)
    result = {"machine": describe(), "jaxreg_seconds": seconds}
    print(f"jaxreg: {json.dumps(seconds)}; hidden layer inputs unrecovered "
          f"{mine['expand']['unrecovered']:.2%}")  # fmt: skip
    if args.torch_python:
        with tempfile.TemporaryDirectory() as tmp:
            inputs, output = Path(tmp) / "inputs.npz", Path(tmp) / "torch.json"
            np.savez(inputs, x=x, y=y, batch=BATCH, **_weights(params))
            command = [args.torch_python, "-m", "benchmarks._kfac_conv_torch",
                       "--inputs", str(inputs), "--output", str(output),
                       "--threads", str(args.threads)]  # fmt: skip
            subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
            theirs = json.loads(output.read_text())
        logits = np.asarray(apply(params, jnp.asarray(x[:8])))
        result["port_logits_relative"] = relative(logits, theirs["logits"])
        result["agreement"] = compare(mine, theirs)
        result["curvlinops"] = theirs["curvlinops"]
        result["curvlinops_seconds"] = {
            k: float(np.median(theirs[f"{k}_seconds"])) for k in ("expand", "reduce")
        }
        worst = max(max(v.values()) for v in result["agreement"].values())
        result["worst_relative"] = worst
        print(f"port logits rel. diff {result['port_logits_relative']:.1e}")
        for name, row in result["agreement"].items():
            print(f"{name:>16}: A {row['inputs']:.1e}, G {row['output_grads']:.1e}")
        print(f"curvlinops {theirs['curvlinops']}: {json.dumps(result['curvlinops_seconds'])}")
    else:
        print("no --torch-python: the curvlinops side is skipped")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
