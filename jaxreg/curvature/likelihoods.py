"""The likelihoods curvature and Laplace understand, in output space.

A likelihood turns a model's outputs ``f`` (logits for classification, means
for regression) into a per-example negative log-likelihood ``ℓ(f, y)``. Its
Hessian in ``f`` is written as ``A Aᵀ``, so every curvature matrix is a sum of
``R Rᵀ`` with ``R = Jᵀ A``:

- ``"classification"``: softmax cross-entropy; ``∇²ℓ = diag(p) − p pᵀ`` and
  ``A = diag(√p) − p √pᵀ`` (``A Aᵀ = diag(p) − p pᵀ`` because ``Σ p = 1``).
- ``"regression"``: Gaussian with noise ``σ``; ``ℓ = ‖f − y‖²/(2σ²) +
  C(log σ + ½ log 2π)``, ``∇²ℓ = I/σ²``, ``A = I/σ``.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
    "LIKELIHOODS",
    "Likelihood",
    "as_outputs",
    "check_likelihood",
    "hessian_root",
    "negative_log_likelihood",
    "output_gradient",
]

#: The likelihood of a model's outputs (a type alias): ``"classification"`` (softmax
#: cross-entropy of logits) or ``"regression"`` (Gaussian with noise ``σ``).
#:
#: Example:
#:   >>> import typing
#:   >>> from jaxreg.curvature import Likelihood
#:   >>> typing.get_args(Likelihood)
#:   ('classification', 'regression')
Likelihood = Literal["classification", "regression"]
#: The likelihood names curvature and Laplace accept.
#:
#: Example:
#:   >>> from jaxreg.curvature import LIKELIHOODS
#:   >>> "regression" in LIKELIHOODS
#:   True
LIKELIHOODS: tuple[str, ...] = ("classification", "regression")


def check_likelihood(likelihood: str) -> None:
    """Raise ``ValueError`` unless ``likelihood`` is one of :data:`LIKELIHOODS`.

    Example:
      >>> check_likelihood("classification")
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def as_outputs(outputs: jax.Array) -> jax.Array:
    """Outputs as ``(n, C)``: a regression model's ``(n,)`` becomes ``(n, 1)``.

    Example:
      >>> as_outputs(jnp.zeros(3)).shape
      (3, 1)
    """
    return outputs[:, None] if outputs.ndim == 1 else outputs.reshape(outputs.shape[0], -1)


def _targets(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    return targets.reshape(outputs.shape).astype(outputs.dtype)


def hessian_root(
    outputs: jax.Array, likelihood: Likelihood, sigma_noise: ArrayLike = 1.0
) -> jax.Array:
    """``A`` with ``A Aᵀ = ∇²_f ℓ`` per example: ``(n, C, C)`` for outputs ``(n, C)``.

    Example:
      >>> a = hessian_root(jnp.array([[0.0, 0.0]]), "classification")
      >>> (a[0] @ a[0].T).round(6).tolist()  # diag(p) - p pᵀ at p = (½, ½)
      [[0.25, -0.25], [-0.25, 0.25]]
    """
    check_likelihood(likelihood)
    if likelihood == "regression":
        eye = jnp.eye(outputs.shape[-1], dtype=outputs.dtype) / jnp.asarray(
            sigma_noise, outputs.dtype
        )
        return jnp.broadcast_to(eye, (*outputs.shape, outputs.shape[-1]))
    probs = jax.nn.softmax(outputs, axis=-1)
    root = jnp.sqrt(probs)
    return jax.vmap(jnp.diag)(root) - probs[:, :, None] * root[:, None, :]


def output_gradient(outputs: jax.Array, targets: ArrayLike, likelihood: Likelihood) -> jax.Array:
    """``∇_f ℓ(f, y)`` per example (regression at ``σ = 1``): ``(n, C)``.

    Example:
      >>> output_gradient(jnp.zeros((1, 2)), jnp.array([1]), "classification").tolist()
      [[0.5, -0.5]]
    """
    check_likelihood(likelihood)
    targets = jnp.asarray(targets)
    if likelihood == "regression":
        return outputs - _targets(outputs, targets)
    one_hot = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
    return jax.nn.softmax(outputs, axis=-1) - one_hot


def negative_log_likelihood(
    outputs: jax.Array, targets: ArrayLike, likelihood: Likelihood, sigma_noise: ArrayLike = 1.0
) -> jax.Array:
    """Per-example ``ℓ(f, y)``: cross-entropy, or the Gaussian's negative log density.

    Example:
      >>> nll = negative_log_likelihood(jnp.zeros((1, 2)), jnp.array([0]), "classification")
      >>> round(float(nll[0]), 4)  # log 2
      0.6931
    """
    check_likelihood(likelihood)
    targets = jnp.asarray(targets)
    if likelihood == "classification":
        log_probs = jax.nn.log_softmax(outputs, axis=-1)
        return -jnp.take_along_axis(log_probs, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    sigma = jnp.asarray(sigma_noise, outputs.dtype)
    squared = jnp.sum(jnp.square(outputs - _targets(outputs, targets)), axis=-1)
    constant = outputs.shape[-1] * (jnp.log(sigma) + 0.5 * math.log(2 * math.pi))
    return squared / (2 * sigma**2) + constant
