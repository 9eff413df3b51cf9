"""A stock NNX CNN in jaxreg's loops, as written and after ``swap_stock_convs``.

Workload: the Flax NNX MNIST tutorial's CNN (``experiments/gallery.py``'s ``NNXCNN``,
full width, 8×8 input) on scikit-learn's 8×8 digits (1,438 training images). Both
sides run in one process, interleaved (the protocol's "within JAX"): the module as its
documentation writes it (``lax.conv_general_dilated``) and the copy that
``jaxreg.nn.swap_stock_convs`` returns (``patch_conv``), on the same weights.

Two loops, each a compiled ``while_loop`` body on XLA:CPU:

* the top Hessian eigenvalue by adaptive Lanczos (``tol=1e-4``, the training set in
  batches of 128, eval mode), the same start vector on both sides;
* ``fit`` with ``steps="scan"`` (the form a vmapped sweep takes), 5 epochs of batch
  64 with Adam 1e-3, jitted once, against the hand-written NNX loop of
  ``benchmarks/frameworks.py`` (a Python loop of ``nnx.jit`` steps).

Steady: the median of ``REPEATS`` interleaved rounds after a warm-up call; the
warm-up call's time (tracing and compiling) is reported as the first call.
Run: ``python -m benchmarks.stock_conv``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx

import jaxreg
from benchmarks import _protocol, frameworks
from benchmarks._machine import describe, record
from experiments import gallery

EPOCHS, BATCH, REPEATS = 5, 64, 7


def _first_and_steady(calls: dict[str, Callable]) -> dict[str, dict[str, float]]:
    """Each call's first (compiling) time, then medians of interleaved rounds."""
    first = {}
    for name, fn in calls.items():
        start = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - start
    times = _protocol.interleaved(calls, REPEATS, jax.block_until_ready)
    return {
        name: {"first_call": first[name], "steady": statistics.median(times[name])}
        for name in calls
    }


def _models() -> dict[str, jaxreg.nn.Model]:
    stock = gallery.NNXCNN(rngs=nnx.Rngs(0), image=8)
    return {
        "stock": jaxreg.nn.from_nnx(stock),
        "swapped": jaxreg.nn.from_nnx(jaxreg.nn.swap_stock_convs(stock)),
    }


def _top_eigenvalue(model: jaxreg.nn.Model, x, y) -> Callable:
    loss_fn = jaxreg.losses.classification_loss(model.bind(model.state))
    data = jaxreg.data.batches(x, y, 128)
    key = jax.random.key(0)
    run = jax.jit(
        lambda p: jaxreg.sharpness.top_eigenvalues(loss_fn, p, data, key=key, k=1, tol=1e-4)
    )
    return lambda: run(model.params)


def _fit_scan(model: jaxreg.nn.Model, x, y) -> Callable:
    def train(params):
        result = jaxreg.fit(
            model, params, optax.adam(1e-3), (x, y), key=jax.random.key(1), num_epochs=EPOCHS,
            batch_size=BATCH, drop_remainder=True, eval_batch_size=len(y),
            host=jaxreg.HostOptions(steps="scan"),
        )  # fmt: skip
        return result.history["train_loss"][-1]

    steady = jax.jit(train)
    return lambda: steady(model.params)


def main() -> None:
    digits = jaxreg.data.digits()
    x, y = np.asarray(digits.x_train), np.asarray(digits.y_train)
    models = _models()
    print(f"machine: {describe()}")
    print(f"NNX tutorial CNN, digits 8×8, {len(y)} images; median of {REPEATS} rounds")
    eigen_calls = {name: _top_eigenvalue(m, x, y) for name, m in models.items()}
    eigen = _first_and_steady(eigen_calls)  # the first call is each program's first compile
    values = {name: float(call()[0][0]) for name, call in eigen_calls.items()}
    print(f"top eigenvalue: stock {values['stock']:.6f}, swapped {values['swapped']:.6f}")
    calls = {name: _fit_scan(m, x, y) for name, m in models.items()}
    calls["hand"] = frameworks.nnx_loop(x, y)
    fits = _first_and_steady(calls)
    for label, section in (("top-1 Lanczos", eigen), ("fit, steps='scan'", fits)):
        for name, entry in section.items():
            print(f"  {label:18s} {name:8s} steady {entry['steady']:.3f} s, "
                  f"first call {entry['first_call']:.2f} s")  # fmt: skip
    ratios = {
        "top1_steady": eigen["stock"]["steady"] / eigen["swapped"]["steady"],
        "top1_first_call": eigen["stock"]["first_call"] / eigen["swapped"]["first_call"],
        "fit_scan_steady": fits["stock"]["steady"] / fits["swapped"]["steady"],
        "swapped_scan_over_hand": fits["swapped"]["steady"] / fits["hand"]["steady"],
        "stock_scan_over_hand": fits["stock"]["steady"] / fits["hand"]["steady"],
    }
    print("stock / swapped: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    relative = abs(values["stock"] - values["swapped"]) / abs(values["stock"])
    record(
        "stock_conv",
        {"repeats": REPEATS, "epochs": EPOCHS, "top1": eigen, "fit_scan": fits,
         "ratios": ratios, "top1_values": values, "top1_relative_difference": relative},
    )  # fmt: skip


if __name__ == "__main__":
    main()
