"""The posterior precision's scale and, for kron/ekfac, its eigenvalues."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ggn_scale(laplace, sigma_noise) -> jax.Array:
    """``N/σ²`` (regression) or ``N``: the weight of the mean GGN in the posterior precision."""
    if laplace.likelihood == "classification":
        return laplace.num_data
    return laplace.num_data / jnp.square(jnp.asarray(sigma_noise, laplace.mean.dtype))


def eigenbasis_precision(laplace, delta: jax.Array, sigma_noise) -> jax.Array:
    """kron/ekfac: the posterior precision eigenvalues ``sλ + δ`` ``(P,)``, ``δ`` per parameter."""
    return ggn_scale(laplace, sigma_noise) * laplace.eigenvalues + delta
