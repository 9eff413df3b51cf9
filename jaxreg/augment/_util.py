"""Per-example randomness for batch-level augmentations."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def check_rank(x: jax.Array, ranks: tuple[int, ...], name: str, layout: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim not in ranks:
        raise ValueError(f"{name} must be a batch shaped {layout}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    return x


def per_example(fn: Callable[..., jax.Array], key: jax.Array, batch: jax.Array) -> jax.Array:
    """``vmap(fn)(split(key, n), batch)``: every example gets its own key (no shared key)."""
    keys = jax.random.split(key, batch.shape[0])
    return jax.vmap(fn)(keys, batch)


def batch_where(selected: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """Per-example select along the leading axis."""
    return jnp.where(selected.reshape(selected.shape + (1,) * (new.ndim - 1)), new, old)
