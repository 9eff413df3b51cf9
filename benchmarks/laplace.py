"""Laplace against laplace-torch: the same MLP, weights and data, each side in its own process.

An MLP 40-50-10 (ReLU, 2,560 parameters) trained on MNIST-1D's 4,000 training
examples (Adam, L2 penalty 1e-3, 30 epochs, float64), then:

1. **Agreement.** The log marginal likelihood at two prior precisions and the
   test NLL of the GLM predictive (probit) for a full, a diagonal, a KFAC
   (``"kron"``: laplace-torch's type-2 KFAC, weight and bias as separate blocks)
   and a last-layer (full) Laplace approximation, by jaxreg and by laplace-torch
   (its default CurvlinopsGGN backend), float64 on both sides: relative
   differences (target <= 1e-4).
2. **The evidence grid.** ``--members`` models (default 320 = 64 configurations
   × 5 seeds; here the trained weights perturbed per member, since the cost does
   not depend on the values): a diagonal Laplace fit and 100 Adam steps of
   prior-precision tuning each. jaxreg runs them as one
   :func:`jaxreg.sweeps.run` (vmapped, chunked), laplace-torch in a Python loop
   over its first ``--torch-members`` (default 16), its time scaled to the grid
   (a loop's time is linear in its length), both on the same number of threads.
   Reports both times (jaxreg's with and without compile) and their ratio
   (target >= 10×).

3. **KFAC factors against kfac-jax** (``--kfac-jax-python``: a venv with kfac-jax
   0.0.8 on jax 0.6, see ``benchmarks/_kfac_jax.py``): its exact-GGN
   (``"ggn_exact"``) factors of both dense layers against
   :func:`jaxreg.curvature.kfac_factors`. kfac-jax appends a 1 to each layer
   input (kernel and bias in one block), so its input factor is ``(in+1)²`` and
   its top-left ``in × in`` block is jaxreg's ``A``; its output factor is ``G``.

4. **Memory.** XLA's temporary memory per parameter of the diagonal, KFAC and
   full fits by hidden width (:func:`memory_scaling`).

laplace-torch runs in a second process with its own Python (``--torch-python``:
a venv with ``pip install torch laplace-torch``); without one the script says so
and reports jaxreg's side only.

Run: ``python -m benchmarks.laplace --torch-python /path/to/venv/bin/python``.
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
import optax  # noqa: E402

from benchmarks._machine import describe  # noqa: E402
from jaxreg import data, fit, laplace, masks, metrics, penalties, sweeps  # noqa: E402
from jaxreg.curvature import kfac_factors  # noqa: E402

PRECISIONS = (0.5, 5.0)


def mlp(params, x, **_):
    hidden = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return hidden @ params["out"]["kernel"] + params["out"]["bias"]


def _init(key):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {"kernel": jax.random.normal(k1, (40, 50)) / np.sqrt(40), "bias": jnp.zeros(50)},
        "out": {"kernel": jax.random.normal(k2, (50, 10)) / np.sqrt(50), "bias": jnp.zeros(10)},
    }


def _train(x, y):
    result = fit(
        mlp,
        _init(jax.random.key(0)),
        optax.adam(1e-3),
        (x, y),
        key=jax.random.key(1),
        num_epochs=30,
        batch_size=100,
        penalty=penalties.l2,
        penalty_strength=1e-3,
    )
    return result.params


def agreement(params, train, x_test, y_test) -> dict:
    out = {}
    for name, structure, wrt in (
        ("full", "full", None),
        ("diag", "diag", None),
        ("kron", "kron", None),
        ("last_layer", "full", masks.by_path(r"^out/")),
    ):
        la = laplace.fit_laplace(mlp, params, train, structure=structure, wrt=wrt)
        values = [float(laplace.log_marginal_likelihood(la, p)) for p in PRECISIONS]
        pred = laplace.glm_predictive(la, mlp, x_test, prior_precision=PRECISIONS[-1])
        out[name] = {
            "log_marginal_likelihood": values,
            "test_nll_glm_probit": float(metrics.nll(pred.mean, y_test)),
        }
    return out


def grid_members(params, members: int):
    def perturb(key):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        noisy = [
            leaf * (1 + 0.05 * jax.random.normal(k, leaf.shape))
            for leaf, k in zip(leaves, keys, strict=True)
        ]
        return jax.tree.unflatten(treedef, noisy)

    return jax.vmap(perturb)(jax.random.split(jax.random.key(2), members))


def grid_time(stack, train, steps: int, chunk: int) -> dict:
    members = jax.tree.leaves(stack)[0].shape[0]

    def train_fn(config, key):
        del key
        p = jax.tree.map(lambda a: a[config["member"]], stack)
        la = laplace.fit_laplace(mlp, p, train, structure="diag")
        return {"tuned": laplace.optimize_prior_precision(la, num_steps=steps)}

    configs = sweeps.grid(member=np.arange(members))
    start = time.perf_counter()
    first = sweeps.run(train_fn, configs, key=jax.random.key(0), chunk_size=chunk, progress=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    sweeps.run(train_fn, configs, key=jax.random.key(0), chunk_size=chunk, progress=False)
    steady = time.perf_counter() - start
    return {
        "seconds_first_call": cold,
        "seconds_steady": steady,
        "members": members,
        "tuned": np.asarray(first.metrics["tuned"]).tolist(),
    }


def kfac_agreement(params, train, theirs: dict) -> dict:
    """Relative Frobenius differences of jaxreg's KFAC factors from kfac-jax's, per layer."""
    ours = kfac_factors(mlp, params, train)
    out = {"kfac_jax": theirs["kfac_jax"], "jax": theirs["jax"], "layers": {}}
    for factors, block in zip(ours, theirs["blocks"], strict=True):
        inputs, output_grads = (np.asarray(f) for f in block["factors"])
        size = factors.inputs.shape[0]
        a, g = np.asarray(factors.inputs), np.asarray(factors.output_grads)
        out["layers"][factors.layer.path] = {
            "inputs": float(np.linalg.norm(inputs[:size, :size] - a) / np.linalg.norm(a)),
            "output_grads": float(np.linalg.norm(output_grads - g) / np.linalg.norm(g)),
            "unrecovered": float(factors.unrecovered),
        }
    return out


def relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def memory_scaling(widths=(50, 100, 200, 400), full_up_to: int = 200) -> list[dict]:
    """XLA's temporary memory per parameter of a Laplace fit and its evidence, by width.

    Compile-time ``memory_analysis`` of the jitted ``fit_laplace`` + evidence on the
    benchmark's data shapes (4,000 × 40, batches of 500): constant per parameter
    for ``"diag"`` (per-example Jacobians, ``batch × C`` numbers per parameter) and
    ``"kron"`` (per-example gradients, ``batch`` per parameter), i.e. O(P); ``"full"``
    grows with ``P`` (the ``P × P`` matrix).
    """
    x = jnp.zeros((4000, 40))
    train = data.batches(x, jnp.zeros(4000, jnp.int32), 500)
    rows = []
    for width in widths:
        params = {
            "hidden": {"kernel": jnp.ones((40, width)), "bias": jnp.ones(width)},
            "out": {"kernel": jnp.ones((width, 10)), "bias": jnp.ones(10)},
        }
        size = sum(leaf.size for leaf in jax.tree.leaves(params))
        row = {"width": width, "parameters": size}
        for structure in ("diag", "kron", "full"):
            if structure == "full" and width > full_up_to:
                continue

            def evidence(p, structure=structure):
                la = laplace.fit_laplace(mlp, p, train, structure=structure)
                return laplace.log_marginal_likelihood(la, 1.0)

            analysis = jax.jit(evidence).lower(params).compile().memory_analysis()
            row[f"{structure}_temp_bytes_per_parameter"] = analysis.temp_size_in_bytes / size
        rows.append(row)
        print(f"memory per parameter, width {width} (P = {size}): {row}")
    return rows


def _workload(path: Path, x, y, x_test, y_test, params, stack) -> None:
    """The ``.npz`` both other sides read: data, the trained MLP, the grid's members."""
    flat = {"x": x, "y": y, "x_test": x_test, "y_test": y_test,
            "precisions": np.asarray(PRECISIONS)}  # fmt: skip
    for prefix, tree in (("", params), ("grid_", stack)):
        for short, layer, leaf in (("hk", "hidden", "kernel"), ("hb", "hidden", "bias"),
                                   ("ok", "out", "kernel"), ("ob", "out", "bias")):  # fmt: skip
            flat[prefix + short] = tree[layer][leaf]
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def _side(python: str, module: str, inputs: Path, output: Path, *extra: str) -> dict:
    """Run one other side in its own process and read what it wrote."""
    command = [python, "-m", module, "--inputs", str(inputs), "--output", str(output), *extra]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(output.read_text())


def _report_torch(ours: dict, theirs: dict, timing: dict, members: int) -> float:
    for name in ours:
        lml = relative(
            ours[name]["log_marginal_likelihood"],
            theirs["agreement"][name]["log_marginal_likelihood"],
        )
        nll = relative(
            ours[name]["test_nll_glm_probit"], theirs["agreement"][name]["test_nll_glm_probit"]
        )
        print(f"{name:>10}: log ML rel. diff {lml:.1e}, GLM test NLL rel. diff {nll:.1e}")
    grid = theirs["grid"]
    scaled = grid["seconds"] * members / grid["members"]
    print(
        f"grid of {members}: laplace-torch {scaled:.1f} s ({grid['seconds']:.1f} s for "
        f"its first {grid['members']}, scaled), jaxreg {timing['seconds_first_call']:.1f} s "
        f"first call / {timing['seconds_steady']:.1f} s steady: "
        f"{scaled / timing['seconds_first_call']:.1f}x / "
        f"{scaled / timing['seconds_steady']:.1f}x"
    )
    tuned = relative(timing["tuned"][: grid["members"]], grid["tuned"])
    print(f"tuned precisions of those members, rel. diff {tuned:.1e}")
    return scaled


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--kfac-jax-python", default=None)
    parser.add_argument("--members", type=int, default=320)
    parser.add_argument(
        "--torch-members",
        type=int,
        default=16,
        help="members laplace-torch runs (its time is scaled to --members: it is a loop)",
    )
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/laplace.json"))
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    print(describe())
    dataset = data.mnist1d()
    x, y = jnp.asarray(dataset.x_train, jnp.float64), jnp.asarray(dataset.y_train)
    x_test, y_test = jnp.asarray(dataset.x_test, jnp.float64), jnp.asarray(dataset.y_test)
    params = _train(x, y)
    train = data.batches(x, y, 500)
    ours = agreement(params, train, x_test, y_test)
    stack = grid_members(params, args.members)
    timing = grid_time(stack, train, args.steps, args.chunk)
    result = {"machine": describe(), "jaxreg": ours, "jaxreg_grid": timing,
              "memory": memory_scaling()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npz"
        _workload(inputs, x, y, x_test, y_test, params, stack)
        if args.torch_python:
            theirs = _side(args.torch_python, "benchmarks._laplace_torch", inputs,
                           Path(tmp) / "torch.json", "--threads", str(args.threads),
                           "--grid-members", str(args.torch_members), "--steps",
                           str(args.steps))  # fmt: skip
            result["laplace_torch"] = theirs
            scaled = _report_torch(ours, theirs, timing, args.members)
            result["laplace_torch_grid_seconds_scaled"] = scaled
        else:
            print("no --torch-python: laplace-torch side skipped")
            print(json.dumps(ours, indent=2))
        if args.kfac_jax_python:
            theirs = _side(args.kfac_jax_python, "benchmarks._kfac_jax", inputs,
                           Path(tmp) / "kfac_jax.json")  # fmt: skip
            result["kfac_jax"] = kfac_agreement(params, train, theirs)
            print(f"KFAC factors vs kfac-jax {theirs['kfac_jax']}: {result['kfac_jax']['layers']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
