"""The JAX sides of ``benchmarks/hessian.py``: the workloads, jaxreg, and matfree.

``python -m benchmarks._hessian_jax prepare|jaxreg|matfree --workload FILE ...``;
each side runs in its own process (the protocol in ``benchmarks/README.md``) and
prints its result as JSON on its last line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from benchmarks import _protocol
from jaxreg import compilation, data, fit, sharpness
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, ResNet20, from_nnx, functional, patch_conv

WARMUP_START, TOL = _protocol.WARMUP_START, _protocol.TOL
TRACE_HVPS, DENSITY_STEPS = _protocol.TRACE_HVPS, _protocol.DENSITY_STEPS
relative_error = _protocol.relative_error


def _path(entries) -> str:
    names = []
    for entry in entries:
        for attribute in ("key", "idx", "name"):
            if hasattr(entry, attribute):
                names.append(str(getattr(entry, attribute)))
                break
    return "/".join(names)


def flatten(tree, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}/{_path(path)}": np.asarray(leaf) for path, leaf in leaves}


def unflatten(template, stored, prefix: str):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(stored[f"{prefix}/{_path(path)}"]) for path, _ in leaves]
    )


def _digits_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:count].astype(np.float32) / 16.0
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)  # 8×8 -> 32×32
    images = np.repeat(images[..., None], 3, axis=3)  # 3 channels
    images = (images - images.mean()) / images.std()
    return images, digits.target[:count].astype(np.int32)


def build(kind: str):
    """``(apply, params, state)`` templates of a workload's model (untrained)."""
    if kind == "mlp":
        apply, params = functional(MLP((40, 512, 512, 10), rngs=nnx.Rngs(0)))
        return apply, params, None
    model = from_nnx(ResNet20(rngs=nnx.Rngs(0)))
    return model, model.params, model.state


def _train(kind: str, examples: int):
    model, params, _ = build(kind)
    if kind == "mlp":
        dataset = data.mnist1d()
        x, y = dataset.x_train, dataset.y_train
        options = dict(optimizer=optax.adam(1e-3), num_epochs=10, batch_size=100)
    else:
        x, y = _digits_images(examples)
        options = dict(optimizer=optax.sgd(0.05, momentum=0.9), num_epochs=2, batch_size=64)
    optimizer = options.pop("optimizer")
    result = fit(model, params, optimizer, (x, y), key=jax.random.key(0), progress=False, **options)
    return x, y, result.params, result.model_state


def load(path: Path):
    """``(loss_fn, params, batched)`` of a prepared workload, and the stored arrays."""
    stored = dict(np.load(path))
    kind = str(stored["kind"])
    model, template, state_template = build(kind)
    params = unflatten(template, stored, "p")
    # The ResNet is analysed in eval mode, with its trained BatchNorm statistics.
    apply = model if kind == "mlp" else model.bind(unflatten(state_template, stored, "s"))
    batched = {"x": jnp.asarray(stored["x"]), "y": jnp.asarray(stored["y"])}
    return classification_loss(apply), params, batched, stored


def _reference(loss_fn, params, batched, float64: bool) -> tuple[np.ndarray, float, float]:
    """Top-5 eigenvalues by Lanczos to 1e-10 and the trace by Hutch++ with 300 HVPs.

    In float64 for the MLP; the ResNet's float64 convolutions take 13 minutes on
    2 cores, so its reference is float32 Lanczos to 1e-7 (float32 rounding moves
    these eigenvalues by ~1e-6 relative, 100× under the 1e-4 target).
    """
    with jax.enable_x64(float64):
        tol = 1e-10 if float64 else 1e-7
        dtype = jnp.float64 if float64 else jnp.float32
        cast = lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
        p64, b64 = jax.tree.map(cast, params), jax.tree.map(cast, batched)
        top = jax.jit(
            lambda p: sharpness.top_eigenvalues(
                loss_fn, p, b64, key=jax.random.key(9), k=5, tol=tol, num_iters=150
            )[0]
        )(p64)
        trace = jax.jit(
            lambda p: sharpness.hessian_trace(
                loss_fn, p, b64, key=jax.random.key(11), num_samples=300, probe_batch=10
            )
        )(p64)
    return np.asarray(top), float(trace[0]), float(trace[1])


def prepare(kind: str, path: Path, examples: int) -> dict:
    """Train the workload's model, store weights and batches, and compute the references."""
    model = build(kind)[0]
    x, y, params, state = _train(kind, examples)
    batch_size = 500 if kind == "mlp" else 64
    batched = data.batches(x, y, batch_size)
    if "weights" in batched:  # the protocol's workloads divide evenly: no padding
        assert bool(jnp.all(batched["weights"] == 1))
    batched = {"x": batched["x"], "y": batched["y"]}
    arrays = {
        "kind": np.asarray(kind),
        "x": np.asarray(batched["x"]),
        "y": np.asarray(batched["y"]),
    }
    arrays.update(flatten(params, "p"))
    if state is not None:
        arrays.update(flatten(state, "s"))
    np.savez(path, **arrays)
    loss_fn, params, batched, _ = load(path)
    top, trace, trace_se = _reference(loss_fn, params, batched, float64=kind == "mlp")
    apply = model if kind == "mlp" else model.bind(state)
    np.savez(
        path,
        **arrays,
        reference_top=top,
        reference_trace=np.asarray([trace, trace_se]),
        logits=np.asarray(apply(params, batched["x"][0])),  # the anchors check their port on it
    )
    return {
        "parameters": int(ravel_pytree(params)[0].size),
        "examples": int(np.prod(arrays["y"].shape)),
        "batches": int(arrays["y"].shape[0]),
        "reference_top5": top.tolist(),
        "reference_trace": trace,
        "reference_trace_se": trace_se,
    }


def _clock(fn: Callable, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def measure(task_fn: Callable, score: Callable, starts: int) -> dict:
    """The protocol's starts (:func:`_protocol.measure_starts`); ``task_fn(key)`` runs the
    method from one random start, ``score(out)`` returns ``(hvps, error)``."""
    return _protocol.measure_starts(
        lambda seed: score(jax.block_until_ready(task_fn(jax.random.key(seed)))), starts
    )


def jaxreg_side(path: Path, tasks: list[str], starts: int) -> dict:
    loss_fn, params, batched, stored = load(path)
    reference, trace_reference = stored["reference_top"], float(stored["reference_trace"][0])
    out = {}
    for task in tasks:
        if task.startswith("top"):
            k = int(task[3:])
            run = jax.jit(
                lambda key, k=k: sharpness.top_eigenvalues(
                    loss_fn, params, batched, key=key, k=k, tol=TOL
                )
            )
            score = lambda o, k=k: (int(o[2]["num_hvps"]), relative_error(o[0], reference[:k]))  # noqa: E731
        elif task == "trace":
            run = jax.jit(
                lambda key: sharpness.hessian_trace(
                    loss_fn, params, batched, key=key, num_samples=TRACE_HVPS, probe_batch=1
                )
            )
            score = lambda o: (TRACE_HVPS, relative_error(o[0], trace_reference))  # noqa: E731
        else:  # density: SLQ; its largest node against λmax
            run = jax.jit(
                lambda key: (
                    sharpness.spectral_density(
                        loss_fn, params, batched, key=key, num_iters=DENSITY_STEPS, num_runs=1
                    ).nodes
                )
            )
            score = lambda o: (DENSITY_STEPS, relative_error(np.max(o), reference[0]))  # noqa: E731
        out[task] = measure(run, score, starts)
        print(f"jaxreg {task}: {_summary(out[task])}", flush=True)
    return out


def _summary(result: dict) -> str:
    s = result["seconds"]
    return (
        f"{s['median']:.2f} s [{s['min']:.2f}, {s['max']:.2f}], first call "
        f"{result['first_call_s']:.2f} s, {result['hvps']['median']:.0f} HVPs, "
        f"error {result['error']['max']:.1e}"
    )


def matfree_side(path: Path, tasks: list[str], starts: int) -> dict:
    """matfree's Lanczos (``tridiag_sym`` + ``eigh_partial``) on jaxreg's HVP.

    matfree runs a fixed number of steps: it gets the fewest that reach ``TOL`` on
    the warm-up start, chosen with the reference (an advantage no user has).
    """
    from matfree import decomp, eig

    loss_fn, params, batched, stored = load(path)
    reference = stored["reference_top"]
    flat, unravel = ravel_pytree(params)
    hvp = sharpness.hvp(loss_fn, params, batched)
    flat_hvp = lambda v: ravel_pytree(hvp(unravel(v)))[0]  # noqa: E731
    out = {}
    for task in [t for t in tasks if t.startswith("top")]:
        k = int(task[3:])

        def solver(steps, k=k):
            run = eig.eigh_partial(decomp.tridiag_sym(steps, reortho="full"))
            start = lambda key: jax.random.normal(key, flat.shape)  # noqa: E731
            return jax.jit(lambda key: run(flat_hvp, start(key))[0][-k:][::-1])

        steps = next(
            s
            for s in range(k + 1, 80, 2)
            if relative_error(solver(s)(jax.random.key(WARMUP_START)), reference[:k]) <= TOL
        )
        out[task] = measure(
            solver(steps), lambda o, k=k, s=steps: (s, relative_error(o, reference[:k])), starts
        )
        out[task]["steps"] = steps
        print(f"matfree {task} at {steps} steps: {_summary(out[task])}", flush=True)
    return out


def _timed(fn: Callable, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    return float(np.median([_clock(fn, *args)[0] for _ in range(repeats)]))


def extras_side(path: Path) -> dict:
    """HVP / gradient time, and thick-restart Lanczos (bounded basis) against the full basis."""
    loss_fn, params, batched, stored = load(path)
    flat, unravel = ravel_pytree(params)
    grad_fn = jax.jit(jax.grad(lambda p: sharpness.dataset_loss(loss_fn, p, batched)))
    hvp_fn = jax.jit(lambda p, v: sharpness.hvp(loss_fn, p, batched)(v))
    vector = unravel(jax.random.normal(jax.random.key(1), flat.shape))
    t_grad, t_hvp = _timed(grad_fn, params), _timed(hvp_fn, params, vector)

    def top5(p, **options):
        return sharpness.top_eigenvalues(loss_fn, p, batched, key=jax.random.key(2), k=5, **options)

    def temporary_bytes(fn) -> int:
        analysis = jax.jit(fn).lower(params).compile().memory_analysis()
        return int(getattr(analysis, "temp_size_in_bytes", -1)) if analysis is not None else -1

    bounded = lambda p: top5(p, max_basis=14)  # noqa: E731
    values, _, info = jax.jit(bounded)(params)
    return {
        "gradient_s": t_grad,
        "hvp_s": t_hvp,
        "hvp_over_gradient": t_hvp / t_grad,
        "thick_restart": {
            "max_basis": 14,
            "hvps": int(info["num_hvps"]),
            "seconds": _timed(jax.jit(bounded), params, repeats=3),
            "error": relative_error(values, stored["reference_top"]),
            "temporary_mib": temporary_bytes(bounded) / 2**20,
            "full_basis_temporary_mib": temporary_bytes(top5) / 2**20,
            "vector_mib": flat.size * 4 / 2**20,
        },
    }


def cached_side(path: Path, cache: Path, k: int) -> dict:
    """The first call of top-``k`` in a new process with the persistent compilation cache on."""
    compilation.enable_compilation_cache(cache)
    loss_fn, params, batched, _ = load(path)
    run = jax.jit(
        lambda key: sharpness.top_eigenvalues(loss_fn, params, batched, key=key, k=k, tol=TOL)
    )
    return {"first_call_s": _clock(run, jax.random.key(WARMUP_START))[0]}


def conv_side() -> dict:
    """Two 3x3 convolution weight gradients, unrolled and inside a ``fori_loop``.

    XLA:CPU leaves a convolution's weight gradient in a loop body in its
    non-canonical form and runs it on a slow path (jax-ml/jax#12868 is the same
    family); every Lanczos step and every scan over batches is a loop body.
    jaxreg's models use :func:`jaxreg.nn.patch_conv` (im2col) instead.
    """
    kernel, inputs = jnp.ones((3, 3, 16, 16)), jnp.ones((64, 32, 32, 16))

    def weight_grad(conv):
        def grad(x, w):
            out = lambda w: conv(  # noqa: E731
                x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return jax.grad(lambda w: jnp.sum(out(w) ** 2))(w)

        return grad

    def unrolled(conv):
        return jax.jit(lambda x, w: weight_grad(conv)(x, w) + weight_grad(conv)(2 * x, w))

    def in_loop(conv):
        body = lambda i, total, x, w: total + weight_grad(conv)(x * (i + 1), w)  # noqa: E731
        return jax.jit(
            lambda x, w: jax.lax.fori_loop(0, 2, lambda i, t: body(i, t, x, w), jnp.zeros_like(w))
        )

    lax_conv = jax.lax.conv_general_dilated
    return {
        "lax_unrolled_s": _timed(unrolled(lax_conv), inputs, kernel),
        "lax_in_loop_s": _timed(in_loop(lax_conv), inputs, kernel),
        "patch_conv_in_loop_s": _timed(in_loop(patch_conv), inputs, kernel),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "side", choices=("prepare", "jaxreg", "matfree", "extras", "cached", "conv")
    )
    parser.add_argument("--workload", type=Path)
    parser.add_argument("--kind", choices=("mlp", "resnet"), default="mlp")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--tasks", default="top5")
    parser.add_argument("--starts", type=int, default=_protocol.MIN_STARTS)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if args.side == "prepare":
        result = prepare(args.kind, args.workload, args.examples)
    elif args.side == "jaxreg":
        result = jaxreg_side(args.workload, tasks, args.starts)
    elif args.side == "matfree":
        result = matfree_side(args.workload, tasks, args.starts)
    elif args.side == "extras":
        result = extras_side(args.workload)
    elif args.side == "cached":
        result = cached_side(args.workload, args.cache, int(tasks[0][3:]))
    else:
        result = conv_side()
    result["versions"] = {"jax": jax.__version__, "threads": _protocol.thread_count()}
    _protocol.emit(result)


if __name__ == "__main__":
    main()
