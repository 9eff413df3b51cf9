"""Rotations into and out of a block-diagonal (KFAC/EKFAC) curvature's eigenbasis.

Such a curvature keeps, per group (a selected leaf), one orthogonal matrix per
axis of the leaf (``()`` for a group kept diagonal): the group's eigenvectors
are their Kronecker product in the leaf's row-major order. ``blocks`` below is
anything with ``group_sizes``, ``group_shapes`` and ``bases`` (a
:class:`jaxreg.laplace.Laplace`, or :class:`Blocks`). Nothing ``P × P`` is
ever formed: a rotation contracts each axis with its small matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Blocks(NamedTuple):
    """A block-diagonal eigenbasis: per group its size, leaf shape and per-axis bases."""

    group_sizes: tuple[int, ...]
    group_shapes: tuple[tuple[int, ...], ...]
    bases: tuple


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


def _rotate(blocks, values: jax.Array, forward: bool, square: bool = False) -> jax.Array:
    splits = np.cumsum(blocks.group_sizes)[:-1].tolist()
    parts = jnp.split(values, splits, axis=-1)
    rotated = [
        _rotate_group(part, shape, bases, forward, square)
        for part, shape, bases in zip(parts, blocks.group_shapes, blocks.bases, strict=True)
    ]
    return jnp.concatenate(rotated, axis=-1)


def to_eigenbasis(blocks, values: jax.Array) -> jax.Array:
    """``Qᵀ v`` over the last axis (``(..., P)``)."""
    return _rotate(blocks, values, forward=True)


def from_eigenbasis(blocks, values: jax.Array, square: bool = False) -> jax.Array:
    """``Q c`` over the last axis; with ``square``, ``(Q ⊙ Q) c``: ``diag(Q diag(c) Qᵀ)``."""
    return _rotate(blocks, values, forward=False, square=square)


def dense_from_eigenbasis(blocks, scales: jax.Array) -> jax.Array:
    """``Q diag(scales)`` as a dense ``(P, P)`` matrix (small models only)."""
    return from_eigenbasis(blocks, jnp.diag(scales)).T
