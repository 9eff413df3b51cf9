"""Training speed: the v2 `fit` (pure core + host driver) vs 0.1's `fit` and a hand-written loop.

Workload: the MNIST-1D MLP (40-100-100-10), Adam 1e-3, 4,000 examples in
batches of 100, evaluation of the training and test sets after every epoch —
the tour's baseline row. Compared in one process, interleaved, median of
``REPEATS``:

* **steady**: each trainer jitted once around the whole run (the form sweeps
  use), then timed on repeated calls (no compile);
* **host call**: one plain host call of each ``fit`` (compile included), as a
  user's script makes it;
* a hand-written ``optax`` + ``lax.scan`` loop (no evaluation beyond the same
  two passes per epoch) as the floor a user could write by hand.

Target: new/old ≤ 1.05 in both. Run: ``python -m benchmarks.fit``.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks import _legacy_fit
from benchmarks._machine import describe, record
from jaxreg import data, fit
from jaxreg.data import batches, shuffled_batches
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, functional

EPOCHS, BATCH, REPEATS = 30, 100, 5


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(jax.tree.leaves(fn()))
    return time.perf_counter() - start


def main() -> None:
    x, y, x_test, y_test = data.mnist1d()
    apply, params = functional(MLP((40, 100, 100, 10), rngs=nnx.Rngs(0)))
    key = jax.random.key(0)
    kwargs = dict(key=key, num_epochs=EPOCHS, batch_size=BATCH, eval_data=(x_test, y_test))
    loss_fn = classification_loss(apply)
    optimizer = optax.adam(1e-3)

    def hand_written(p):
        train_eval, test_eval = batches(x, y, 1000), batches(x_test, y_test, 1000)

        def step(carry, batch):
            p, s = carry
            grads = jax.grad(loss_fn)(p, batch)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        def epoch(carry, e):
            epoch_batches = shuffled_batches(jax.random.fold_in(key, e), x, y, BATCH)
            carry, _ = jax.lax.scan(step, carry, epoch_batches)
            losses = [
                jax.lax.map(lambda b: loss_fn(carry[0], b), d).mean()
                for d in (train_eval, test_eval)
            ]
            return carry, jnp.stack(losses)

        (p, _), history = jax.lax.scan(epoch, (p, optimizer.init(p)), jnp.arange(EPOCHS))
        return p, history

    steady = {
        "new fit": jax.jit(lambda p: fit(apply, p, optimizer, (x, y), **kwargs).params),
        "0.1 fit": jax.jit(lambda p: _legacy_fit.fit(apply, p, optimizer, (x, y), **kwargs).params),
        "hand-written": jax.jit(hand_written),
    }
    host = {
        "new fit": lambda: fit(apply, params, optimizer, (x, y), **kwargs).params,
        "0.1 fit": lambda: _legacy_fit.fit(apply, params, optimizer, (x, y), **kwargs).params,
    }
    for fn in steady.values():  # compile outside the timings
        jax.block_until_ready(fn(params))
    times = {name: [] for name in steady}
    host_times = {name: [] for name in host}
    for _ in range(REPEATS):
        for name, fn in steady.items():
            times[name].append(_timed(lambda fn=fn: fn(params)))
        for name, fn in host.items():
            host_times[name].append(_timed(fn))
    median = {k: statistics.median(v) for k, v in times.items()}
    host_median = {k: statistics.median(v) for k, v in host_times.items()}
    print(f"machine: {describe()}")
    print(f"MNIST-1D MLP, {EPOCHS} epochs × {len(y) // BATCH} steps, eval each epoch")
    for name, value in median.items():
        print(f"  steady {name:>13}: {value:.3f} s")
    for name, value in host_median.items():
        print(f"  host call {name:>10}: {value:.3f} s (compile included)")
    print(
        f"ratio new/0.1: steady {median['new fit'] / median['0.1 fit']:.3f}, host call "
        f"{host_median['new fit'] / host_median['0.1 fit']:.3f} (target <= 1.05); "
        f"new/hand-written steady {median['new fit'] / median['hand-written']:.3f}"
    )
    record(
        "fit",
        {
            "repeats": REPEATS,
            "steady_s": times,
            "host_call_s": host_times,
            "new_over_0_1_steady": median["new fit"] / median["0.1 fit"],
            "new_over_0_1_host_call": host_median["new fit"] / host_median["0.1 fit"],
            "new_over_hand_written_steady": median["new fit"] / median["hand-written"],
        },
    )


if __name__ == "__main__":
    main()
