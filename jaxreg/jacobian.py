"""Input-gradient and input–output Jacobian penalties for a model's ``apply``.

Both measure how fast the model's output changes with its input, averaged over the
examples of a batch, and are meant as loss terms: ``loss + λ·penalty`` inside your
``loss_fn(params, batch)``. Each example's term depends only on its own input, so
the models must treat examples independently (no BatchNorm in train mode).

- :func:`input_gradient_norm`: double backpropagation (Drucker & LeCun, 1992),
  ``mean_i ‖∂ℓ(f(x_i), y_i)/∂x_i‖²``.
- :func:`jacobian_frobenius`: ``mean_i ‖∂f(x_i)/∂x_i‖²_F`` by random projections
  (Hoffman et al., 2019): for ``v`` uniform on the unit sphere of the ``C``
  outputs, ``C·E‖vᵀJ‖² = ‖J‖²_F``, so one vector–Jacobian product per projection
  gives an unbiased estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from jaxreg.losses import PerExampleLoss, softmax_cross_entropy, weighted_mean

__all__ = ["input_gradient_norm", "jacobian_frobenius"]

Apply = Callable[..., jax.Array]


def _per_example_sum(values: jax.Array) -> jax.Array:
    return jnp.sum(values.reshape(values.shape[0], -1), axis=1)


def input_gradient_norm(
    apply: Apply,
    params: chex.ArrayTree,
    x: jax.Array,
    labels: jax.Array,
    *,
    loss: PerExampleLoss = softmax_cross_entropy,
    weight: jax.Array | None = None,
) -> jax.Array:
    """Double backpropagation: the mean over examples of ``‖∂ℓ_i/∂x_i‖²``.

    Args:
      apply: the model, ``apply(params, x) -> outputs`` (eval mode).
      params: its parameters (the penalty is differentiable in them).
      x: inputs ``(n, ...)``.
      labels: what ``loss`` takes as labels (class ids or probabilities).
      loss: per-example loss ``(outputs, labels) -> (n,)``.
      weight: per-example weights ``(n,)`` of the mean (a minibatch's ``"weight"``:
        padding rows, weight 0, do not count).

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> apply = lambda w, x: x @ w  # softmax regression: ∂ℓ/∂x = W(p − y)
      >>> w, x = jnp.array([[1.0, -1.0], [0.0, 0.0]]), jnp.zeros((1, 2))
      >>> float(input_gradient_norm(apply, w, x, jnp.array([0])))  # W(−½, ½) = (−1, 0)
      1.0
    """
    # ℓ_i depends on x_i only, so the gradient of the summed loss is per example.
    grads = jax.grad(lambda inputs: jnp.sum(loss(apply(params, inputs), labels)))(x)
    return weighted_mean(_per_example_sum(jnp.square(grads)), weight)


def jacobian_frobenius(
    apply: Apply,
    params: chex.ArrayTree,
    x: jax.Array,
    *,
    key: jax.Array,
    num_projections: int = 1,
) -> jax.Array:
    """Unbiased estimate of the mean over examples of ``‖∂f(x_i)/∂x_i‖²_F``.

    Each projection draws, per example, ``v`` uniform on the unit sphere of the
    outputs and takes ``C·‖vᵀJ_i‖²`` from one vector–Jacobian product of the whole
    batch (Hoffman et al., 2019); the projections are averaged.

    Args:
      apply: the model, ``apply(params, x) -> outputs (n, C)`` (eval mode).
      params: its parameters (the estimate is differentiable in them).
      x: inputs ``(n, ...)``.
      key: PRNG key of the projections.
      num_projections: projections averaged (static); more lowers the variance.

    Returns:
      A scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> apply = lambda w, x: x @ w  # linear: J = Wᵀ for every example
      >>> w = jnp.array([[1.0, 2.0], [0.0, 3.0]])
      >>> est = jacobian_frobenius(apply, w, jnp.ones((4, 2)), key=jax.random.key(0),
      ...                          num_projections=4000)
      >>> round(float(est), 0)  # ‖W‖²_F = 14
      14.0
    """
    if num_projections < 1:
        raise ValueError(f"num_projections must be at least 1, got {num_projections}")
    outputs, pullback = jax.vjp(lambda inputs: apply(params, inputs), x)
    classes = outputs.shape[-1]

    def one(projection_key: jax.Array) -> jax.Array:
        v = jax.random.normal(projection_key, outputs.shape, outputs.dtype)
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        (row,) = pullback(v)
        return classes * _per_example_sum(jnp.square(row))

    estimates = jax.vmap(one)(jax.random.split(key, num_projections))
    return jnp.mean(estimates)
