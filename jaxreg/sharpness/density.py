"""Spectral density of the Hessian by stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxreg.sharpness.hvp import LossFn, hvp
from jaxreg.sharpness.lanczos import _flat_matvec, lanczos

__all__ = ["SpectralDensity", "spectral_density"]


class SpectralDensity(NamedTuple):
    """SLQ output.

    Attributes:
      grid: eigenvalue grid ``(num_points,)``.
      density: smoothed density on ``grid`` (integrates to ~1).
      nodes: Ritz values ``(num_runs, num_iters)``.
      weights: quadrature weights ``(num_runs, num_iters)``, each run summing to 1.
    """

    grid: jax.Array
    density: jax.Array
    nodes: jax.Array
    weights: jax.Array


def spectral_density(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    num_iters: int = 80,
    num_runs: int = 4,
    num_points: int = 512,
    sigma: float | None = None,
) -> SpectralDensity:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al., 2019).

    Each run starts Lanczos from a random unit vector ``v``; the Ritz values
    ``θ_i`` of the tridiagonal matrix are the quadrature nodes and the squared
    *first components* of its eigenvectors are the weights ``τ_i``, so that
    ``Σ τ_i f(θ_i) ≈ vᵀ f(H) v`` (exact for polynomials of degree < 2m). The
    density is the run average of ``Σ τ_i N(t; θ_i, σ²)`` on a grid spanning the
    nodes (σ defaults to 1% of that span).

    Returns:
      :class:`SpectralDensity`.
    """
    matvec, flat, _ = _flat_matvec(hvp(loss_fn, params, data), params)
    num_iters = min(num_iters, flat.size)

    def run(run_key):
        start = jax.random.normal(run_key, flat.shape, flat.dtype)
        theta, s = jnp.linalg.eigh(lanczos(matvec, start, num_iters).tridiagonal())
        return theta, s[0] ** 2

    nodes, weights = jax.lax.map(run, jax.random.split(key, num_runs))
    low, high = jnp.min(nodes), jnp.max(nodes)
    span = jnp.maximum(high - low, 1e-6)
    width = 0.01 * span if sigma is None else sigma
    grid = jnp.linspace(low - 0.05 * span - 3 * width, high + 0.05 * span + 3 * width, num_points)
    gauss = jnp.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / width) ** 2) / (
        width * jnp.sqrt(2 * jnp.pi)
    )
    density = jnp.sum(gauss * weights[None], axis=(1, 2)) / num_runs
    return SpectralDensity(grid, density, nodes, weights)
