"""Hessian- and Gauss-Newton-vector products of a loss over a whole batched dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxreg.data import dataset_loss, example_weights, mean_over_batches

__all__ = ["LossFn", "dataset_loss", "gauss_newton_vp", "hvp"]

#: A loss ``(params, batch) -> scalar``, as every curvature and sharpness function takes
#: it (a type alias). ``batch`` is one minibatch ``{"x", "y", "weight"}`` of
#: :func:`jaxreg.data.batches`.
#:
#: Example:
#:   >>> import jax.numpy as jnp
#:   >>> from jaxreg.data import batches
#:   >>> from jaxreg.sharpness import hvp
#:   >>> loss_fn = lambda w, batch: jnp.mean(batch["x"] @ w**2)  # Hessian 2·diag(mean x)
#:   >>> data = batches(jnp.array([[1.0, 3.0], [3.0, 1.0]]), jnp.zeros(2), 2)
#:   >>> hvp(loss_fn, jnp.ones(2), data)(jnp.array([1.0, 1.0])).tolist()
#:   [4.0, 4.0]
LossFn = Callable[[chex.ArrayTree, Any], jax.Array]


def check_batched(data: Any, name: str = "data") -> None:
    """Refuses data that is not laid out as :func:`jaxreg.data.batches` lays it out: an
    ``(x, y)`` tuple, or a dict whose ``"weight"`` has no batch-index axis.

    Example:
      >>> check_batched((jnp.ones((4, 2)), jnp.zeros(4)))  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      TypeError: data must be batches from jaxreg.data.batches(x, y, batch_size) ..., got a tuple
    """
    if isinstance(data, tuple | list):
        raise TypeError(
            f"{name} must be batches from jaxreg.data.batches(x, y, batch_size) (a dict with a "
            f"leading batch-index axis), got a {type(data).__name__}"
        )
    if isinstance(data, dict) and "weight" in data and jnp.ndim(data["weight"]) != 2:
        raise ValueError(
            f"{name} has no batch-index axis: its 'weight' has shape "
            f"{jnp.shape(data['weight'])}, expected (num_batches, batch_size); build it with "
            "jaxreg.data.batches(x, y, batch_size)"
        )


def hvp(
    loss_fn: LossFn, params: chex.ArrayTree, data: Any, *, linearize: bool | None = None
) -> Callable[[chex.ArrayTree], chex.ArrayTree]:
    """``v ↦ H v`` for the Hessian of the dataset loss at ``params`` (forward-over-reverse).

    The product is accumulated batch by batch in a ``lax.scan`` and weighted
    by each batch's total ``"weight"``, so it is the Hessian of the exact
    full-data mean loss. ``v`` has the structure of ``params``.

    With ``linearize=True`` the gradient is linearized once, here (``jax.linearize``):
    the forward and backward passes at ``params`` are not recomputed by every
    product, which then costs a quarter to a third less, but their intermediate values are
    kept for every batch at once. ``None`` (the default) linearizes when ``data``
    holds a single batch, whose intermediates one product needs anyway; ``False``
    recomputes them batch by batch, holding one batch's at a time.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, b: jnp.mean(b["x"] @ w ** 2)  # H = 2·diag(mean x)
      >>> data = batches(jnp.ones((6, 2)), jnp.zeros(6), 3)
      >>> hvp(loss_fn, jnp.ones(2), data)(jnp.array([1.0, 0.0])).tolist()
      [2.0, 0.0]
    """
    check_batched(data)
    if linearize or (linearize is None and jax.tree.leaves(data)[0].shape[0] == 1):
        return _linearized_hvp(loss_fn, params, data)

    def product(v: chex.ArrayTree) -> chex.ArrayTree:
        def batch_hvp(batch):
            grad = jax.grad(lambda p: loss_fn(p, batch))
            return jax.jvp(grad, (params,), (v,))[1]

        return mean_over_batches(batch_hvp, data)

    return product


def _linearized_hvp(loss_fn: LossFn, params: chex.ArrayTree, data: Any):
    """``hvp`` with the gradient linearized once at ``params``."""
    gradient = lambda p: mean_over_batches(lambda b: jax.grad(loss_fn)(p, b), data)  # noqa: E731
    return jax.linearize(gradient, params)[1]


def gauss_newton_vp(
    apply: Callable[..., jax.Array], params: chex.ArrayTree, data: Any
) -> Callable[[chex.ArrayTree], chex.ArrayTree]:
    """``v ↦ G v`` for the generalized Gauss-Newton matrix of softmax cross-entropy.

    ``G = Jᵀ (diag(p) − p pᵀ) J`` averaged over the examples (``J`` the Jacobian
    of the logits, ``p`` the softmax): positive semi-definite, and equal to the
    Hessian wherever the model is linear in its parameters. Labels do not enter.
    ``data`` batches hold ``"x"`` and optionally ``"weight"``.

    Example:
      >>> from jaxreg.data import batches
      >>> from jaxreg.losses import classification_loss
      >>> apply = lambda w, x, **kw: x @ w  # linear logits: the Gauss-Newton matrix is the Hessian
      >>> x = jax.random.normal(jax.random.key(0), (8, 3))
      >>> data = batches(x, jnp.arange(8) % 2, 4)
      >>> w, v = jnp.zeros((3, 2)), jnp.ones((3, 2))
      >>> g = gauss_newton_vp(apply, w, data)(v)
      >>> bool(jnp.allclose(g, hvp(classification_loss(apply), w, data)(v), atol=1e-6))
      True
    """
    check_batched(data)

    def product(v: chex.ArrayTree) -> chex.ArrayTree:
        def batch_gvp(batch):
            def logits_fn(p):
                return apply(p, batch["x"])

            logits, jv = jax.jvp(logits_fn, (params,), (v,))
            probs = jax.nn.softmax(logits, axis=-1)
            hjv = probs * jv - probs * jnp.sum(probs * jv, axis=-1, keepdims=True)
            hjv = hjv * example_weights(batch, logits.dtype)[:, None]
            return jax.vjp(logits_fn, params)[1](hjv)[0]

        return mean_over_batches(batch_gvp, data)

    return product
