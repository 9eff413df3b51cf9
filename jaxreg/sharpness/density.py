"""Spectral density of the Hessian by stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxreg._checks import check_key
from jaxreg.sharpness._flat import flattened_operator
from jaxreg.sharpness.hvp import LossFn, hvp
from jaxreg.sharpness.lanczos import lanczos

__all__ = ["SpectralDensity", "spectral_density"]


class SpectralDensity(NamedTuple):
    """SLQ output.

    Attributes:
      grid: eigenvalue grid ``(num_points,)``.
      density: smoothed density on ``grid`` (integrates to ~1).
      nodes: Ritz values ``(num_runs, num_iters)``.
      weights: quadrature weights ``(num_runs, num_iters)``, each run summing to 1;
        rows past ``runs`` (runs an adaptive call did not need) are zeros.
      runs: the number of Lanczos runs used (``num_runs`` unless ``tol`` stopped earlier).

    Example:
      >>> loss = lambda w, batch: 0.5 * jnp.sum(batch * w**2)  # Hessian diag(batch)
      >>> out = spectral_density(loss, jnp.ones(3), jnp.array([[3.0, 1.0, 1.0]]),
      ...                        key=jax.random.key(0), num_iters=3, num_runs=4)
      >>> nodes = out.nodes[out.weights > 1e-6]  # Ritz values that carry weight
      >>> sorted({round(v, 3) for v in nodes.tolist()})
      [1.0, 3.0]
      >>> bool(jnp.allclose(out.weights.sum(axis=1), 1.0))
      True
    """

    grid: jax.Array
    density: jax.Array
    nodes: jax.Array
    weights: jax.Array
    runs: jax.Array


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
    tol: float | None = None,
    min_runs: int = 3,
) -> SpectralDensity:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al., 2019).

    Each run starts Lanczos from a random unit vector ``v``; the Ritz values
    ``θ_i`` of the tridiagonal matrix are the quadrature nodes and the squared
    *first components* of its eigenvectors are the weights ``τ_i``, so that
    ``Σ τ_i f(θ_i) ≈ vᵀ f(H) v`` (exact for polynomials of degree < 2m). The
    density is the run average of ``Σ τ_i N(t; θ_i, σ²)`` on a grid spanning the
    nodes (σ defaults to 1% of that span).

    With ``tol``, runs are added one at a time (inside a ``while_loop``, per member
    under ``vmap``) until the standard error of the runs' trace estimates
    ``n·Σ τ_i θ_i`` is at most ``tol`` times their mean's magnitude, after at
    least ``min_runs`` and at most ``num_runs`` runs; the runs used are those a
    fixed call with ``num_runs`` makes first.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the point whose Hessian is measured.
      data: batches with a leading batch-index axis.
      key: PRNG key of the start vectors.
      num_iters: Lanczos steps per run (quadrature nodes per run).
      num_runs: runs (start vectors); the cap when ``tol`` is given.
      num_points: grid size.
      sigma: Gaussian smoothing width (default 1% of the nodes' span).
      tol: relative standard error of the trace estimate at which to stop adding
        runs; ``None`` runs all ``num_runs``.
      min_runs: runs made before ``tol`` is checked (at least 2, for an error; two runs
        that agree by chance would stop too early, hence 3).

    Returns:
      :class:`SpectralDensity`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda w, batch: 0.5 * jnp.sum(batch * w**2)  # Hessian diag(batch)
      >>> out = spectral_density(loss, jnp.ones(3), jnp.array([[3.0, 1.0, 1.0]]),
      ...                        key=jax.random.key(0), num_iters=3, num_runs=8, tol=0.5)
      >>> 2 <= int(out.runs) <= 8, out.nodes.shape
      (True, (8, 3))
    """
    check_key(key)
    if num_runs < 1:
        raise ValueError(f"num_runs must be at least 1, got {num_runs}")
    if tol is not None:
        if not tol >= 0:
            raise ValueError(f"tol must be non-negative, got {tol}")
        if not 2 <= min_runs <= num_runs:
            raise ValueError(f"min_runs must lie in [2, num_runs={num_runs}], got {min_runs}")
    matvec, flat, _ = flattened_operator(hvp(loss_fn, params, data), params)
    num_iters = min(num_iters, flat.size)
    keys = jax.random.split(key, num_runs)

    def run(run_key):
        start = jax.random.normal(run_key, flat.shape, flat.dtype)
        theta, s = jnp.linalg.eigh(lanczos(matvec, start, num_iters).tridiagonal())
        return theta, s[0] ** 2

    if tol is None:
        nodes, weights = jax.lax.map(run, keys)
        runs = jnp.asarray(num_runs, jnp.int32)
    else:
        nodes, weights, runs = _adaptive_runs(run, keys, flat.size, num_iters, tol, min_runs)
    used = jnp.arange(num_runs) < runs
    low = jnp.min(jnp.where(used[:, None], nodes, jnp.inf))
    high = jnp.max(jnp.where(used[:, None], nodes, -jnp.inf))
    span = jnp.maximum(high - low, 1e-6)
    width = 0.01 * span if sigma is None else sigma
    grid = jnp.linspace(low - 0.05 * span - 3 * width, high + 0.05 * span + 3 * width, num_points)
    gauss = jnp.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / width) ** 2) / (
        width * jnp.sqrt(2 * jnp.pi)
    )
    density = jnp.sum(gauss * weights[None], axis=(1, 2)) / runs
    return SpectralDensity(grid, density, nodes, weights, runs)


def _adaptive_runs(run, keys, n: int, num_iters: int, tol: float, min_runs: int):
    """Lanczos runs ``keys[0], keys[1], ...`` until the trace estimate's relative standard
    error is at most ``tol`` (after ``min_runs``); unused rows stay zero."""
    num_runs = len(keys)
    shapes = jax.eval_shape(run, keys[0])
    nodes = jnp.zeros((num_runs, num_iters), shapes[0].dtype)
    weights = jnp.zeros((num_runs, num_iters), shapes[1].dtype)

    def relative_error(estimates, count):
        used = jnp.arange(num_runs) < count
        mean = jnp.sum(jnp.where(used, estimates, 0)) / count
        variance = jnp.sum(jnp.where(used, (estimates - mean) ** 2, 0)) / (count - 1)
        return jnp.sqrt(variance / count) / jnp.maximum(jnp.abs(mean), jnp.finfo(mean.dtype).tiny)

    def unfinished(state):
        count, _, _, estimates = state
        done = (count >= min_runs) & (relative_error(estimates, jnp.maximum(count, 2)) <= tol)
        return (count < num_runs) & ~done

    def step(state):
        count, nodes, weights, estimates = state
        theta, tau = run(keys[count])
        return (
            count + 1,
            nodes.at[count].set(theta),
            weights.at[count].set(tau),
            estimates.at[count].set(n * jnp.sum(tau * theta)),
        )

    state = (jnp.zeros((), jnp.int32), nodes, weights, jnp.zeros(num_runs, shapes[0].dtype))
    count, nodes, weights, _ = jax.lax.while_loop(unfinished, step, state)
    return nodes, weights, count
