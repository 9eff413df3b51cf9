"""Monte-Carlo dropout (Gal & Ghahramani, 2016): uncertainty from dropout at test time."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

__all__ = ["MCPrediction", "mc_predict"]


class MCPrediction(NamedTuple):
    """Summary of ``num_samples`` stochastic forward passes.

    Attributes:
      mean: predictive probabilities ``(n, K)``, the mean over samples.
      variance: variance of the probabilities over samples ``(n, K)``.
      entropy: predictive entropy ``H[mean]`` ``(n,)`` (total uncertainty).
      mutual_information: ``H[mean] - mean_s H[p_s]`` ``(n,)`` (BALD; the
        epistemic part, zero when every sample agrees).

    Example:
      >>> deterministic = lambda params, x, *, key=None, train=False: x @ params
      >>> x = jnp.array([[2.0, 0.0]])
      >>> out = mc_predict(deterministic, jnp.eye(2), x, key=jax.random.key(0))
      >>> round(float(out.variance.max()), 6), round(float(out.mutual_information[0]), 6)  # agree
      (0.0, 0.0)
    """

    mean: jax.Array
    variance: jax.Array
    entropy: jax.Array
    mutual_information: jax.Array


def _entropy(probs: jax.Array) -> jax.Array:
    return -jnp.sum(
        jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), axis=-1
    )


def mc_predict(
    apply: Callable[..., jax.Array],
    params: chex.ArrayTree,
    x: jax.Array,
    *,
    key: jax.Array,
    num_samples: int = 32,
) -> MCPrediction:
    """Predict with dropout switched on, ``num_samples`` times, vmapped over keys (one compile).

    Args:
      apply: ``apply(params, x, *, key, train)`` returning logits.
      params: model parameters.
      x: inputs ``(n, ...)``.
      key: PRNG key (keyword-only: randomness is incidental to prediction);
        sample ``s`` uses ``split(key, num_samples)[s]``.
      num_samples: number of stochastic passes (static).

    Returns:
      :class:`MCPrediction`.

    Example:
      >>> from jaxreg.nn import MLP, functional
      >>> apply, params = functional(MLP((4, 16, 3), dropout_rate=0.5, rngs=nnx.Rngs(0)))
      >>> out = mc_predict(apply, params, jnp.ones((2, 4)), key=jax.random.key(0), num_samples=8)
      >>> out.mean.shape, out.mutual_information.shape
      ((2, 3), (2,))
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    keys = jax.random.split(key, num_samples)
    probs = jax.vmap(lambda k: jax.nn.softmax(apply(params, x, key=k, train=True), axis=-1))(keys)
    mean = jnp.mean(probs, axis=0)
    entropy = _entropy(mean)
    expected_entropy = jnp.mean(_entropy(probs), axis=0)
    return MCPrediction(
        mean=mean,
        variance=jnp.var(probs, axis=0),
        entropy=entropy,
        mutual_information=jnp.maximum(entropy - expected_entropy, 0.0),
    )
