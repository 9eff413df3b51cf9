"""Curvature matrices and their exact diagonals from per-example Jacobians.

Every function here averages over a batched dataset (:func:`jaxreg.data.batches`:
``{"x", "y", "weight"}`` with a leading batch axis), weighted by ``"weight"``
exactly as :func:`jaxreg.sharpness.hvp` is, so a padded example never counts
and the result is the curvature of the *mean* loss; a Laplace approximation
multiplies it by the number of examples. Per batch they hold the Jacobian of
the outputs, ``batch_size × C × P`` numbers (``C`` outputs, ``P`` selected
parameters): exact and cheap for a last layer or a small model, while
:mod:`jaxreg.curvature.operators` gives the matrix-free products for any size.

- GGN ``G = mean_n Jₙᵀ ∇²ℓₙ Jₙ`` (the Fisher of the model's likelihood, for
  softmax cross-entropy and the Gaussian),
- empirical Fisher ``F̂ = mean_n gₙ gₙᵀ`` with ``gₙ = Jₙᵀ ∇_f ℓₙ`` the
  per-example gradient (at ``σ = 1`` for regression).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg.curvature._roots import ggn_roots, gradients, jacobians_and_outputs
from jaxreg.curvature.likelihoods import (
    Likelihood,
    check_likelihood,
)
from jaxreg.curvature.subset import Subset, subset
from jaxreg.data import mean_over_batches
from jaxreg.masks import MaskLike

__all__ = [
    "empirical_fisher_diagonal",
    "empirical_fisher_matrix",
    "ggn_diagonal",
    "ggn_matrix",
    "per_example_jacobians",
]

Apply = Callable[[Any, jax.Array], jax.Array]


def per_example_jacobians(apply: Apply, chosen: Subset, x: jax.Array) -> jax.Array:
    """``∂f(xₙ)/∂θ`` for each example: ``(n, C, P)`` over the flat subset ``chosen``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.curvature import subset
      >>> apply = lambda w, x: x @ w
      >>> jac = per_example_jacobians(apply, subset(jnp.ones((2, 1))), jnp.array([[1.0, 2.0]]))
      >>> jac.tolist()
      [[[1.0, 2.0]]]
    """
    return jacobians_and_outputs(apply, chosen, x)[0]


# Each batch function returns its batch's weighted *mean* (weights wₙ/Σw), which
# mean_over_batches then weights by the batch's total weight.


def ggn_matrix(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
    wrt: MaskLike | None = None,
) -> jax.Array:
    """The dense GGN ``mean_n Jₙᵀ ∇²ℓₙ Jₙ`` over the parameters ``wrt`` selects: ``(P, P)``.

    Args:
      apply: ``apply(params, x) -> outputs`` in eval mode (``model.bind()`` of a
        :class:`jaxreg.nn.Model`).
      params: the parameters (the curvature is taken at them).
      data: batched data (:func:`jaxreg.data.batches`); labels are not read.
      likelihood: ``"classification"`` (softmax cross-entropy) or ``"regression"``.
      sigma_noise: the Gaussian's noise for regression (``G`` scales as ``1/σ²``).
      wrt: the parameters to differentiate (a mask; all by default), ordered
        as :func:`jaxreg.curvature.subset` ravels them.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> g = ggn_matrix(lambda w, x: x @ w, jnp.zeros((2, 1)), batches(x, jnp.zeros(2), 2),
      ...                likelihood="regression")
      >>> g.tolist()  # mean xxᵀ for a linear Gaussian model
      [[0.5, 0.0], [0.0, 2.0]]
    """
    check_likelihood(likelihood)
    chosen = subset(params, wrt)

    def batch_matrix(batch):
        roots, weights = ggn_roots(apply, chosen, batch, likelihood, sigma_noise)
        return jnp.einsum("nkp,nkq,n->pq", roots, roots, weights)

    return mean_over_batches(batch_matrix, data)


def ggn_diagonal(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
    wrt: MaskLike | None = None,
) -> jax.Array:
    """The exact diagonal of :func:`ggn_matrix` without forming it: ``(P,)``.

    Each entry is ``mean_n Σ_k (Jₙᵀ Aₙ)²_{pk}`` with ``Aₙ Aₙᵀ = ∇²ℓₙ``: one pass of
    per-example Jacobians (memory ``batch_size × C × P``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> ggn_diagonal(lambda w, x: x @ w, jnp.zeros((2, 1)), batches(x, jnp.zeros(2), 2),
      ...              likelihood="regression").tolist()
      [0.5, 2.0]
    """
    check_likelihood(likelihood)
    chosen = subset(params, wrt)

    def batch_diagonal(batch):
        roots, weights = ggn_roots(apply, chosen, batch, likelihood, sigma_noise)
        return jnp.einsum("nkp,n->p", jnp.square(roots), weights)

    return mean_over_batches(batch_diagonal, data)


def empirical_fisher_matrix(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    wrt: MaskLike | None = None,
) -> jax.Array:
    """The empirical Fisher ``mean_n gₙ gₙᵀ`` of per-example gradients: ``(P, P)``.

    Unlike the GGN it reads the labels, and it is not the Fisher away from a
    perfect fit (Kunstner et al., 2019): use it as the baseline it is.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x, y = jnp.array([[1.0], [2.0]]), jnp.array([1.0, 0.0])
      >>> empirical_fisher_matrix(lambda w, x: x @ w, jnp.zeros((1, 1)), batches(x, y, 2),
      ...                         likelihood="regression").tolist()  # mean (x (f - y))²
      [[0.5]]
    """
    check_likelihood(likelihood)
    chosen = subset(params, wrt)

    def batch_matrix(batch):
        grads, weights = gradients(apply, chosen, batch, likelihood)
        return jnp.einsum("np,nq,n->pq", grads, grads, weights)

    return mean_over_batches(batch_matrix, data)


def empirical_fisher_diagonal(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    wrt: MaskLike | None = None,
) -> jax.Array:
    """The diagonal of :func:`empirical_fisher_matrix`, ``mean_n gₙ²``: ``(P,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x, y = jnp.array([[1.0], [2.0]]), jnp.array([1.0, 0.0])
      >>> empirical_fisher_diagonal(lambda w, x: x @ w, jnp.zeros((1, 1)), batches(x, y, 2),
      ...                           likelihood="regression").tolist()
      [0.5]
    """
    check_likelihood(likelihood)
    chosen = subset(params, wrt)

    def batch_diagonal(batch):
        grads, weights = gradients(apply, chosen, batch, likelihood)
        return jnp.einsum("np,n->p", jnp.square(grads), weights)

    return mean_over_batches(batch_diagonal, data)
