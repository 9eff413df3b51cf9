"""Members over devices and processes: a chunk placed on the mesh, outputs gathered back."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding


def place(tree: chex.ArrayTree, sharding: NamedSharding | None) -> chex.ArrayTree:
    """Put a chunk on the mesh; across processes each one supplies its own devices' slices."""
    if sharding is None:
        return jax.tree.map(jnp.asarray, tree)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def global_array(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))
            # Key arrays travel as their raw data (the member axis leads; the rest is replicated).
            array = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
            return jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(global_array, tree)


def gather(leaf: jax.Array) -> np.ndarray:
    """A chunk output as a host array on every process (an all-gather across processes)."""
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(leaf)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
