"""Rotations into and out of a block-structured (KFAC/EKFAC) Laplace's eigenbasis.

A ``"kron"``/``"ekfac"`` Laplace keeps, per group (selected leaf), one
orthogonal matrix per axis of the leaf (``()`` for a group kept diagonal): the
group's eigenvectors are their Kronecker product in the leaf's row-major
order, and its eigenvalues are ``Laplace.eigenvalues``. Nothing ``P × P`` is
ever formed: a rotation contracts each axis with its small matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _rotate_group(values: jax.Array, shape: tuple, bases: tuple, forward: bool, square: bool):
    lead = values.shape[:-1]
    block = values.reshape(*lead, *shape)
    offset = len(lead)
    for axis, basis in enumerate(bases):
        basis = jnp.square(basis) if square else basis
        # forward: Qᵀ v (sum over the leaf's index); backward: Q c (sum over the eigen-index).
        block = jnp.moveaxis(
            jnp.tensordot(block, basis if forward else basis.T, axes=([offset + axis], [0])),
            -1,
            offset + axis,
        )
    return block.reshape(*lead, -1)


def _rotate(laplace, values: jax.Array, forward: bool, square: bool = False) -> jax.Array:
    splits = np.cumsum(laplace.group_sizes)[:-1].tolist()
    parts = jnp.split(values, splits, axis=-1)
    rotated = [
        _rotate_group(part, shape, bases, forward, square)
        for part, shape, bases in zip(parts, laplace.group_shapes, laplace.bases, strict=True)
    ]
    return jnp.concatenate(rotated, axis=-1)


def to_eigenbasis(laplace, values: jax.Array) -> jax.Array:
    """``Qᵀ v`` over the last axis (``(..., P)``)."""
    return _rotate(laplace, values, forward=True)


def from_eigenbasis(laplace, values: jax.Array, square: bool = False) -> jax.Array:
    """``Q c`` over the last axis; with ``square``, ``(Q ⊙ Q) c``: ``diag(Q diag(c) Qᵀ)``."""
    return _rotate(laplace, values, forward=False, square=square)


def dense_from_eigenbasis(laplace, scales: jax.Array) -> jax.Array:
    """``Q diag(scales)`` as a dense ``(P, P)`` matrix (small models only)."""
    return from_eigenbasis(laplace, jnp.diag(scales)).T


def ggn_scale(laplace, sigma_noise) -> jax.Array:
    """``N/σ²`` (regression) or ``N``: the weight of the mean GGN in the posterior precision."""
    if laplace.likelihood == "classification":
        return laplace.num_data
    return laplace.num_data / jnp.square(jnp.asarray(sigma_noise, laplace.mean.dtype))


def eigenbasis_precision(laplace, delta: jax.Array, sigma_noise) -> jax.Array:
    """kron/ekfac: the posterior precision eigenvalues ``sλ + δ`` ``(P,)``, ``δ`` per parameter."""
    return ggn_scale(laplace, sigma_noise) * laplace.eigenvalues + delta
