"""Matrix-free curvature products over a whole batched dataset: GGN, empirical and MC Fisher.

Each returns ``v ↦ M v`` on pytrees shaped like ``params``, accumulated batch by
batch in a ``lax.scan`` and weighted like :func:`jaxreg.sharpness.hvp` (the
curvature of the *mean* loss; padding never counts). Pass one as ``matvec`` to
:func:`jaxreg.sharpness.top_eigenvalues` or :func:`jaxreg.sharpness.hessian_trace`.
Cost per product: one forward-mode and one reverse-mode pass (GGN), or
per-example gradients (the Fishers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg.curvature.likelihoods import (
    Likelihood,
    as_outputs,
    check_likelihood,
    output_gradient,
)
from jaxreg.data import example_weights, mean_over_batches
from jaxreg.sharpness.hvp import gauss_newton_vp

__all__ = ["empirical_fisher_vp", "ggn_vp", "mc_fisher_vp"]

Apply = Callable[[Any, jax.Array], jax.Array]
Product = Callable[[chex.ArrayTree], chex.ArrayTree]


def ggn_vp(
    apply: Apply,
    params: chex.ArrayTree,
    data: Any,
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
) -> Product:
    """``v ↦ G v`` for the generalized Gauss–Newton matrix ``mean_n Jₙᵀ ∇²ℓₙ Jₙ``.

    ``J`` is the Jacobian of the outputs; ``∇²ℓ`` is ``diag(p) − ppᵀ`` for
    classification and ``I/σ²`` for regression. Positive semi-definite, and the
    Hessian wherever the model is linear in its parameters; labels are not read.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> gv = ggn_vp(lambda w, x: x @ w, jnp.zeros(2), batches(x, jnp.zeros(2), 2),
      ...             likelihood="regression")
      >>> gv(jnp.array([1.0, 1.0])).tolist()  # mean xxᵀ v
      [0.5, 2.0]
    """
    check_likelihood(likelihood)
    if likelihood == "classification":  # ∇²ℓ = diag(p) − ppᵀ, applied without forming it
        return gauss_newton_vp(apply, params, data)

    def product(v):
        def batch_gvp(batch):
            def outputs_fn(p):
                return as_outputs(apply(p, batch["x"]))

            outputs, jv = jax.jvp(outputs_fn, (params,), (v,))
            weights = example_weights(batch, outputs.dtype)
            hjv = jv / jnp.square(jnp.asarray(sigma_noise, outputs.dtype)) * weights[:, None]
            return jax.vjp(outputs_fn, params)[1](hjv)[0]

        return mean_over_batches(batch_gvp, data)

    return product


def _per_example_grads(apply, params, x, residuals):
    """Per-example gradients ``Jₙᵀ rₙ`` as a pytree with a leading example axis."""

    def one(xi, ri):
        return jax.vjp(lambda p: as_outputs(apply(p, xi[None]))[0], params)[1](ri)[0]

    return jax.vmap(one)(x, residuals)


def _outer_product(grads, weights, v):
    """``Σₙ wₙ gₙ (gₙᵀ v)`` for per-example gradients ``grads``."""
    dots = sum(
        jnp.sum((g * vl).reshape(g.shape[0], -1), axis=1)
        for g, vl in zip(jax.tree.leaves(grads), jax.tree.leaves(v), strict=True)
    )
    return jax.tree.map(lambda g: jnp.tensordot(weights * dots, g, axes=1), grads)


def empirical_fisher_vp(
    apply: Apply,
    params: chex.ArrayTree,
    data: Any,
    *,
    likelihood: Likelihood = "classification",
) -> Product:
    """``v ↦ F̂ v`` for the empirical Fisher ``mean_n gₙ gₙᵀ`` (per-example gradients, labels read).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x, y = jnp.array([[1.0], [2.0]]), jnp.array([1.0, 0.0])
      >>> fv = empirical_fisher_vp(lambda w, x: x @ w, jnp.zeros(1), batches(x, y, 2),
      ...                          likelihood="regression")
      >>> fv(jnp.array([1.0])).tolist()  # mean (x (f - y))²
      [0.5]
    """
    check_likelihood(likelihood)

    def product(v):
        def batch_fvp(batch):
            outputs = as_outputs(apply(params, batch["x"]))
            residuals = output_gradient(outputs, batch["y"], likelihood)
            grads = _per_example_grads(apply, params, batch["x"], residuals)
            weights = example_weights(batch, outputs.dtype)
            return _outer_product(grads, weights, v)

        return mean_over_batches(batch_fvp, data)

    return product


def mc_fisher_vp(
    apply: Apply,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    num_samples: int = 1,
) -> Product:
    """``v ↦ F̃ v`` for the Monte-Carlo Fisher of a classifier (labels drawn from the model).

    ``F̃ = mean_n (1/S) Σₛ gₙₛ gₙₛᵀ`` with ``gₙₛ`` the gradient at a label
    ``yₙₛ ~ softmax(f(xₙ))``; its expectation is the Fisher, which for softmax
    cross-entropy equals the GGN (:func:`ggn_vp`). The same ``key`` draws the
    same labels for every product, so the operator is a fixed symmetric matrix
    (Lanczos needs that). Batch ``b`` uses ``fold_in(key, b)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jax.random.normal(jax.random.key(0), (6, 3))
      >>> fv = mc_fisher_vp(lambda w, x: x @ w, jnp.zeros((3, 2)), batches(x, jnp.zeros(6), 3),
      ...                   key=jax.random.key(1), num_samples=4)
      >>> fv(jnp.ones((3, 2))).shape
      (3, 2)
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    num_batches = jax.tree.leaves(data)[0].shape[0]
    data = {**data, "_index": jnp.arange(num_batches)}

    def product(v):
        def batch_fvp(batch):
            outputs = as_outputs(apply(params, batch["x"]))
            probs = jax.nn.softmax(outputs, axis=-1)
            sample_key = jax.random.fold_in(key, batch["_index"])
            labels = jax.random.categorical(
                sample_key, outputs, shape=(num_samples, *outputs.shape[:1])
            )
            weights = example_weights(batch, outputs.dtype) / num_samples
            total = jax.tree.map(jnp.zeros_like, v)
            for s in range(num_samples):
                one_hot = jax.nn.one_hot(labels[s], outputs.shape[-1], dtype=outputs.dtype)
                grads = _per_example_grads(apply, params, batch["x"], probs - one_hot)
                total = jax.tree.map(jnp.add, total, _outer_product(grads, weights, v))
            return total

        return mean_over_batches(batch_fvp, data)

    return product
