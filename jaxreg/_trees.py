"""Pytree helpers shared by the noise, sharpness and landscape modules."""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax


def random_like(
    key: jax.Array,
    tree: chex.ArrayTree,
    sampler: Callable[..., jax.Array] = jax.random.normal,
) -> chex.ArrayTree:
    """A tree shaped like ``tree`` of ``sampler(key_i, shape, dtype)`` draws, one key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [sampler(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves, strict=True)],
    )
