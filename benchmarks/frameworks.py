"""``fit`` on stock gallery models vs each framework's idiomatic hand-written loop.

Workload: the gallery's five models (``experiments/gallery.py``, full width): the NNX
tutorial CNN, Linen ResNet and Equinox CNN on scikit-learn's 8×8 digits (1,438 training
images), the NNX Transformer on 1,440 majority-token sequences and the NNX GRU on
MNIST-1D (4,000 sequences); Adam 1e-3, batches of 64, ``EPOCHS`` epochs, the training
set evaluated after every epoch in one pass (what ``fit`` records; ``eval_batch_size``
is the training set's size, so neither side evaluates padding rows). The hand-written
loops are written the way each framework's documentation writes them: NNX ``nnx.jit`` +
``nnx.Optimizer``; Linen a ``TrainState`` with ``jax.jit``; Equinox ``eqx.filter_jit``;
each with a Python loop
over host-shuffled minibatches and a jitted evaluation pass per epoch.

``fit`` runs in both step drivers (``HostOptions.steps``): ``"host"``, one compiled
call per minibatch as the hand-written loops do, steady = a second call that reuses
the compiled step programs; and ``"scan"``, steady = ``fit`` jitted once (the form
sweeps use). On CPU, ``"scan"`` is slow for convolutional models: XLA:CPU moves
convolutions to its fast kernel's layout only in a program's entry computation, not
inside a ``scan`` body. "Per epoch": the time of a 10-epoch call minus a 5-epoch call,
over 5 (the steady cost; what is left is a fixed cost per call, reported apart).
Steady times are medians of ``REPEATS`` rounds in which every warm call runs once, the
order rotated each round (the protocol's "within JAX: one process, interleaved").
"With compile": one run from scratch on each side.
Also: one HVP against one gradient on the gallery Transformer (whole data,
``jaxreg.sharpness.hvp``). Targets (DESIGN.md):
fit/hand-written ≤ 1.05, HVP/gradient ≤ 2.5. Run: ``python -m benchmarks.frameworks``.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

import jaxreg
from benchmarks import _protocol
from benchmarks._machine import describe, record
from experiments import gallery

EPOCHS, BATCH, REPEATS = 5, 64, 9


def _batches(epoch: int, n: int):
    order = np.random.default_rng(epoch).permutation(n)
    return [order[i : i + BATCH] for i in range(0, n - BATCH + 1, BATCH)]


_NNX_MODULES = {
    "nnx_cnn": lambda rngs: gallery.NNXCNN(rngs=rngs, image=8),
    "transformer": lambda rngs: gallery.TransformerClassifier(
        vocab=6, length=16, dim=32, heads=2, depth=2, classes=2, rngs=rngs
    ),
    "gru": lambda rngs: gallery.GRUClassifier(hidden=64, rngs=rngs),
}


def nnx_loop(x, y, name="nnx_cnn"):
    """The hand-written NNX training loop (``nnx.jit`` steps, ``nnx.Optimizer``) as
    ``run(epochs=EPOCHS) -> last training loss``; ``benchmarks/stock_conv.py`` uses it too."""
    model = _NNX_MODULES[name](nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, xb, yb):
        def loss_fn(model):
            logits = model(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        optimizer.update(model, nnx.grad(loss_fn)(model))

    @nnx.jit
    def eval_step(model, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    def run(epochs=EPOCHS):
        for epoch in range(epochs):
            model.train()
            for index in _batches(epoch, len(y)):
                train_step(model, optimizer, x[index], y[index])
            model.eval()
            loss = eval_step(model, x, y)
        return loss

    return run


def _linen_loop(x, y):
    net = gallery.LinenResNet()
    variables = net.init(jax.random.key(0), x[:1], train=False)

    class State(train_state.TrainState):
        batch_stats: dict

    state = State.create(apply_fn=net.apply, params=variables["params"],
                         tx=optax.adam(1e-3), batch_stats=variables["batch_stats"])  # fmt: skip

    @jax.jit
    def train_step(state, xb, yb):
        def loss_fn(params):
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                             xb, train=True, mutable=["batch_stats"])  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, updates

        grads, updates = jax.grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads).replace(batch_stats=updates["batch_stats"])

    @jax.jit
    def eval_step(state, xb, yb):
        logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, xb,
                                train=False)  # fmt: skip
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def run(epochs=EPOCHS):
        current = state
        for epoch in range(epochs):
            for index in _batches(epoch, len(y)):
                current = train_step(current, x[index], y[index])
            loss = eval_step(current, x, y)
        return loss

    return run


def _equinox_loop(x, y):
    model = gallery.EquinoxCNN(jax.random.key(0), image=8, hidden=128)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    def loss(model, xb, yb, key):
        keys = jax.random.split(key, len(yb))
        logits = jax.vmap(lambda xi, ki: model(xi, key=ki))(xb, keys)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @eqx.filter_jit
    def make_step(model, opt_state, xb, yb, key):
        grads = eqx.filter_grad(loss)(model, xb, yb, key)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    @eqx.filter_jit
    def evaluate(model, xb, yb):
        logits = jax.vmap(eqx.nn.inference_mode(model))(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def run(epochs=EPOCHS):
        current, state, key = model, opt_state, jax.random.key(1)
        for epoch in range(epochs):
            for index in _batches(epoch, len(y)):
                key, step_key = jax.random.split(key)
                current, state = make_step(current, state, x[index], y[index], step_key)
            loss = evaluate(current, x, y)
        return loss

    return run


class _FitCalls(NamedTuple):
    scan_cold: Callable  # fit's host call, steps="scan": compiles the run every call
    scan_steady: Callable  # fit jitted once (the form sweeps use)
    host_cold: Callable  # steps="host" with a new optimizer: compiles its step programs
    host_steady: Callable  # steps="host" again with the same loop: compiled programs reused
    host_longer: Callable  # the same, twice the epochs: the per-epoch cost is the difference


def _fit_calls(name: str, x, y) -> _FitCalls:
    """``fit`` on one gallery model in each form the benchmark times."""
    model = gallery.GALLERY[name].build(jax.random.key(0), False, None)
    # The rate the hand-written loop's module is built with.
    rate = {"nnx_cnn": 0.025, "equinox_cnn": 0.1, "transformer": 0.1, "gru": 0.1}.get(name)
    hparams = {"dropout_rate": rate} if "dropout_rate" in model.hparam_names else None
    adam = optax.adam(1e-3)

    def train(params, x, y, optimizer=adam, steps="scan", epochs=EPOCHS):
        result = jaxreg.fit(model, params, optimizer, (x, y), key=jax.random.key(1),
                            num_epochs=epochs, batch_size=BATCH, hparams=hparams,
                            drop_remainder=True, eval_batch_size=len(y),
                            host=jaxreg.HostOptions(steps=steps))  # fmt: skip
        return result.history["train_loss"][-1]

    steady = jax.jit(train)
    return _FitCalls(
        lambda: train(model.params, x, y, optax.adam(1e-3)),
        lambda: steady(model.params, x, y),
        lambda: train(model.params, x, y, optax.adam(1e-3), "host"),
        lambda: train(model.params, x, y, adam, "host"),
        lambda: train(model.params, x, y, adam, "host", 2 * EPOCHS),
    )


def _seconds(fn, warm: bool) -> float:
    if warm:
        jax.block_until_ready(fn())  # compile outside the timings
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(calls: dict[str, Callable]) -> dict[str, float]:
    """Median seconds of each warm call, the calls taken in turn (order rotated per round)."""
    for fn in calls.values():
        jax.block_until_ready(fn())  # compile outside the timings
    times = _protocol.interleaved(calls, REPEATS, jax.block_until_ready)
    return {name: statistics.median(values) for name, values in times.items()}


def _measure(name: str, loop: Callable, inputs, y) -> dict[str, float]:
    """One gallery model: steady times interleaved, then one cold run per side."""
    fit_calls, hand = _fit_calls(name, inputs, y), loop(inputs, y)
    steady = _interleaved({
        "hand": hand, "hand_longer": lambda: hand(2 * EPOCHS), "host": fit_calls.host_steady,
        "host_longer": fit_calls.host_longer, "scan": fit_calls.scan_steady,
    })  # fmt: skip
    # One run from scratch: each side compiles what it runs (the loop's jitted steps).
    t_hand_cold = _seconds(lambda: loop(inputs, y)(), warm=False)
    t_scan_cold = _seconds(fit_calls.scan_cold, warm=False)
    t_host_cold = _seconds(fit_calls.host_cold, warm=False)
    epoch_hand = (steady["hand_longer"] - steady["hand"]) / EPOCHS
    epoch_host = (steady["host_longer"] - steady["host"]) / EPOCHS
    fixed_extra = (steady["host"] - EPOCHS * epoch_host) - (steady["hand"] - EPOCHS * epoch_hand)
    print(f"  {name:13s} hand-written {steady['hand']:.3f} s steady, {t_hand_cold:.2f} s cold")
    print(
        f"    steps='host': a {EPOCHS}-epoch call {steady['host']:.3f} s, ratio "
        f"{steady['host'] / steady['hand']:.3f} (target <= 1.05); per epoch "
        f"{1e3 * epoch_host:.1f} ms vs {1e3 * epoch_hand:.1f} ms, ratio "
        f"{epoch_host / epoch_hand:.3f}; fit's fixed cost per call {1e3 * fixed_extra:+.0f} ms; "
        f"with compile {t_host_cold:.2f} s, ratio {t_host_cold / t_hand_cold:.2f}"
    )
    print(
        f"    steps='scan': steady {steady['scan']:.3f} s, ratio "
        f"{steady['scan'] / steady['hand']:.3f}; with compile {t_scan_cold:.2f} s, ratio "
        f"{t_scan_cold / t_hand_cold:.2f}"
    )
    return {
        "host_call_ratio": steady["host"] / steady["hand"],
        "host_per_epoch_ratio": epoch_host / epoch_hand,
        "scan_ratio": steady["scan"] / steady["hand"],
        "host_with_compile_ratio": t_host_cold / t_hand_cold,
        "scan_with_compile_ratio": t_scan_cold / t_hand_cold,
        "hand_written_s": steady["hand"],
    }


def _hvp_over_gradient() -> float:
    x, y = gallery.majority_tokens(jax.random.key(0), 512)
    model = gallery.GALLERY["transformer"].build(jax.random.key(0), False, None)
    loss_fn = jaxreg.losses.classification_loss(model.bind())
    data = jaxreg.data.batches(x, y, 128)
    gradient = jax.jit(jax.grad(lambda p: jaxreg.data.dataset_loss(loss_fn, p, data)))
    hvp = jax.jit(lambda p, v: jaxreg.sharpness.hvp(loss_fn, p, data)(v))
    t_grad = _seconds(lambda: gradient(model.params), warm=True)
    t_hvp = _seconds(lambda: hvp(model.params, model.params), warm=True)
    return t_hvp / t_grad


def main() -> None:
    digits = jaxreg.data.digits()
    x, y = np.asarray(digits.x_train), np.asarray(digits.y_train)
    tokens, majority = (np.asarray(a) for a in gallery.majority_tokens(jax.random.key(0), 1440))
    mnist1d = jaxreg.data.mnist1d()
    loops = {
        "nnx_cnn": (nnx_loop, x, y),
        "linen_resnet": (_linen_loop, x, y),
        "equinox_cnn": (_equinox_loop, np.moveaxis(x, -1, 1), y),  # Equinox: channels first
        "transformer": (functools.partial(nnx_loop, name="transformer"), tokens, majority),
        "gru": (functools.partial(nnx_loop, name="gru"), np.asarray(mnist1d.x_train),
                np.asarray(mnist1d.y_train)),
    }  # fmt: skip
    print(f"machine: {describe()}")
    print(f"CNNs: digits 8×8, {len(y)} images; Transformer: {len(majority)} majority-token "
          f"sequences; GRU: MNIST-1D, {len(mnist1d.y_train)} sequences. {EPOCHS} epochs of "
          f"batch {BATCH}, median of {REPEATS} interleaved rounds")  # fmt: skip
    measured = {name: _measure(name, *spec) for name, spec in loops.items()}
    hvp_ratio = _hvp_over_gradient()
    print(f"Transformer HVP/gradient: {hvp_ratio:.2f} (target <= 2.5)")
    record(
        "frameworks",
        {"repeats": REPEATS, "models": measured, "transformer_hvp_over_gradient": hvp_ratio},
    )


if __name__ == "__main__":
    main()
