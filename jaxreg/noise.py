"""Noise injection: Gaussian input noise (additive, multiplicative), weight noise, label noise.

For a linear model, additive input noise ``N(0, σ²)`` is L2 regularization in
expectation (Bishop, 1995): ``E||y - (x+ε)ᵀw||² = ||y - xᵀw||² + σ²||w||²`` per
example; ``tests/test_noise.py`` and ``experiments/noise_equals_l2.py`` check it.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_non_negative
from jaxreg.labels import asymmetric_label_noise, symmetric_label_noise
from jaxreg.masks import MaskLike, resolve

__all__ = [
    "asymmetric_label_noise",
    "gaussian_input_noise",
    "multiplicative_input_noise",
    "symmetric_label_noise",
    "weight_noise",
]


def gaussian_input_noise(key: jax.Array, x: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """``x + σ·ε`` with ``ε ~ N(0, I)``, independent per element (so per example).

    Example:
      >>> x = jnp.zeros((4, 3))
      >>> bool(jnp.all(gaussian_input_noise(jax.random.key(0), x, 0.0) == x))
      True
    """
    check_non_negative(sigma, "sigma")
    x = jnp.asarray(x)
    return x + (sigma * jax.random.normal(key, x.shape, x.dtype)).astype(x.dtype)


def multiplicative_input_noise(key: jax.Array, x: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """``x · (1 + σ·ε)`` with ``ε ~ N(0, I)`` (Gaussian-dropout-style noise on the inputs).

    Example:
      >>> x = jnp.array([[0.0, 1.0, 10.0]])
      >>> noisy = multiplicative_input_noise(jax.random.key(0), x, 0.1)
      >>> float(noisy[0, 0])  # zero stays zero: the noise scales with the input
      0.0
      >>> bool(jnp.all(multiplicative_input_noise(jax.random.key(0), x, 0.0) == x))
      True
    """
    check_non_negative(sigma, "sigma")
    x = jnp.asarray(x)
    return x * (1 + sigma * jax.random.normal(key, x.shape, x.dtype)).astype(x.dtype)


def weight_noise(
    key: jax.Array,
    params: chex.ArrayTree,
    sigma: ArrayLike,
    mask: MaskLike | None = None,
    *,
    multiplicative: bool = False,
) -> chex.ArrayTree:
    """Perturb the selected leaves of ``params`` with independent Gaussian noise.

    ``w + σε`` (or ``w(1 + σε)`` with ``multiplicative``); leaves outside
    ``mask`` are returned unchanged. Each leaf gets its own key.

    Example:
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> noisy = weight_noise(jax.random.key(0), params, 0.1, mask={"w": True, "b": False})
      >>> bool(jnp.all(noisy["b"] == 1.0)), bool(jnp.any(noisy["w"] != 1.0))
      (True, True)
    """
    check_non_negative(sigma, "sigma")
    selected = resolve(mask, params)
    eps = optax.tree.random_like(key, params)

    def perturb(leaf, e, keep):
        if not keep:
            return leaf
        noisy = leaf * (1 + sigma * e) if multiplicative else leaf + sigma * e
        return noisy.astype(jnp.result_type(leaf))

    return jax.tree.map(perturb, params, eps, selected)
