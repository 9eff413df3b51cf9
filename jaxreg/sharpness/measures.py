"""Sharpness measures: SAM/ASAM ρ-sharpness, ε-sharpness, average-case and PAC-Bayes flatness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_key, check_non_negative
from jaxreg.data import batch_weight
from jaxreg.sharpness.hvp import LossFn, dataset_loss

__all__ = [
    "average_sharpness",
    "epsilon_sharpness",
    "pac_bayes_flatness",
    "safe_normalize",
    "sam_sharpness",
]


def _tree_norm(tree: chex.ArrayTree) -> jax.Array:
    return optax.tree.norm(tree)


def safe_normalize(tree: chex.ArrayTree) -> chex.ArrayTree:
    """``tree / ‖tree‖``; exactly zero (not NaN) for a zero tree, unlike ``optax.normalize``.

    Example:
      >>> safe_normalize({"a": jnp.array([3.0, 0.0]), "b": jnp.array(4.0)})
      {'a': Array([0.6, 0. ], dtype=float32), 'b': Array(0.8, dtype=float32)}
      >>> float(safe_normalize(jnp.zeros(3)).sum())  # zero, not NaN
      0.0
    """
    norm = _tree_norm(tree)
    safe = jnp.where(norm > 0, norm, 1.0)
    return jax.tree.map(lambda leaf: jnp.where(norm > 0, leaf / safe, 0.0).astype(leaf.dtype), tree)


def _add(params, delta, scale=1.0):
    return jax.tree.map(lambda p, d: p + scale * d, params, delta)


def _split_for_m(data: Any, m: int | None) -> Any:
    if m is None:
        return None
    leaves = jax.tree.leaves(data)
    batch = leaves[0].shape[1]
    if batch % m:
        raise ValueError(f"m={m} must divide the batch size {batch}")
    return jax.tree.map(lambda a: a.reshape((a.shape[0] * (batch // m), 1, m, *a.shape[2:])), data)


def sam_sharpness(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    rho: ArrayLike,
    adaptive: bool = False,
    num_steps: int = 1,
    *,
    eta: float = 0.01,
    m: int | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """ρ-sharpness ``max_{‖ε‖≤ρ} L(w+ε) − L(w)`` by normalized ascent (Foret et al., 2021).

    One step is SAM's own perturbation ``ε = ρ·g/‖g‖``; more steps iterate
    ``ε ← ρ·∇L(w+ε)/‖∇L(w+ε)‖`` (projected ascent on the sphere). With
    ``adaptive`` (ASAM, Kwon et al., 2021) the ball is scaled by
    ``T = |w| + η``: ``ε = ρ·T²g/‖Tg‖``. ``key`` starts the ascent from a random
    direction, which a zero gradient (a minimum) needs; a zero gradient never
    produces NaN. ``m`` gives m-sharpness: the average over sub-batches of
    ``m`` examples, each with its own worst-case perturbation.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, b: 0.5 * jnp.sum(jnp.array([4.0, 1.0]) * w ** 2)
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> s = sam_sharpness(loss_fn, jnp.zeros(2), data, 0.1, num_steps=30, key=jax.random.key(0))
      >>> round(float(s), 5)  # ρ²·λmax/2
      0.02
    """
    check_non_negative(rho, "rho")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    split = _split_for_m(data, m)
    if split is not None:
        # Sub-batches weigh by their total example weight: padding-only ones count 0
        # (never NaN) and partly padded ones count less; each draws its own start.
        num_chunks = jax.tree.leaves(split)[0].shape[0]

        def per_chunk(inputs):
            chunk, index = inputs
            weight = batch_weight(jax.tree.map(lambda a: a[0], chunk))
            chunk_key = None if key is None else jax.random.fold_in(key, index)
            value = sam_sharpness(
                loss_fn, params, chunk, rho, adaptive, num_steps, eta=eta, key=chunk_key
            )
            return jnp.where(weight > 0, value, 0), weight

        values, weights = jax.lax.map(per_chunk, (split, jnp.arange(num_chunks)))
        total = jnp.sum(weights)
        return jnp.sum(values * weights) / jnp.where(total > 0, total, 1)

    def loss(p):
        return dataset_loss(loss_fn, p, data)

    scale = (
        jax.tree.map(lambda p: jnp.abs(p) + eta, params)
        if adaptive
        else jax.tree.map(jnp.ones_like, params)
    )

    def perturbation(direction):
        scaled = jax.tree.map(lambda t, g: t * g, scale, direction)
        unit = safe_normalize(scaled)
        return jax.tree.map(lambda t, u: rho * t * u, scale, unit)

    if key is None:
        delta = jax.tree.map(jnp.zeros_like, params)
    else:
        noise = optax.tree.random_like(key, params)
        delta = perturbation(jax.tree.map(lambda t, z: t * z, scale, noise))

    def step(_, delta):
        grad = jax.grad(loss)(_add(params, delta))
        return perturbation(grad)

    delta = jax.lax.fori_loop(0, num_steps, step, delta)
    return loss(_add(params, delta)) - loss(params)


def epsilon_sharpness(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    epsilon: ArrayLike = 1e-3,
    num_steps: int = 20,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
    """Keskar et al. (2017) ε-sharpness: ``100·(max L(w+δ) − L(w)) / (1 + L(w))``.

    The maximum is over the box ``|δ_i| ≤ ε(|w_i| + 1)``, approached by
    projected sign-gradient ascent (``num_steps`` steps of a quarter box
    width, clipped to the box; a zero gradient component steps outward), from
    the centre or from a random point of the box with ``key``.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(jnp.array([4.0, 2.0]) * w**2)  # H = diag(4, 2)
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> float(epsilon_sharpness(loss_fn, jnp.zeros(2), data, epsilon=0.1))  # corner: 100·½·6·0.01
      3.0
    """
    check_non_negative(epsilon, "epsilon")

    def loss(p):
        return dataset_loss(loss_fn, p, data)

    bound = jax.tree.map(lambda p: epsilon * (jnp.abs(p) + 1), params)
    if key is None:
        delta = jax.tree.map(jnp.zeros_like, params)
    else:
        delta = optax.tree.random_like(
            key, params, lambda k, shape, dtype: jax.random.uniform(k, shape, dtype, -1.0, 1.0)
        )
        delta = jax.tree.map(lambda d, b: d * b, delta, bound)

    def step(_, delta):
        grad = jax.grad(loss)(_add(params, delta))
        # A zero gradient component (e.g. at a minimum) still moves outward.
        return jax.tree.map(
            lambda d, g, b: jnp.clip(d + 0.25 * b * jnp.where(g == 0, 1.0, jnp.sign(g)), -b, b),
            delta,
            grad,
            bound,
        )

    delta = jax.lax.fori_loop(0, num_steps, step, delta)
    base = loss(params)
    return 100.0 * (loss(_add(params, delta)) - base) / (1.0 + base)


def _noisy_mean(fn: Callable, params, sigma, keys, adaptive: bool, eta: float):
    def one(k):
        noise = optax.tree.random_like(k, params)
        if adaptive:
            noise = jax.tree.map(lambda z, p: z * (jnp.abs(p) + eta), noise, params)
        return fn(_add(params, noise, sigma))

    return jnp.mean(jax.lax.map(one, keys))


def average_sharpness(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    sigma: ArrayLike,
    num_samples: int = 16,
    adaptive: bool = False,
    eta: float = 0.01,
) -> jax.Array:
    """Average-case sharpness ``E_δ[L(w+δ)] − L(w)``, ``δ ~ N(0, σ²I)``.

    With ``adaptive`` the noise is scaled per weight by ``|w| + η`` (scale
    invariant, as in ASAM). Monte Carlo over ``num_samples`` draws.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(jnp.array([4.0, 2.0]) * w**2)  # H = diag(4, 2)
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> s = average_sharpness(loss_fn, jnp.zeros(2), data, key=jax.random.key(0), sigma=0.1,
      ...                       num_samples=4096)
      >>> round(float(s), 2)  # E[½ δᵀHδ] = ½ σ² tr(H) = 0.03
      0.03
    """
    check_key(key)
    check_non_negative(sigma, "sigma")

    def loss(p):
        return dataset_loss(loss_fn, p, data)

    keys = jax.random.split(key, num_samples)
    return _noisy_mean(loss, params, sigma, keys, adaptive, eta) - loss(params)


def pac_bayes_flatness(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    target: ArrayLike = 0.1,
    num_samples: int = 8,
    sigma_max: float = 1.0,
    num_bisections: int = 16,
    metric_fn: Callable[[chex.ArrayTree, Any], jax.Array] | None = None,
) -> jax.Array:
    """PAC-Bayes flatness (Jiang et al., 2020): largest σ whose noise raises the loss by ``target``.

    Bisection on ``σ ∈ [0, sigma_max]`` for ``E_δ[f(w+δ)] − f(w) = target``,
    ``δ ~ N(0, σ²I)``, with the same noise draws at every σ (common random
    numbers keep the curve monotone). ``f`` is the dataset loss, or
    ``metric_fn(params, batch)`` averaged over batches (e.g. an error rate,
    for the paper's accuracy-drop variant). Larger σ means flatter; Jiang et
    al. use ``1/σ²`` as the sharpness measure. Returns σ.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(jnp.array([4.0, 2.0]) * w**2)  # H = diag(4, 2)
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> sigma = pac_bayes_flatness(loss_fn, jnp.zeros(2), data, key=jax.random.key(0),
      ...                            target=0.03, num_samples=4096)
      >>> round(float(sigma), 2)  # ½ σ² tr(H) = 0.03  ⇒  σ = 0.1
      0.1
    """
    check_key(key)
    check_non_negative(target, "target")
    fn = metric_fn or loss_fn

    def value(p):
        return dataset_loss(fn, p, data)

    base = value(params)
    keys = jax.random.split(key, num_samples)
    dtype = jnp.result_type(*jax.tree.leaves(params), float)  # float64 under jax_enable_x64

    def body(_, bounds):
        low, high = bounds
        mid = (low + high) / 2
        too_sharp = _noisy_mean(value, params, mid, keys, False, 0.0) - base > target
        return jnp.where(too_sharp, low, mid), jnp.where(too_sharp, mid, high)

    low, high = jax.lax.fori_loop(
        0, num_bisections, body, (jnp.zeros((), dtype), jnp.asarray(sigma_max, dtype))
    )
    return (low + high) / 2
