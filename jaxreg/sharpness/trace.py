"""Hessian trace: Hutchinson and Hutch++ with standard errors; probes vmapped in blocks."""

from __future__ import annotations

from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp

from jaxreg.sharpness.hvp import LossFn, hvp
from jaxreg.sharpness.lanczos import _flat_matvec

__all__ = ["hessian_trace"]


def _rademacher(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    return jax.random.rademacher(key, shape, dtype)


def _apply_blocks(matvec, vectors: jax.Array, probe_batch: int) -> jax.Array:
    """``matvec`` on each row of ``vectors``, ``probe_batch`` rows at a time (vmap inside)."""
    return jax.lax.map(matvec, vectors, batch_size=probe_batch)


def hessian_trace(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    num_samples: int = 60,
    method: Literal["hutch++", "hutchinson"] = "hutch++",
    probe_batch: int = 8,
) -> tuple[jax.Array, jax.Array]:
    """Stochastic estimate of ``tr(H)`` of the dataset loss, and its standard error.

    * ``"hutchinson"``: mean of ``zᵀHz`` over ``num_samples`` Rademacher probes.
    * ``"hutch++"`` (Meyer et al., 2021): a third of the HVPs build a sketch
      ``Q = qr(H S)`` whose part of the trace is computed exactly; the rest
      estimate the trace of the deflated remainder ``(I - QQᵀ) H (I - QQᵀ)``
      with Hutchinson. Far lower variance when the spectrum decays, as Hessian
      spectra of neural networks do. The standard error is that of the
      remainder's Hutchinson part.

    HVPs run ``probe_batch`` at a time under ``vmap`` (memory vs speed).

    Returns:
      ``(estimate, standard_error)``.
    """
    if num_samples < 3:
        raise ValueError(f"num_samples must be >= 3, got {num_samples}")
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}")
    matvec, flat, _ = _flat_matvec(hvp(loss_fn, params, data), params)
    n = flat.size
    if method == "hutchinson":
        probes = _rademacher(key, (num_samples, n), flat.dtype)
        quad = jnp.sum(probes * _apply_blocks(matvec, probes, probe_batch), axis=1)
        return jnp.mean(quad), jnp.std(quad, ddof=1) / jnp.sqrt(num_samples)
    sketch_size = min(num_samples // 3, n)
    residual_size = num_samples - 2 * sketch_size
    sketch_key, probe_key = jax.random.split(key)
    sketch = _rademacher(sketch_key, (sketch_size, n), flat.dtype)
    q, _ = jnp.linalg.qr(_apply_blocks(matvec, sketch, probe_batch).T)  # (n, s)
    exact = jnp.trace(q.T @ _apply_blocks(matvec, q.T, probe_batch).T)
    probes = _rademacher(probe_key, (residual_size, n), flat.dtype)
    deflated = probes - (probes @ q) @ q.T
    h_deflated = _apply_blocks(matvec, deflated, probe_batch)
    quad = jnp.sum(deflated * h_deflated, axis=1)
    return exact + jnp.mean(quad), jnp.std(quad, ddof=1) / jnp.sqrt(residual_size)
