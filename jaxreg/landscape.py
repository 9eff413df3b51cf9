"""Loss-landscape slices with filter normalization (Li et al., 2018) and linear interpolation.

Grids are evaluated with ``jax.lax.map`` over vmapped chunks of points, not a
Python loop, so a 25×25 slice is one compiled call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg.data import dataset_loss

LossFn = Callable[[chex.ArrayTree, Any], jax.Array]

__all__ = ["interpolate", "normalize_direction", "random_direction", "slice_1d", "slice_2d"]

Normalization = Literal["filter", "layer", "none"]


def normalize_direction(
    direction: chex.ArrayTree,
    params: chex.ArrayTree,
    normalization: Normalization = "filter",
    *,
    ignore_bias: bool = True,
) -> chex.ArrayTree:
    """Rescale ``direction`` to the scale of ``params``.

    ``"filter"``: every filter of ``direction`` gets the norm of the matching
    filter of ``params`` — a filter is one output unit, i.e. a slice along the
    last axis of a kernel (all inputs and spatial positions). ``"layer"``: per
    leaf. ``"none"``: unchanged. With ``ignore_bias``, leaves with ``ndim <= 1``
    (biases, norm scales) get a zero direction, as in Li et al.; otherwise they
    are normalized as one filter.

    Example:
      >>> params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "bias": jnp.ones(2)}
      >>> direction = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
      >>> d = normalize_direction(direction, params)
      >>> norms = jnp.linalg.norm(d["kernel"], axis=0)  # each filter gets its params' norm
      >>> [round(v, 4) for v in norms.tolist()], d["bias"].tolist()
      ([5.0, 1.0], [0.0, 0.0])
    """
    if normalization not in ("filter", "layer", "none"):
        raise ValueError(
            f"normalization must be 'filter', 'layer' or 'none', got {normalization!r}"
        )

    def scale(d, p):
        if normalization == "none":
            return d
        if p.ndim <= 1 and ignore_bias:
            return jnp.zeros_like(d)
        if normalization == "layer" or p.ndim <= 1:
            return d * jnp.linalg.norm(p) / (jnp.linalg.norm(d) + 1e-10)
        axes = tuple(range(p.ndim - 1))
        d_norm = jnp.sqrt(jnp.sum(d**2, axis=axes, keepdims=True))
        p_norm = jnp.sqrt(jnp.sum(p**2, axis=axes, keepdims=True))
        return d * p_norm / (d_norm + 1e-10)

    return jax.tree.map(scale, direction, params)


def random_direction(
    key: jax.Array,
    params: chex.ArrayTree,
    normalization: Normalization = "filter",
    *,
    ignore_bias: bool = True,
) -> chex.ArrayTree:
    """A Gaussian direction in parameter space, normalized by :func:`normalize_direction`.

    Example:
      >>> params = {"kernel": 2.0 * jnp.ones((4, 3)), "bias": jnp.ones(3)}
      >>> d = random_direction(jax.random.key(0), params)
      >>> [round(v, 4) for v in jnp.linalg.norm(d["kernel"], axis=0).tolist()]  # ‖filter‖ = 4
      [4.0, 4.0, 4.0]
    """
    direction = optax.tree.random_like(key, params)
    return normalize_direction(direction, params, normalization, ignore_bias=ignore_bias)


def _losses_at(loss_fn: LossFn, params, data, directions, coefficients, chunk_size: int):
    def loss_at(coef):
        point = jax.tree.map(
            lambda p, *ds: p + sum(c * d for c, d in zip(coef, ds, strict=True)),
            params,
            *directions,
        )
        return dataset_loss(loss_fn, point, data)

    return jax.lax.map(loss_at, coefficients, batch_size=chunk_size)


def slice_1d(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    span: ArrayLike = 1.0,
    resolution: int = 51,
    normalization: Normalization = "filter",
    direction: chex.ArrayTree | None = None,
    chunk_size: int = 16,
) -> tuple[jax.Array, jax.Array]:
    """Loss along ``params + α·d`` for ``α`` in ``[-span, span]``; ``d`` random and normalized.

    Returns:
      ``(alphas, losses)``.

    Example:
      >>> from jaxreg.data import batches
      >>> data = batches(jnp.zeros((4, 1)), jnp.zeros(4), 2)
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(w**2)  # curvature 1 in every direction
      >>> alphas, losses = slice_1d(
      ...     loss_fn, jnp.zeros(3), data, key=jax.random.key(0), resolution=3,
      ...     normalization="none", direction=jnp.array([1.0, 0.0, 0.0]))
      >>> alphas.tolist(), losses.tolist()
      ([-1.0, 0.0, 1.0], [0.5, 0.0, 0.5])
    """
    d = random_direction(key, params, normalization) if direction is None else direction
    alphas = jnp.linspace(-span, span, resolution)
    return alphas, _losses_at(loss_fn, params, data, (d,), alphas[:, None], chunk_size)


def slice_2d(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    span: ArrayLike = 1.0,
    resolution: int = 25,
    normalization: Normalization = "filter",
    directions: tuple[chex.ArrayTree, chex.ArrayTree] | None = None,
    chunk_size: int = 16,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Loss on the plane ``params + α·d₁ + β·d₂`` (Li et al., 2018, filter-normalized).

    Args:
      key: PRNG key for the two random directions (ignored with ``directions``).
      span: α and β range over ``[-span, span]``.
      resolution: points per axis (static).
      normalization: ``"filter"``, ``"layer"`` or ``"none"`` for random directions.
      directions: explicit ``(d₁, d₂)``, used as given.
      chunk_size: grid points evaluated per vmapped chunk.

    Returns:
      ``(alphas, betas, losses[resolution, resolution])`` with ``losses[i, j]``
      at ``(alphas[i], betas[j])``.

    Example:
      >>> from jaxreg.data import batches
      >>> data = batches(jnp.zeros((4, 1)), jnp.zeros(4), 2)
      >>> loss_fn = lambda w, batch: 0.5 * (w[0] ** 2 + 4 * w[1] ** 2)
      >>> alphas, betas, losses = slice_2d(
      ...     loss_fn, jnp.zeros(2), data, key=jax.random.key(0), resolution=3,
      ...     directions=(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])))
      >>> losses.tolist()  # rows α, columns β
      [[2.5, 0.5, 2.5], [2.0, 0.0, 2.0], [2.5, 0.5, 2.5]]
    """
    if directions is None:
        k1, k2 = jax.random.split(key)
        directions = (
            random_direction(k1, params, normalization),
            random_direction(k2, params, normalization),
        )
    alphas = jnp.linspace(-span, span, resolution)
    grid = jnp.stack(jnp.meshgrid(alphas, alphas, indexing="ij"), axis=-1).reshape(-1, 2)
    losses = _losses_at(loss_fn, params, data, directions, grid, chunk_size)
    return alphas, alphas, losses.reshape(resolution, resolution)


def interpolate(
    params_a: chex.ArrayTree, params_b: chex.ArrayTree, num: int = 25, *, extrapolate: float = 0.0
) -> tuple[jax.Array, chex.ArrayTree]:
    """Points ``(1-t)·a + t·b`` for ``t`` in ``[-extrapolate, 1+extrapolate]``, stacked.

    Returns:
      ``(ts, params)`` with a leading axis ``num`` on every leaf; evaluate them
      with ``jax.vmap`` or :func:`jax.lax.map`.

    Example:
      >>> ts, points = interpolate({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 3)
      >>> points["w"][:, 0].tolist()
      [0.0, 0.5, 1.0]
    """
    ts = jnp.linspace(-extrapolate, 1 + extrapolate, num)
    points = jax.tree.map(
        lambda a, b: (
            (1 - ts.reshape((-1,) + (1,) * a.ndim)) * a + ts.reshape((-1,) + (1,) * a.ndim) * b
        ),
        params_a,
        params_b,
    )
    return ts, points
