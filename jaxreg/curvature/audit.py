"""How far a cheap curvature approximation is from the exact GGN: an eigen-structure audit.

For each approximation, the top-``k`` eigenvalues and eigenvectors are compared
with the exact GGN's (adaptive Lanczos on :func:`jaxreg.curvature.ggn_vp`):

- relative eigenvalue error ``|λ̂ᵢ − λᵢ| / λᵢ`` for ``i < k``;
- principal angles between the two top-``k`` subspaces (``arccos`` of the
  singular values of ``Vᵀ V̂``; 0 where a direction is captured, π/2 where it is
  missed).

Approximations: ``"diag"`` (the exact GGN diagonal: its eigenvectors are
coordinate axes), ``"last_layer"`` (the exact GGN block of the parameters
``last_layer`` selects, zero elsewhere), and ``"kron"``/``"ekfac"`` (KFAC and
EKFAC blocks of every dense layer and convolution,
:func:`jaxreg.curvature.kfac_factors` and :func:`jaxreg.curvature.conv_kfac_factors`,
the diagonal for the other leaves). Everything is jit/vmap-able, so a
sweep's members are audited in one program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from jaxreg.curvature._eigenbasis import Blocks, from_eigenbasis
from jaxreg.curvature._kron import kron_curvature
from jaxreg.curvature.dense import ggn_diagonal, ggn_matrix
from jaxreg.curvature.likelihoods import Likelihood
from jaxreg.curvature.operators import ggn_vp
from jaxreg.masks import MaskLike, resolve
from jaxreg.sharpness import top_eigenvalues

__all__ = ["ApproximationError", "CurvatureAudit", "audit_curvature", "compare_subspaces"]


class ApproximationError(NamedTuple):
    """One approximation against the exact top-``k`` eigenpairs.

    Attributes:
      eigenvalues: its top-``k`` eigenvalues ``(k,)``.
      relative_error: ``|λ̂ᵢ − λᵢ| / λᵢ`` ``(k,)``.
      principal_angles: angles between the top-``k`` subspaces, ascending ``(k,)``.

    Example:
      >>> ApproximationError(jnp.ones(2), jnp.zeros(2), jnp.zeros(2)).relative_error.shape
      (2,)
    """

    eigenvalues: jax.Array
    relative_error: jax.Array
    principal_angles: jax.Array


class CurvatureAudit(NamedTuple):
    """The exact top-``k`` GGN eigenvalues and each approximation's errors.

    Example:
      >>> a = ApproximationError(jnp.ones(1), jnp.zeros(1), jnp.zeros(1))
      >>> CurvatureAudit(jnp.ones(1), {"diag": a}).approximations["diag"].eigenvalues.tolist()
      [1.0]
    """

    exact_eigenvalues: jax.Array
    approximations: dict[str, ApproximationError]


def compare_subspaces(
    exact_values: ArrayLike, exact_vectors: ArrayLike, values: ArrayLike, vectors: ArrayLike
) -> ApproximationError:
    """Errors of ``(values, vectors)`` against ``(exact_values, exact_vectors)``, vectors as rows.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.eye(3)
      >>> exact, approximate = e[:2], e[jnp.array([0, 2])]  # the second direction is missed
      >>> out = compare_subspaces(jnp.array([2.0, 1.0]), exact, jnp.array([2.0, 0.5]), approximate)
      >>> out.relative_error.tolist(), [round(a, 4) for a in out.principal_angles.tolist()]
      ([0.0, 0.5], [0.0, 1.5708])
    """
    exact_values, values = jnp.asarray(exact_values), jnp.asarray(values)
    overlap = jnp.asarray(exact_vectors) @ jnp.asarray(vectors).T
    cosines = jnp.clip(jnp.linalg.svd(overlap, compute_uv=False), -1.0, 1.0)
    return ApproximationError(
        values,
        jnp.abs(values - exact_values) / jnp.abs(exact_values),
        jnp.sort(jnp.arccos(cosines)),
    )


def _diagonal_pairs(diagonal: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    values, index = jax.lax.top_k(diagonal, k)
    return values, jax.nn.one_hot(index, diagonal.shape[0], dtype=diagonal.dtype)


def _block_pairs(block: jax.Array, positions: np.ndarray, size: int, k: int):
    values, vectors = jnp.linalg.eigh(block)
    top = jnp.argsort(values)[::-1][:k]
    embedded = jnp.zeros((k, size), block.dtype).at[:, positions].set(vectors[:, top].T)
    return values[top], embedded


def _positions(params: chex.ArrayTree, mask: MaskLike) -> np.ndarray:
    """Indices of the selected leaves' entries in ``ravel_pytree(params)``'s order."""
    selected = jax.tree.leaves(resolve(mask, params))
    sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(params)]
    offsets = np.cumsum([0, *sizes])
    return np.concatenate(
        [np.arange(offsets[i], offsets[i + 1]) for i, chosen in enumerate(selected) if chosen]
    )


def audit_curvature(
    apply: Callable[[Any, jax.Array], jax.Array],
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    k: int = 5,
    likelihood: Likelihood = "classification",
    last_layer: MaskLike | None = None,
    kfac: bool = False,
    num_iters: int | None = None,
    tol: float = 1e-4,
) -> CurvatureAudit:
    """Audit the diagonal (with ``last_layer`` the last-layer, with ``kfac`` the KFAC and
    EKFAC) GGN against the exact one.

    Args:
      apply: ``apply(params, x) -> outputs`` in eval mode.
      params: the parameters (e.g. one trained member; ``vmap`` for a sweep).
      data: batched data (:func:`jaxreg.data.batches`).
      key: PRNG key for Lanczos's start vector.
      k: how many top eigenpairs to compare (static).
      likelihood: ``"classification"`` or ``"regression"``.
      last_layer: a mask selecting the last layer (e.g. ``masks.by_path(r"layers/2/")``);
        ``None`` audits the diagonal only.
      kfac: also audit ``"kron"`` and ``"ekfac"`` (the model needs a dense layer or a
        convolution).
      num_iters: Lanczos's cap (see :func:`jaxreg.sharpness.top_eigenvalues`).
      tol: Lanczos's relative eigenvalue tolerance; the eigenvectors, and so the
        angles, are accurate to about its square root.

    Returns:
      A :class:`CurvatureAudit`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jax.random.normal(jax.random.key(0), (32, 3)); y = (x[:, 0] > 0).astype(int)
      >>> out = audit_curvature(lambda w, x: x @ w, 0.1 * jnp.ones((3, 2)), batches(x, y, 16),
      ...                       key=jax.random.key(1), k=2)
      >>> out.exact_eigenvalues.shape, sorted(out.approximations)
      ((2,), ['diag'])
    """
    product = ggn_vp(apply, params, data, likelihood=likelihood)
    exact, vectors, _ = top_eigenvalues(
        None, params, data, key=key, k=k, matvec=product, num_iters=num_iters, tol=tol
    )
    exact_vectors = jax.vmap(lambda v: ravel_pytree(v)[0])(vectors)
    size = exact_vectors.shape[1]
    diagonal = ggn_diagonal(apply, params, data, likelihood=likelihood)
    results = {"diag": compare_subspaces(exact, exact_vectors, *_diagonal_pairs(diagonal, k))}
    if last_layer is not None:
        block = ggn_matrix(apply, params, data, likelihood=likelihood, wrt=last_layer)
        pairs = _block_pairs(block, _positions(params, last_layer), size, min(k, block.shape[0]))
        results["last_layer"] = compare_subspaces(
            exact[: pairs[0].shape[0]], exact_vectors[: pairs[0].shape[0]], *pairs
        )
    if kfac:
        for structure in ("kron", "ekfac"):
            pairs = _kfac_pairs(apply, params, data, likelihood, structure, k)
            results[structure] = compare_subspaces(exact, exact_vectors, *pairs)
    return CurvatureAudit(exact, results)


def _kfac_pairs(apply, params, data, likelihood, structure: str, k: int):
    """The top-``k`` eigenpairs of the KFAC/EKFAC curvature, vectors in ravel order."""
    leaves = jax.tree.leaves(params)
    mask = (True,) * len(leaves)
    values, bases, shapes = kron_curvature(apply, params, data, structure=structure,
                                           likelihood=likelihood, mask=mask)  # fmt: skip
    blocks = Blocks(tuple(leaf.size for leaf in leaves), shapes, bases)
    top, index = jax.lax.top_k(values, k)
    return top, from_eigenbasis(blocks, jax.nn.one_hot(index, values.shape[0], dtype=values.dtype))
