"""Sweep throughput: ``sweeps.run`` (one vmapped compile) vs the loops a user would write.

Each config trains the MNIST-1D MLP (40-100-100-10) with Adam + weight decay for
50 epochs of 40 steps (2,000 steps). Compared in one process:

* ``sweeps.run`` over N = 32 configs (learning rate × weight decay);
* the loop a user writes: one jitted ``fit`` per config with traced
  hyperparameters (compiles once, runs the configs one after another);
* the naive loop: a Python loop over steps with the optimizer rebuilt (and the
  step recompiled) per config — timed on 4 configs and scaled to N.

Also T(2N)/T(N) for N = 16, 32, 64 (target ≤ 1.6 on a GPU; on CPU the work is
linear in N so about 2 is expected).

Run: ``python -m benchmarks.sweeps``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks._machine import describe, record
from jaxreg import data, fit, sweeps
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, functional

EPOCHS, BATCH = 50, 100


def setup():
    x, y, _, _ = data.mnist1d()
    apply, params = functional(MLP((40, 100, 100, 10), rngs=nnx.Rngs(0)))

    def train_fn(config, key):
        optimizer = optax.adamw(config["lr"], weight_decay=config["wd"])
        result = fit(apply, params, optimizer, (x, y), key=key, num_epochs=EPOCHS, batch_size=BATCH)
        return {"train_accuracy": result.history["train_accuracy"][-1]}

    return x, y, apply, params, train_fn


def configs(n: int):
    lrs = np.geomspace(3e-4, 3e-2, max(n // 4, 1))
    return sweeps.grid(lr=lrs, wd=[0.0, 1e-4, 1e-3, 1e-2][: min(4, n)])


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return time.perf_counter() - start, out


def naive_loop(x, y, apply, params, config, key):
    optimizer = optax.adamw(float(config["lr"]), weight_decay=float(config["wd"]))
    loss_fn = classification_loss(apply)
    state = optimizer.init(params)

    @jax.jit
    def step(p, s, batch):
        grads = jax.grad(loss_fn)(p, batch)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    p = params
    for epoch in range(EPOCHS):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(y)))
        for i in range(0, len(y), BATCH):
            idx = order[i : i + BATCH]
            p, state = step(p, state, {"x": x[idx], "y": y[idx]})
    return p


def main() -> None:
    x, y, apply, params, train_fn = setup()
    key = jax.random.key(0)
    n = 32
    grid = configs(n)
    t_sweep, result = timed(lambda: sweeps.run(train_fn, grid, key=key, progress=False).metrics)
    jitted = jax.jit(train_fn)
    seed_key = jax.random.split(key, 1)[0]

    def user_loop():
        return [jitted({k: jnp.asarray(v[i]) for k, v in grid.items()}, seed_key) for i in range(n)]

    t_loop, looped = timed(user_loop)
    max_diff = float(
        np.max(
            np.abs(
                np.asarray(result["train_accuracy"])
                - np.asarray([r["train_accuracy"] for r in looped])
            )
        )
    )
    t_naive4, _ = timed(
        lambda: [
            naive_loop(x, y, apply, params, {k: v[i] for k, v in grid.items()}, key)
            for i in range(4)
        ]
    )
    t_naive = t_naive4 * n / 4
    print(f"machine: {describe()}")
    print(f"N = {n} configs × {EPOCHS * len(y) // BATCH} steps each")
    print(
        f"sweeps.run {t_sweep:.1f} s; jitted-fit loop {t_loop:.1f} s (max |Δ train accuracy| "
        f"{max_diff:.4f} after 2,000 steps: float rounding, vmapped vs single); "
        f"naive step loop ~{t_naive:.0f} s (4 configs timed, scaled)"
    )
    print(
        f"speed-up vs jitted-fit loop {t_loop / t_sweep:.2f} (target >= 1.0 on CPU, >= 10 on "
        f"GPU); vs naive loop {t_naive / t_sweep:.1f}"
    )
    times = {}
    for size in (16, 32, 64, 128):
        times[size], _ = timed(
            lambda size=size: sweeps.run(train_fn, configs(size), key=key, progress=False).metrics
        )
    scaling = ", ".join(f"T({2 * s})/T({s}) = {times[2 * s] / times[s]:.2f}" for s in (16, 32, 64))
    print(f"scaling: {scaling} (target <= 1.6 on a GPU)")
    record(
        "sweeps",
        {
            "configs": n,
            "sweep_s": t_sweep,
            "jitted_fit_loop_s": t_loop,
            "naive_loop_s_scaled": t_naive,
            "speed_up_vs_jitted_loop": t_loop / t_sweep,
            "seconds_by_size": {str(size): t for size, t in times.items()},
        },
    )


if __name__ == "__main__":
    main()
