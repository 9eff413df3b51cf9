"""Hessian benchmarks against PyHessian (torch) and matfree (JAX), in one process run.

A. MLP 40-512-512-10 (~290k parameters) after 10 epochs of Adam on MNIST-1D;
   the 4,000 training examples in 8 batches of 500.
   1. HVP time / gradient time (target <= 2.5).
   2. Top-5 eigenvalues: jaxreg's adaptive Lanczos (default ``tol=1e-4``) vs
      PyHessian (power iteration with deflation, its defaults) and vs matfree
      (``tridiag_sym`` + ``eigh_partial``, same HVP) at the fewest Lanczos steps
      that reach relative error <= 1e-4 — matfree cannot stop on its own, so
      it gets that step count for free. Errors against a float64 reference.
   3. Thick-restart Lanczos (``max_basis=2k+4``) vs the full basis: HVPs,
      time, error and the compiled program's peak temporary memory.
B. ResNet-20 with BatchNorm (eval mode, as PyHessian uses it) on CIFAR-10-shaped
   inputs: scikit-learn's digits upsampled to 32×32×3 (no download), trained
   for 2 epochs; the same weights ported to a PyTorch ResNet-20. Top-1, top-5,
   trace and spectral density: time, HVPs and error against a converged
   reference (Lanczos to 1e-7; Hutch++ with 90 HVPs for the trace).
   It first times a convolution's weight gradient inside a loop on XLA:CPU,
   which ``jaxreg.nn.patch_conv`` (used by jaxreg's models) avoids.

PyHessian and torch are optional (``pip install torch pyhessian matfree``);
sections that need them are skipped with a message when they are missing.

Run: ``python -m benchmarks.hessian [--examples 64] [--skip-resnet]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from benchmarks._machine import describe
from jaxreg import data, fit, sharpness
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, ResNet20, from_nnx, functional, patch_conv


def timed(fn: Callable, *args, repeats: int = 3) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def first_call(fn: Callable, *args) -> tuple[float, object]:
    """Wall time of the first call (tracing and compilation included) and its output."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def peak_bytes(fn: Callable, *args) -> int:
    """Temporary memory XLA allocates for the compiled ``fn`` (arguments and outputs excluded)."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(getattr(analysis, "temp_size_in_bytes", -1)) if analysis is not None else -1


def relative_error(values, reference) -> float:
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def _import_torch():
    try:
        import torch
        from pyhessian import hessian as pyhessian_hessian
    except ImportError:
        return None, None
    torch.manual_seed(0)  # PyHessian's random start vectors: reproducible iteration counts
    return torch, pyhessian_hessian


def _pyhessian_top(computer, top_n: int) -> tuple[float, float, list[float]]:
    """PyHessian's ``eigenvalues(top_n=...)``: first-call time, second-call time, values."""
    start = time.perf_counter()
    computer.eigenvalues(top_n=top_n)
    first = time.perf_counter() - start
    start = time.perf_counter()
    values, _ = computer.eigenvalues(top_n=top_n)
    # Deflated power iteration finds the pairs in no guaranteed order: compare them sorted.
    return first, time.perf_counter() - start, sorted(values, reverse=True)


def mlp_section(torch, pyhessian_hessian) -> None:
    x_train, y_train, _, _ = data.mnist1d()
    apply, params = functional(MLP((40, 512, 512, 10), rngs=nnx.Rngs(0)))
    params = fit(
        apply,
        params,
        optax.adam(1e-3),
        (x_train, y_train),
        key=jax.random.key(0),
        num_epochs=10,
        batch_size=100,
        progress=False,
    ).params
    batched = data.batches(x_train, y_train, 500)
    loss_fn = classification_loss(apply)
    flat, unravel = ravel_pytree(params)
    print(f"A. MLP: {flat.size:,} parameters, {len(y_train)} examples in 8 batches of 500")

    grad_fn = jax.jit(jax.grad(lambda p: sharpness.dataset_loss(loss_fn, p, batched)))
    vector = unravel(jax.random.normal(jax.random.key(1), flat.shape))
    hvp_fn = jax.jit(lambda p, v: sharpness.hvp(loss_fn, p, batched)(v))
    t_grad, t_hvp = timed(grad_fn, params, repeats=5), timed(hvp_fn, params, vector, repeats=5)
    print(
        f"  1. gradient {1e3 * t_grad:.1f} ms, HVP {1e3 * t_hvp:.1f} ms: "
        f"ratio {t_hvp / t_grad:.2f} (target <= 2.5)"
    )

    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        batched64 = jax.tree.map(
            lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            batched,
        )
        reference = np.asarray(
            jax.jit(
                lambda p: sharpness.top_eigenvalues(
                    loss_fn, p, batched64, key=jax.random.key(9), k=5, tol=1e-10, num_iters=150
                )[0]
            )(params64)
        )
    print(f"  reference top-5 (float64 Lanczos): {np.round(reference, 5).tolist()}")

    def ours(p, **options):
        return sharpness.top_eigenvalues(loss_fn, p, batched, key=jax.random.key(2), k=5, **options)

    adaptive = jax.jit(ours)
    t_first, (values, _, info) = first_call(adaptive, params)
    t_ours = timed(adaptive, params)
    err_ours = relative_error(values, reference)
    hvps_ours = int(info["num_hvps"])
    print(
        f"  2. top-5 jaxreg (adaptive, tol 1e-4): {hvps_ours} HVPs, {t_ours:.2f} s steady, "
        f"{t_first:.2f} s with compile, max rel. error {err_ours:.1e}"
    )

    try:
        from matfree import decomp, eig
    except ImportError:
        print("     matfree skipped: not installed (pip install matfree)")
    else:
        flat_hvp = lambda v: ravel_pytree(sharpness.hvp(loss_fn, params, batched)(unravel(v)))[0]  # noqa: E731
        start_vector = jax.random.normal(jax.random.key(2), flat.shape)

        def matfree_top5(steps):
            solver = eig.eigh_partial(decomp.tridiag_sym(steps, reortho="full"))
            return jax.jit(lambda v: solver(flat_hvp, v)[0][-5:][::-1])

        for steps in range(6, 61, 2):
            matfree_values = matfree_top5(steps)(start_vector)
            if relative_error(matfree_values, reference) <= 1e-4:
                break
        t_matfree = timed(matfree_top5(steps), start_vector)
        print(
            f"     matfree at {steps} steps (fewest with error <= 1e-4, chosen with the "
            f"reference): {t_matfree:.2f} s steady, error "
            f"{relative_error(matfree_values, reference):.1e}; "
            f"jaxreg/matfree speed {t_matfree / t_ours:.2f}x (target >= 1.0)"
        )

    if torch is None:
        print("     PyHessian skipped: torch and pyhessian are not installed")
    else:
        model = torch.nn.Sequential(
            torch.nn.Linear(40, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 10),
        )
        with torch.no_grad():
            for module, index in zip(model[::2], range(3), strict=True):
                layer = params["layers"][index]
                module.weight.copy_(torch.from_numpy(np.asarray(layer["kernel"]).T.copy()))
                module.bias.copy_(torch.from_numpy(np.asarray(layer["bias"]).copy()))
        loader = [
            (
                torch.from_numpy(np.asarray(x_train[i : i + 500])),
                torch.from_numpy(np.asarray(y_train[i : i + 500], np.int64)),
            )
            for i in range(0, 4000, 500)
        ]
        computer = pyhessian_hessian(
            model, torch.nn.CrossEntropyLoss(), dataloader=loader, cuda=False
        )
        t_torch_first, t_torch, torch_values = _pyhessian_top(computer, 5)
        err_torch = relative_error(torch_values, reference)
        print(
            f"     PyHessian top-5: {t_torch:.2f} s (first call {t_torch_first:.2f} s), "
            f"max rel. error {err_torch:.1e}; jaxreg speed-up {t_torch / t_ours:.1f}x steady "
            f"(target >= 5), {t_torch_first / t_first:.1f}x including compile (target >= 3)"
        )

    bounded = jax.jit(lambda p: ours(p, max_basis=14))
    _, (b_values, _, b_info) = first_call(bounded, params)
    t_bounded = timed(bounded, params)
    full_bytes = peak_bytes(ours, params)
    bounded_bytes = peak_bytes(lambda p: ours(p, max_basis=14), params)
    print(
        f"  3. top-5 thick restart (max_basis 14): {int(b_info['num_hvps'])} HVPs, "
        f"{t_bounded:.2f} s steady, max rel. error {relative_error(b_values, reference):.1e}; "
        f"peak temporary memory {bounded_bytes / 2**20:.0f} MiB vs {full_bytes / 2**20:.0f} MiB "
        f"with the full basis (cap 50 vectors of {flat.size * 4 / 2**20:.1f} MiB)"
    )


def _digits_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:count].astype(np.float32) / 16.0
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)  # 8×8 -> 32×32
    images = np.repeat(images[..., None], 3, axis=3)  # 3 channels
    images = (images - images.mean()) / images.std()
    return images, digits.target[:count].astype(np.int32)


def _torch_resnet20(torch, params, state):
    """A PyTorch ResNet-20 with jaxreg's ResNet20 layout and these weights (eval mode)."""
    nn = torch.nn

    def conv(kernel, stride, padding):
        kernel = np.asarray(kernel)  # (h, w, in, out) -> (out, in, h, w)
        layer = nn.Conv2d(
            kernel.shape[2], kernel.shape[3], kernel.shape[0], stride, padding, bias=False
        )
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        return layer

    def batch_norm(p, s):
        layer = nn.BatchNorm2d(np.asarray(p["scale"]).size, eps=1e-5, momentum=0.1)
        with torch.no_grad():
            for name, value in (("weight", p["scale"]), ("bias", p["bias"])):
                getattr(layer, name).copy_(torch.from_numpy(np.asarray(value).copy()))
            layer.running_mean.copy_(torch.from_numpy(np.asarray(s["mean"]).copy()))
            layer.running_var.copy_(torch.from_numpy(np.asarray(s["var"]).copy()))
        return layer

    class Block(nn.Module):
        def __init__(self, p, s):
            super().__init__()
            stride = 2 if "projection" in p and p["projection"] is not None else 1
            self.conv1, self.bn1 = (
                conv(p["conv1"]["kernel"], stride, 1),
                batch_norm(p["bn1"], s["bn1"]),
            )
            self.conv2, self.bn2 = conv(p["conv2"]["kernel"], 1, 1), batch_norm(p["bn2"], s["bn2"])
            self.shortcut = nn.Identity()
            if stride == 2:
                self.shortcut = nn.Sequential(
                    conv(p["projection"]["kernel"], 2, 0),
                    batch_norm(p["projection_bn"], s["projection_bn"]),
                )

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(params["stem"]["kernel"], 1, 1)
            self.stem_bn = batch_norm(params["stem_bn"], state["stem_bn"])
            self.blocks = nn.Sequential(
                *[Block(params["blocks"][i], state["blocks"][i]) for i in range(9)]
            )
            head = params["head"]
            self.head = nn.Linear(*np.asarray(head["kernel"]).shape)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(np.asarray(head["kernel"]).T.copy()))
                self.head.bias.copy_(torch.from_numpy(np.asarray(head["bias"]).copy()))

        def forward(self, x):
            h = torch.relu(self.stem_bn(self.stem(x)))
            return self.head(self.blocks(h).mean(dim=(2, 3)))

    return Net().eval()


def resnet_section(torch, pyhessian_hessian, examples: int, batch_size: int) -> None:
    images, labels = _digits_images(examples)
    model = from_nnx(ResNet20(rngs=nnx.Rngs(0)))
    trained = fit(
        model,
        model.params,
        optax.sgd(0.05, momentum=0.9),
        (images, labels),
        key=jax.random.key(0),
        num_epochs=2,
        batch_size=batch_size,
        progress=False,
    )
    params, state = trained.params, trained.model_state
    apply = model.bind(state)  # BatchNorm in eval mode with the trained statistics
    loss_fn = classification_loss(apply)
    batched = data.batches(images, labels, batch_size)
    n = ravel_pytree(params)[0].size
    print(
        f"B. ResNet-20 (BatchNorm, eval mode): {n:,} parameters, {examples} digits upsampled "
        f"to 32x32x3 in batches of {batch_size}"
    )
    key = jax.random.key(3)

    def top(k, **options):
        return jax.jit(
            lambda p: sharpness.top_eigenvalues(loss_fn, p, batched, key=key, k=k, **options)
        )

    reference = np.asarray(top(5, tol=1e-7, num_iters=60)(params)[0])
    trace_reference, trace_se = jax.jit(
        lambda p: sharpness.hessian_trace(
            loss_fn, p, batched, key=jax.random.key(11), num_samples=90, probe_batch=1
        )
    )(params)
    print(
        f"  reference top-5 (Lanczos to 1e-7): {np.round(reference, 4).tolist()}; trace "
        f"(Hutch++, 90 HVPs) {float(trace_reference):.2f} ± {float(trace_se):.2f}"
    )

    computer = None
    if torch is not None:
        net = _torch_resnet20(torch, params, state)
        loader = [
            (
                torch.from_numpy(images[i : i + batch_size].transpose(0, 3, 1, 2).copy()),
                torch.from_numpy(labels[i : i + batch_size].astype(np.int64)),
            )
            for i in range(0, examples, batch_size)
        ]
        with torch.no_grad():
            torch_logits = np.concatenate([net(x).numpy() for x, _ in loader])
        port_error = float(np.max(np.abs(torch_logits - np.asarray(apply(params, images)))))
        print(f"  port check: max |logit difference| torch vs JAX = {port_error:.1e}")
        computer = pyhessian_hessian(
            net, torch.nn.CrossEntropyLoss(), dataloader=loader, cuda=False
        )

    rows = []

    def record(row):  # printed as it completes, so a later crash keeps it
        rows.append(row)
        _print_row(row)

    for k in (1, 5):
        t_first, (values, _, info) = first_call(top(k), params)
        t_steady = timed(top(k), params, repeats=1)
        row = (
            f"top-{k}",
            t_steady,
            t_first,
            int(info["num_hvps"]),
            relative_error(values, reference[:k]),
        )
        if computer is not None:
            start = time.perf_counter()  # torch compiles nothing: one call is steady
            torch_values, _ = computer.eigenvalues(top_n=k)
            torch_values = sorted(torch_values, reverse=True)
            t_torch = time.perf_counter() - start
            row += (t_torch, relative_error(torch_values, reference[:k]))
        record(row)

    trace_fn = jax.jit(
        lambda p: sharpness.hessian_trace(
            loss_fn, p, batched, key=jax.random.key(12), num_samples=30, probe_batch=1
        )
    )
    t_first, (estimate, _) = first_call(trace_fn, params)
    row = (
        "trace (Hutch++ 30 vs Hutchinson)",
        timed(trace_fn, params, repeats=1),
        t_first,
        30,
        abs(float(estimate) - float(trace_reference)) / abs(float(trace_reference)),
    )
    if computer is not None:
        start = time.perf_counter()
        torch_trace = computer.trace()
        t_torch = time.perf_counter() - start
        row += (
            t_torch,
            abs(float(np.mean(torch_trace)) - float(trace_reference)) / abs(float(trace_reference)),
            len(torch_trace),
        )
    record(row)

    iters = 20
    density_fn = jax.jit(
        lambda p: (
            sharpness.spectral_density(
                loss_fn, p, batched, key=jax.random.key(13), num_iters=iters, num_runs=1
            ).nodes
        )
    )
    t_first, nodes = first_call(density_fn, params)
    row = (
        f"density (SLQ, {iters} steps, top node)",
        timed(density_fn, params, repeats=1),
        t_first,
        iters,
        abs(float(np.max(nodes)) - reference[0]) / reference[0],
    )
    if computer is not None:
        start = time.perf_counter()
        try:
            torch_nodes, _ = computer.density(iter=iters, n_v=1)
        except RuntimeError as error:  # PyHessian 0.1 calls torch.eig, removed in torch 1.9
            print(f"  PyHessian density failed: {str(error).splitlines()[0]}")
        else:
            t_torch = time.perf_counter() - start
            row += (t_torch, abs(float(np.max(torch_nodes)) - reference[0]) / reference[0])
    record(row)

    print(
        "  | quantity | jaxreg steady s | with compile s | jaxreg HVPs | jaxreg error | "
        "PyHessian s | PyHessian error | speed-up steady / incl. compile |"
    )
    for row in rows:
        _print_row(row)


def _print_row(row: tuple) -> None:
    name, steady, first, hvps, error = row[:5]
    line = f"  | {name} | {steady:.2f} | {first:.2f} | {hvps} | {error:.1e} |"
    if len(row) > 5:
        t_torch, torch_error = row[5], row[6]
        extra = f" ({row[7]} HVPs)" if len(row) > 7 else ""
        line += (
            f" {t_torch:.2f}{extra} | {torch_error:.1e} | {t_torch / steady:.1f}x / "
            f"{t_torch / first:.1f}x |"
        )
    else:
        line += " skipped | | |"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64, help="ResNet-20 examples")
    parser.add_argument("--batch-size", type=int, default=64, help="ResNet-20 batch size")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-mlp", action="store_true")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    torch, pyhessian_hessian = _import_torch()
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_mlp:
        mlp_section(torch, pyhessian_hessian)
    if not args.skip_resnet:
        conv_in_loop_check()
        resnet_section(torch, pyhessian_hessian, args.examples, args.batch_size)


def conv_in_loop_check() -> None:
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
    t_plain = timed(unrolled(lax_conv), inputs, kernel)
    t_loop = timed(in_loop(lax_conv), inputs, kernel)
    t_patch = timed(in_loop(patch_conv), inputs, kernel)
    print(
        f"B. conv weight gradients (2 x 64x32x32x16, 3x3) on {jax.default_backend()}: lax "
        f"{1e3 * t_plain:.0f} ms unrolled, {1e3 * t_loop:.0f} ms in a fori_loop; "
        f"patch_conv in a fori_loop {1e3 * t_patch:.0f} ms"
    )


if __name__ == "__main__":
    main()
