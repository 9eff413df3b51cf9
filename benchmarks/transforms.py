"""Step time of ``optax.chain(adam, decoupled_weight_decay, proximal_l1)`` vs a hand-fused step.

The alternative is the strongest a user would write: one jitted function that
computes Adam's moments, the decoupled decay and the soft threshold in a single
pass over the parameters. Both run 400 steps inside one ``lax.scan`` per call on
the MNIST-1D MLP (40-100-100-10, batch 100); we report the median over
interleaved repeats and the ratio (target ≤ 1.05), for the whole training step
(gradient included) and for the optimizer update alone.

Run: ``python -m benchmarks.transforms``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks._machine import describe, record
from jaxreg import data, masks, transforms
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, functional

LR, DECAY, STRENGTH = 1e-3, 1e-4, 1e-2
B1, B2, EPS = 0.9, 0.999, 1e-8
STEPS, REPEATS = 400, 9


def jaxreg_chain() -> optax.GradientTransformation:
    return optax.chain(
        optax.adam(LR, b1=B1, b2=B2, eps=EPS),
        transforms.decoupled_weight_decay(DECAY, mask=masks.weights_only),
        transforms.proximal_l1(STRENGTH, LR, mask=masks.weights_only),
    )


def fused_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return (jnp.zeros((), jnp.int32), zeros, zeros)


def fused_update(grads, state, params):
    count, mu, nu = state
    count = count + 1
    selected = masks.weights_only(params)
    c1 = 1 - B1 ** count.astype(jnp.float32)
    c2 = 1 - B2 ** count.astype(jnp.float32)

    def leaf(g, m, v, p, keep):
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        step = -LR * (m / c1) / (jnp.sqrt(v / c2) + EPS)
        if keep:
            target = p + step - DECAY * p
            target = jnp.sign(target) * jnp.maximum(jnp.abs(target) - LR * STRENGTH, 0)
            step = target - p
        return step, m, v

    out = jax.tree.map(leaf, grads, mu, nu, params, selected)
    is_tuple = lambda x: isinstance(x, tuple)  # noqa: E731
    updates = jax.tree.map(lambda t: t[0], out, is_leaf=is_tuple)
    mu = jax.tree.map(lambda t: t[1], out, is_leaf=is_tuple)
    nu = jax.tree.map(lambda t: t[2], out, is_leaf=is_tuple)
    return updates, (count, mu, nu)


def make_runs(init, update, loss_fn, batches_):
    def train(params):
        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss_fn)(params, batch)
            updates, state = update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, init(params)), batches_)
        return params

    def updates_only(params, grads):
        def step(carry, _):
            params, state = carry
            updates, state = update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, init(params)), None, length=STEPS)
        return params

    return jax.jit(train), jax.jit(updates_only)


def median_time(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main() -> None:
    x_train, y_train, _, _ = data.mnist1d()
    apply, params = functional(MLP((40, 100, 100, 10), rngs=nnx.Rngs(0)))
    loss_fn = classification_loss(apply)
    stacked = data.shuffled_batches(jax.random.key(0), x_train, y_train, 100)
    reps = -(-STEPS // stacked["x"].shape[0])
    batches_ = jax.tree.map(lambda a: jnp.concatenate([a] * reps)[:STEPS], stacked)
    grads = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[0], batches_))

    chain = jaxreg_chain()
    ours_train, ours_update = make_runs(chain.init, chain.update, loss_fn, batches_)
    fused_train, fused_update_run = make_runs(fused_init, fused_update, loss_fn, batches_)

    # Same algorithm: one step of each gives the same update up to rounding.
    ours_step, _ = chain.update(grads, chain.init(params), params)
    fused_step, _ = fused_update(grads, fused_init(params), params)
    diff = max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(ours_step), jax.tree.leaves(fused_step), strict=True)
    )
    zeros = sum(int(jnp.sum(leaf == 0)) for leaf in jax.tree.leaves(ours_train(params)))

    timings = {"ours_train": [], "fused_train": [], "ours_update": [], "fused_update": []}
    for _ in range(REPEATS):
        timings["ours_train"].append(median_time(ours_train, params))
        timings["fused_train"].append(median_time(fused_train, params))
        timings["ours_update"].append(median_time(ours_update, params, grads))
        timings["fused_update"].append(median_time(fused_update_run, params, grads))
    med = {k: float(np.median(v)) for k, v in timings.items()}
    print(f"machine: {describe()}")
    print(
        f"max |update(chain) - update(fused)| on one step: {diff:.1e}; "
        f"exact zeros after {STEPS} steps: {zeros}"
    )
    print(
        f"train step:  jaxreg chain {1e6 * med['ours_train'] / STEPS:8.1f} us, "
        f"hand-fused {1e6 * med['fused_train'] / STEPS:8.1f} us, "
        f"ratio {med['ours_train'] / med['fused_train']:.3f} (target <= 1.05)"
    )
    print(
        f"update only: jaxreg chain {1e6 * med['ours_update'] / STEPS:8.1f} us, "
        f"hand-fused {1e6 * med['fused_update'] / STEPS:8.1f} us, "
        f"ratio {med['ours_update'] / med['fused_update']:.3f}"
    )
    record(
        "transforms",
        {
            "seconds": timings,
            "median": med,
            "train_step_ratio": med["ours_train"] / med["fused_train"],
            "update_ratio": med["ours_update"] / med["fused_update"],
        },
    )


if __name__ == "__main__":
    main()
