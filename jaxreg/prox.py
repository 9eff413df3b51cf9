"""Proximal operators: the exact minimizers that make L1-type penalties produce true zeros.

Each ``prox.f(params, threshold, ...)`` returns

    argmin_z  ½ ||z - params||²  +  threshold · f(z)

leafwise over the selected leaves (others are returned unchanged, bit for
bit), with ``f`` *exactly* the matching function of :mod:`jaxreg.penalties`.
In a proximal-gradient step the threshold is ``learning_rate · strength``.

Note on scaling: ``prox.l2`` is the prox of ``threshold · ½||z||²``, i.e.
``params / (1 + threshold)``, consistent with ``penalties.l2 = ½Σw²``; a prox
written for ``threshold · ||z||²`` would divide by ``1 + 2·threshold`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, check_non_negative
from jaxreg.masks import MaskLike, resolve
from jaxreg.penalties import group_norms

__all__ = ["elastic_net", "elastic_net_leaf", "group_lasso", "l1", "l2", "soft_threshold"]


def soft_threshold(x: jax.Array, threshold: ArrayLike) -> jax.Array:
    """``sign(x)·max(|x| - threshold, 0)``: exact zeros wherever ``|x| <= threshold``.

    Example:
      >>> soft_threshold(jnp.array([-2.0, -0.5, 0.3, 1.5]), 1.0).tolist()
      [-1.0, -0.0, 0.0, 0.5]
    """
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0).astype(x.dtype)


def _map_selected(
    fn: Callable[[jax.Array], jax.Array], params: chex.ArrayTree, mask: MaskLike | None
) -> chex.ArrayTree:
    selected = resolve(mask, params)
    return jax.tree.map(lambda leaf, keep: fn(leaf) if keep else leaf, params, selected)


def l1(
    params: chex.ArrayTree, threshold: ArrayLike, mask: MaskLike | None = None
) -> chex.ArrayTree:
    """Prox of ``threshold · Σ|z|``: soft thresholding.

    Example:
      >>> l1({"w": jnp.array([-2.0, 0.5, 3.0])}, 1.0)["w"].tolist()
      [-1.0, 0.0, 2.0]
    """
    check_non_negative(threshold, "threshold")
    return _map_selected(lambda w: soft_threshold(w, threshold), params, mask)


def l2(
    params: chex.ArrayTree, threshold: ArrayLike, mask: MaskLike | None = None
) -> chex.ArrayTree:
    """Prox of ``threshold · ½Σz²``: ``params / (1 + threshold)``.

    Example:
      >>> l2({"w": jnp.array([2.0])}, 1.0)["w"].tolist()
      [1.0]
    """
    check_non_negative(threshold, "threshold")
    return _map_selected(lambda w: (w / (1 + threshold)).astype(w.dtype), params, mask)


def elastic_net(
    params: chex.ArrayTree,
    threshold: ArrayLike,
    l1_ratio: ArrayLike,
    mask: MaskLike | None = None,
) -> chex.ArrayTree:
    """Prox of ``threshold · (ρΣ|z| + (1-ρ)/2·Σz²)``: ``soft(w, tρ) / (1 + t(1-ρ))``.

    Example:
      >>> out = elastic_net({"w": jnp.array([3.0, 0.2])}, 1.0, l1_ratio=0.5)
      >>> [round(v, 4) for v in out["w"].tolist()]
      [1.6667, 0.0]
    """
    check_non_negative(threshold, "threshold")
    check_interval(l1_ratio, "l1_ratio", 0.0, 1.0, closed_high=True)

    return _map_selected(lambda w: elastic_net_leaf(w, threshold, l1_ratio), params, mask)


def elastic_net_leaf(w: jax.Array, threshold: ArrayLike, l1_ratio: ArrayLike) -> jax.Array:
    """:func:`elastic_net` of one array; ``threshold`` may be an array (one per coordinate).

    Example:
      >>> elastic_net_leaf(jnp.array([3.0, 3.0]), jnp.array([1.0, 4.0]), 1.0).tolist()
      [2.0, 0.0]
    """
    shrunk = soft_threshold(w, threshold * l1_ratio)
    return (shrunk / (1 + threshold * (1 - l1_ratio))).astype(w.dtype)


def group_lasso(
    params: chex.ArrayTree,
    threshold: ArrayLike,
    group_axis: int = -1,
    mask: MaskLike | None = None,
) -> chex.ArrayTree:
    """Prox of ``threshold · Σ_g ||z_g||₂`` (block soft thresholding); whole groups become 0.

    Groups are slices along ``group_axis`` as in :func:`jaxreg.penalties.group_lasso`:
    ``w_g ← w_g · max(0, 1 - threshold / ||w_g||)``.

    Example:
      >>> w = jnp.array([[3.0, 0.1], [4.0, 0.1]])
      >>> [[round(v, 4) for v in row] for row in group_lasso({"w": w}, 1.0)["w"].tolist()]
      [[2.4, 0.0], [3.2, 0.0]]
    """
    check_non_negative(threshold, "threshold")

    def prox(w):
        if w.ndim == 0:
            return soft_threshold(w, threshold)
        norms = group_norms(w, group_axis)
        safe = jnp.where(norms > 0, norms, 1.0)
        factor = jnp.where(norms > threshold, 1 - threshold / safe, 0.0)
        shape = [1] * w.ndim
        shape[group_axis % w.ndim] = -1
        return (w * factor.reshape(shape)).astype(w.dtype)

    return _map_selected(prox, params, mask)
