"""Explicit penalties as pure functions of a params pytree, and ``penalized(loss_fn, ...)``.

Conventions follow scikit-learn so the numbers can be checked against it:
``l2 = ½Σw²``, ``l1 = Σ|w|``, ``elastic_net = ρΣ|w| + (1-ρ)/2·Σw²``. Leaves
not selected by ``mask`` (optax semantics, see :mod:`jaxreg.masks`) do not count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, check_non_negative
from jaxreg.masks import MaskLike, resolve

__all__ = [
    "elastic_net",
    "group_lasso",
    "group_norms",
    "l1",
    "l2",
    "orthogonality",
    "penalized",
]

LossFn = Callable[[chex.ArrayTree, Any], jax.Array]


def _masked_sum(
    fn: Callable[[jax.Array], jax.Array], params: chex.ArrayTree, mask: MaskLike | None
) -> jax.Array:
    selected = resolve(mask, params)
    terms = [
        jnp.sum(fn(leaf))
        for leaf, keep in zip(jax.tree.leaves(params), jax.tree.leaves(selected), strict=True)
        if keep
    ]
    return sum(terms, jnp.zeros((), jnp.result_type(float)))


def l2(params: chex.ArrayTree, mask: MaskLike | None = None) -> jax.Array:
    """``½ Σ w²`` over the selected leaves (the "L2 penalty"; its gradient is ``w``).

    Example:
      >>> float(l2({"w": jnp.array([3.0, 4.0])}))
      12.5
    """
    return _masked_sum(jnp.square, params, mask) / 2


def l1(params: chex.ArrayTree, mask: MaskLike | None = None) -> jax.Array:
    """``Σ |w|`` over the selected leaves.

    Example:
      >>> float(l1({"w": jnp.array([3.0, -4.0]), "b": jnp.ones(2)}, mask={"w": True, "b": False}))
      7.0
    """
    return _masked_sum(jnp.abs, params, mask)


def elastic_net(
    params: chex.ArrayTree, l1_ratio: ArrayLike, mask: MaskLike | None = None
) -> jax.Array:
    """``l1_ratio·Σ|w| + (1 - l1_ratio)/2·Σw²`` (scikit-learn's ``ElasticNet`` convention).

    Times ``alpha`` this is exactly the penalty of ``sklearn.linear_model.ElasticNet``.

    Example:
      >>> float(elastic_net({"w": jnp.array([2.0])}, l1_ratio=0.5))
      2.0
    """
    check_interval(l1_ratio, "l1_ratio", 0.0, 1.0, closed_high=True)
    return l1_ratio * l1(params, mask) + (1 - l1_ratio) * l2(params, mask)


def group_norms(leaf: jax.Array, group_axis: int = -1) -> jax.Array:
    """Euclidean norm of each group: group ``i`` is the slice ``i`` along ``group_axis``.

    For a dense kernel ``(in, out)``, ``group_axis=-1`` groups each output unit's
    incoming weights (pruning units), ``group_axis=0`` each input's outgoing
    weights (feature selection); for a conv kernel ``(*spatial, in, out)``,
    ``-1`` groups output filters. A 0-d leaf is one group. The norm is safe:
    an all-zero group (what the proximal group step produces) has gradient 0,
    a valid subgradient, never NaN.

    Example:
      >>> kernel = jnp.array([[3.0, 0.0], [4.0, 0.0]])  # (in, out): unit 0 has norm 5, unit 1 is 0
      >>> group_norms(kernel).tolist(), group_norms(kernel, group_axis=0).tolist()
      ([5.0, 0.0], [3.0, 4.0])
    """
    if leaf.ndim == 0:
        return jnp.abs(leaf)[None]
    axis = group_axis % leaf.ndim
    others = tuple(i for i in range(leaf.ndim) if i != axis)
    if not others:  # a vector grouped along its only axis: every entry is its own group
        return jnp.abs(leaf)
    return optax.safe_norm(leaf, 0.0, axis=others)


def group_lasso(
    params: chex.ArrayTree,
    group_axis: int = -1,
    mask: MaskLike | None = None,
    *,
    scale_by_size: bool = False,
) -> jax.Array:
    """Group lasso ``Σ_g c_g ||w_g||₂``; groups are slices along ``group_axis``.

    See :func:`group_norms` for which axis groups what.

    ``c_g = 1``, or ``sqrt(group size)`` with ``scale_by_size`` (Yuan & Lin, 2006).

    Example:
      >>> w = jnp.array([[3.0, 0.0], [4.0, 1.0]])
      >>> float(group_lasso({"w": w}, group_axis=-1))  # columns: ||(3,4)|| + ||(0,1)||
      6.0
    """

    def penalty(leaf):
        scale = (
            jnp.sqrt(leaf.size / max(leaf.shape[group_axis], 1))
            if scale_by_size and leaf.ndim
            else 1.0
        )
        return scale * jnp.sum(group_norms(leaf, group_axis))

    return _masked_sum(penalty, params, mask)


def orthogonality(
    params: chex.ArrayTree, mask: MaskLike | None = None, *, double: bool = False
) -> jax.Array:
    """Soft orthogonality ``Σ ‖WᵀW − I‖²_F`` over the selected leaves of ≥ 2 dimensions.

    Each kernel is read as ``W`` of shape ``(fan_in, units)``: a dense kernel
    ``(in, out)`` as is, a conv kernel ``(..., in, out)`` reshaped to
    ``(prod(...)·in, out)``, so ``WᵀW`` compares the units' incoming weight vectors
    (Xie et al., 2017). ``double=True`` adds ``‖WWᵀ − I‖²_F`` (double soft
    orthogonality, Bansal et al., 2018), which also constrains kernels with more
    units than inputs, where ``WᵀW = I`` is impossible. Leaves with fewer than two
    dimensions (biases, scales) contribute nothing.

    Example:
      >>> float(orthogonality({"w": jnp.eye(3), "b": jnp.ones(3)}))
      0.0
      >>> float(orthogonality({"w": 2 * jnp.eye(2)}))  # ‖4I − I‖² = 2·9
      18.0
    """

    def penalty(leaf: jax.Array) -> jax.Array:
        if leaf.ndim < 2:
            return jnp.zeros((), leaf.dtype)
        w = leaf.reshape(-1, leaf.shape[-1])
        total = jnp.sum(jnp.square(w.T @ w - jnp.eye(w.shape[1], dtype=w.dtype)))
        if double:
            total = total + jnp.sum(jnp.square(w @ w.T - jnp.eye(w.shape[0], dtype=w.dtype)))
        return total

    return _masked_sum(penalty, params, mask)


def penalized(
    loss_fn: LossFn,
    penalty: Callable[..., jax.Array],
    strength: ArrayLike,
    mask: MaskLike | None = None,
) -> LossFn:
    """``loss_fn(params, batch) + strength · penalty(params, mask=mask)`` as a new ``loss_fn``.

    ``strength`` may be traced (a sweep over strengths compiles once). For a
    penalty with extra arguments use ``functools.partial``, e.g.
    ``partial(elastic_net, l1_ratio=0.5)``.

    Example:
      >>> loss_fn = lambda p, batch: jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2) / 2
      >>> ridge = penalized(loss_fn, l2, strength=0.1)
      >>> batch = {"x": jnp.eye(2), "y": jnp.ones(2)}
      >>> round(float(ridge({"w": jnp.ones(2)}, batch)), 6)
      0.1
    """
    check_non_negative(strength, "strength")
    if not callable(penalty):
        raise TypeError(f"penalty must be callable, got {type(penalty).__name__}")

    def regularized_loss(params: chex.ArrayTree, batch: Any) -> jax.Array:
        return loss_fn(params, batch) + strength * penalty(params, mask=mask)

    return regularized_loss
