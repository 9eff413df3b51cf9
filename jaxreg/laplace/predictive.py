"""Predictions under a Laplace posterior: the linearized (GLM) predictive and weight sampling.

The GLM predictive linearizes the model around the MAP, ``f(x; θ) ≈ f(x; θ*) +
J(x)(θ − θ*)``, so the outputs are Gaussian with mean ``f(x; θ*)`` and
covariance ``J Σ Jᵀ`` (Immer et al., 2021; Laplace Redux's default). For
classification the softmax of that Gaussian is approximated by the probit
rule ``softmax(f / √(1 + π/8 · diag(JΣJᵀ)))`` or by Monte Carlo over outputs.
:func:`sample_predictive` instead samples weights ``θ ~ N(θ*, Σ)`` and runs the
network (the "nn" predictive), which can underfit badly for a full network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg.curvature import as_outputs, per_example_jacobians
from jaxreg.curvature._eigenbasis import from_eigenbasis, to_eigenbasis
from jaxreg.laplace._precision import eigenbasis_precision
from jaxreg.laplace.evidence import posterior_scale, prior_precision_vector
from jaxreg.laplace.posterior import Laplace

__all__ = ["Predictive", "glm_predictive", "sample_predictive"]

Apply = Callable[[Any, jax.Array], jax.Array]


class Predictive(NamedTuple):
    """A predictive distribution's summary per example.

    Attributes:
      mean: classification: predictive class probabilities ``(n, C)``;
        regression: the predictive mean ``(n, C)``.
      variance: classification: the variance of each logit under the posterior
        ``(n, C)``; regression: the predictive variance, noise ``σ²`` included.

    Example:
      >>> import jax.numpy as jnp
      >>> Predictive(jnp.ones((1, 2)) / 2, jnp.zeros((1, 2))).mean.tolist()
      [[0.5, 0.5]]
    """

    mean: jax.Array
    variance: jax.Array


def _output_covariance(laplace, apply, x, prior_precision, sigma_noise) -> jax.Array:
    """``J Σ Jᵀ`` per example ``(n, C, C)``."""
    jac = per_example_jacobians(apply, laplace.subset(), x)
    if laplace.structure in ("kron", "ekfac"):  # J Q diag(1/√(sλ + δ)), Q never formed
        delta = prior_precision_vector(laplace, prior_precision)
        values = eigenbasis_precision(laplace, delta, sigma_noise)
        projected = to_eigenbasis(laplace, jac) / jnp.sqrt(values)
        return jnp.einsum("nck,ndk->ncd", projected, projected)
    root = posterior_scale(laplace, prior_precision, sigma_noise)
    diagonal = laplace.structure == "diag"
    projected = jac * root if diagonal else jnp.einsum("ncp,pk->nck", jac, root)
    return jnp.einsum("nck,ndk->ncd", projected, projected)


def glm_predictive(
    laplace: Laplace,
    apply: Apply,
    x: ArrayLike,
    *,
    prior_precision: ArrayLike,
    sigma_noise: ArrayLike = 1.0,
    link: Literal["probit", "mc"] = "probit",
    key: jax.Array | None = None,
    num_samples: int = 100,
) -> Predictive:
    """The linearized predictive at inputs ``x`` (batch ``(n, ...)``).

    Args:
      laplace: a fitted :class:`Laplace`.
      apply: the same ``apply(params, x) -> outputs`` it was fitted with.
      x: inputs; all ``n`` per-example Jacobians are held at once (``n × C × P``).
      prior_precision: ``δ``, a scalar or one value per group.
      sigma_noise: regression noise.
      link: classification only: ``"probit"`` (deterministic) or ``"mc"``
        (``num_samples`` Gaussian draws of the logits, needs ``key``).
      key: PRNG key for ``link="mc"``.
      num_samples: draws for ``link="mc"``.

    Returns:
      A :class:`Predictive`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> from jaxreg.laplace import fit_laplace
      >>> apply = lambda w, x: x @ w
      >>> la = fit_laplace(apply, jnp.zeros(1), batches(jnp.ones((4, 1)), jnp.zeros(4), 2),
      ...                  likelihood="regression")
      >>> pred = glm_predictive(la, apply, jnp.ones((1, 1)), prior_precision=1.0)
      >>> round(float(pred.variance[0, 0]), 6)  # x Σ x + σ² = 1/5 + 1
      1.2
    """
    x = jnp.asarray(x)
    outputs = as_outputs(apply(laplace.params, x))
    covariance = _output_covariance(laplace, apply, x, prior_precision, sigma_noise)
    variance = jnp.diagonal(covariance, axis1=1, axis2=2)
    if laplace.likelihood == "regression":
        return Predictive(outputs, variance + jnp.square(jnp.asarray(sigma_noise, variance.dtype)))
    if link == "probit":
        kappa = 1.0 / jnp.sqrt(1.0 + math.pi / 8 * variance)
        return Predictive(jax.nn.softmax(kappa * outputs, axis=-1), variance)
    if link != "mc":
        raise ValueError(f"link must be 'probit' or 'mc', got {link!r}")
    if key is None:
        raise ValueError("link='mc' needs key=")
    jitter = 1e-6 * jnp.eye(covariance.shape[-1], dtype=covariance.dtype)
    root = jnp.linalg.cholesky(covariance + jitter)
    noise = jax.random.normal(key, (num_samples, *outputs.shape), outputs.dtype)
    logits = outputs + jnp.einsum("ncd,snd->snc", root, noise)
    return Predictive(jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0), variance)


def sample_predictive(
    laplace: Laplace,
    apply: Apply,
    x: ArrayLike,
    *,
    prior_precision: ArrayLike,
    key: jax.Array,
    num_samples: int = 100,
    sigma_noise: ArrayLike = 1.0,
) -> Predictive:
    """The predictive by sampling weights ``θ ~ N(θ*, Σ)`` and averaging the network's outputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> from jaxreg.laplace import fit_laplace
      >>> apply = lambda w, x: x @ w
      >>> x = jax.random.normal(jax.random.key(0), (10, 2)); y = (x[:, 0] > 0).astype(int)
      >>> la = fit_laplace(apply, jnp.zeros((2, 2)), batches(x, y, 5))
      >>> pred = sample_predictive(la, apply, x[:3], prior_precision=1.0,
      ...                          key=jax.random.key(1), num_samples=20)
      >>> pred.mean.shape
      (3, 2)
    """
    x = jnp.asarray(x)
    chosen = laplace.subset()
    noise = jax.random.normal(key, (num_samples, laplace.mean.shape[0]), laplace.mean.dtype)
    if laplace.structure in ("kron", "ekfac"):  # Q z/√(sλ + δ), Q never formed
        delta = prior_precision_vector(laplace, prior_precision)
        values = eigenbasis_precision(laplace, delta, sigma_noise)
        deviations = from_eigenbasis(laplace, noise / jnp.sqrt(values))
    else:
        root = posterior_scale(laplace, prior_precision, sigma_noise)
        deviations = noise * root if laplace.structure == "diag" else noise @ root.T

    def outputs(deviation):
        return as_outputs(apply(chosen.combine(laplace.mean + deviation), x))

    samples = jax.lax.map(outputs, deviations)
    if laplace.likelihood == "regression":
        noise_var = jnp.square(jnp.asarray(sigma_noise, samples.dtype))
        return Predictive(jnp.mean(samples, 0), jnp.var(samples, 0) + noise_var)
    return Predictive(jnp.mean(jax.nn.softmax(samples, -1), 0), jnp.var(samples, 0))
