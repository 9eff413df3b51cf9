"""Regression: the observation noise and the prior precision chosen together by the evidence.

For a Gaussian likelihood the Laplace evidence is a function of both ``δ`` (the
prior precision) and ``σ`` (the noise). Maximizing it over both is MacKay's
(1992) evidence framework: at the optimum the effective number of parameters
``γ = P − Σ δ_p Σ_pp`` splits the data between prior and noise,
``δ = γ/‖θ*‖²`` and ``σ² = Σ‖fₙ − yₙ‖² / (N·C − γ)``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg.laplace.evidence import log_marginal_likelihood, mackay_prior_step
from jaxreg.laplace.posterior import Laplace

__all__ = ["NoiseAndPrior", "optimize_noise_and_prior"]


class NoiseAndPrior(NamedTuple):
    """The evidence-maximizing hyperparameters of a regression Laplace.

    Attributes:
      prior_precision: ``δ``: a scalar, or one value per group.
      sigma_noise: ``σ``, the Gaussian observation noise.

    Example:
      >>> NoiseAndPrior(1.0, 0.5).sigma_noise
      0.5
    """

    prior_precision: jax.Array
    sigma_noise: jax.Array


def _mackay_step(laplace: Laplace, delta, sigma, per_group: bool):
    new_delta, gamma = mackay_prior_step(laplace, delta, per_group, sigma)
    residual_dof = laplace.num_data * laplace.num_outputs - jnp.sum(gamma)
    new_sigma = jnp.sqrt(laplace.fit_term / jnp.maximum(residual_dof, 1.0))
    return new_delta, new_sigma


def optimize_noise_and_prior(
    laplace: Laplace,
    *,
    method: Literal["gradient", "mackay"] = "mackay",
    per_group: bool = False,
    init_prior_precision: ArrayLike = 1.0,
    init_sigma_noise: ArrayLike = 1.0,
    num_steps: int = 100,
    learning_rate: float = 0.1,
) -> NoiseAndPrior:
    """``δ`` and ``σ`` that maximize :func:`log_marginal_likelihood` of a regression Laplace.

    ``"mackay"``: the fixed-point updates above, together; ``"gradient"``: Adam on
    ``(log δ, log σ)``. One ``lax.scan`` either way, so ``vmap`` tunes a sweep at once.

    Args:
      laplace: a fitted :class:`Laplace` with ``likelihood="regression"``.
      method: ``"mackay"`` or ``"gradient"``.
      per_group: one ``δ`` per group (layer) instead of a scalar.
      init_prior_precision: the starting ``δ``.
      init_sigma_noise: the starting ``σ``.
      num_steps: iterations (static).
      learning_rate: Adam's step (``"gradient"`` only).

    Returns:
      A :class:`NoiseAndPrior`.

    Raises:
      ValueError: for a classification Laplace, or an unknown ``method``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> from jaxreg.laplace import fit_laplace
      >>> x = jax.random.normal(jax.random.key(0), (200, 2))
      >>> y = x @ jnp.array([1.0, -1.0]) + 0.3 * jax.random.normal(jax.random.key(1), (200,))
      >>> w = jnp.linalg.lstsq(x, y)[0]
      >>> la = fit_laplace(lambda w, x: x @ w, w, batches(x, y, 50), likelihood="regression")
      >>> tuned = optimize_noise_and_prior(la, num_steps=50)
      >>> round(float(tuned.sigma_noise), 1)
      0.3
    """
    if laplace.likelihood != "regression":
        raise ValueError("optimize_noise_and_prior needs a Laplace with likelihood='regression'")
    if method not in ("gradient", "mackay"):
        raise ValueError(f"method must be 'gradient' or 'mackay', got {method!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    dtype = laplace.mean.dtype
    shape = (len(laplace.group_sizes),) if per_group else ()
    delta = jnp.broadcast_to(jnp.asarray(init_prior_precision, dtype), shape)
    sigma = jnp.asarray(init_sigma_noise, dtype)
    if method == "mackay":

        def fixed_point(carry, _):
            return _mackay_step(laplace, *carry, per_group), None

        return NoiseAndPrior(*jax.lax.scan(fixed_point, (delta, sigma), None, length=num_steps)[0])

    optimizer = optax.adam(learning_rate)

    def negative_evidence(logs):
        return -log_marginal_likelihood(laplace, jnp.exp(logs[0]), jnp.exp(logs[1]))

    def step(carry, _):
        logs, state = carry
        updates, state = optimizer.update(jax.grad(negative_evidence)(logs), state)
        return (optax.apply_updates(logs, updates), state), None

    logs = (jnp.log(delta), jnp.log(sigma))
    (logs, _), _ = jax.lax.scan(step, (logs, optimizer.init(logs)), None, length=num_steps)
    return NoiseAndPrior(jnp.exp(logs[0]), jnp.exp(logs[1]))
