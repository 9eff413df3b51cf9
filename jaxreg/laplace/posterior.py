"""The Laplace approximation at a trained model: a Gaussian around the MAP with GGN curvature.

``p(θ | D) ≈ N(θ*, (N·G/σ² + P₀)⁻¹)``: ``θ*`` the trained parameters, ``G`` the
mean GGN over the ``N`` training examples (:mod:`jaxreg.curvature`; ``σ = 1``
for classification), ``P₀ = diag(δ)`` the prior precision. The curvature is
computed once; the prior precision and the noise are arguments of everything
downstream (evidence, predictive), so choosing them never refits.

Structures: ``"full"`` (dense ``P × P``, kept as its eigendecomposition; a
small model or a last layer), ``"diag"`` (exact GGN diagonal), ``"kron"``
(KFAC: per dense layer ``A ⊗ G`` for the kernel and ``G`` for the bias,
:func:`jaxreg.curvature.kfac_factors`; per convolution KFAC-expand's ``A ⊗ G``
for the kernel and the exact block for the bias,
:func:`jaxreg.curvature.conv_kfac_factors`; every other leaf diagonal) and
``"ekfac"`` (KFAC's eigenbasis with the exact GGN diagonal in it). ``wrt``
restricts the approximation to a subset, e.g. the last layer; the other
parameters stay at their trained values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxreg.curvature import (
    Likelihood,
    Subset,
    as_outputs,
    check_likelihood,
    ggn_diagonal,
    ggn_matrix,
    negative_log_likelihood,
    subset,
)
from jaxreg.curvature._kron import kron_curvature
from jaxreg.data import batch_weight, mean_over_batches
from jaxreg.losses import weighted_mean
from jaxreg.masks import MaskLike, leaf_path, resolve

__all__ = ["STRUCTURES", "Laplace", "Structure", "fit_laplace"]

#: A Laplace approximation's curvature structure (a type alias).
#:
#: Example:
#:   >>> import typing
#:   >>> from jaxreg.laplace import Structure
#:   >>> typing.get_args(Structure)
#:   ('full', 'diag', 'kron', 'ekfac')
Structure = Literal["full", "diag", "kron", "ekfac"]
#: The structures :func:`fit_laplace` accepts.
#:
#: Example:
#:   >>> from jaxreg.laplace import STRUCTURES
#:   >>> STRUCTURES
#:   ('full', 'diag', 'kron', 'ekfac')
STRUCTURES: tuple[str, ...] = ("full", "diag", "kron", "ekfac")


@struct.dataclass
class Laplace:
    """A fitted Laplace approximation (a pytree: ``vmap`` it over a sweep's members).

    Attributes:
      mean: the MAP of the approximated parameters, flat ``(P,)``.
      params: all trained parameters (those outside ``wrt`` stay fixed).
      curvature: the mean GGN at ``σ = 1``: ``(P, P)`` (full) or ``(P,)`` (diag;
        kron/ekfac: its eigenvalues, as ``eigenvalues``).
      eigenvalues: full: the GGN's eigenvalues (clipped at 0); diag: its
        diagonal; kron/ekfac: each group's eigenvalues in its eigenbasis.
      eigenvectors: full: ``(P, P)`` eigenvectors; otherwise empty.
      num_data: ``N``, the total weight of the training data.
      fit_term: classification: ``Σₙ ℓₙ`` (cross-entropy); regression: ``Σₙ ‖fₙ − yₙ‖²``.
      structure: ``"full"``, ``"diag"``, ``"kron"`` or ``"ekfac"``.
      likelihood: ``"classification"`` or ``"regression"``.
      group_sizes: parameters per selected leaf ("layer", in pytree order).
      group_names: those leaves' paths, e.g. ``"layers/2/kernel"``.
      num_outputs: ``C``.
      wrt: which leaves of ``params`` are approximated (in ``jax.tree.leaves`` order).
      bases: kron/ekfac: per group, one orthogonal matrix per axis of its
        ``group_shapes`` entry (the group's eigenvectors are their Kronecker
        product), or ``()`` for a group kept diagonal; empty otherwise.
      group_shapes: the selected leaves' shapes; kron/ekfac: a convolution's
        kernel as the matrix its factors act on (``(taps·in, out)`` or
        ``(out, in·taps)``, the leaf's row-major entries) and its bias as ``(out,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
      >>> la = fit_laplace(lambda w, x: x @ w, jnp.zeros((2, 1)), batches(x, jnp.zeros(3), 3),
      ...                  likelihood="regression")
      >>> la.mean.shape, la.structure, int(la.num_data), la.group_names
      ((2,), 'full', 3, ('',))
    """

    mean: jax.Array
    params: chex.ArrayTree
    curvature: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    num_data: jax.Array
    fit_term: jax.Array
    structure: str = struct.field(pytree_node=False)
    likelihood: str = struct.field(pytree_node=False)
    group_sizes: tuple[int, ...] = struct.field(pytree_node=False)
    group_names: tuple[str, ...] = struct.field(pytree_node=False)
    num_outputs: int = struct.field(pytree_node=False)
    wrt: tuple[bool, ...] = struct.field(pytree_node=False)
    bases: tuple = ()
    group_shapes: tuple[tuple[int, ...], ...] = struct.field(pytree_node=False, default=())

    @property
    def num_params(self) -> int:
        """``P``, the number of approximated parameters."""
        return int(sum(self.group_sizes))

    @property
    def groups(self) -> np.ndarray:
        """``(P,)`` int32: the group (selected leaf) of each approximated parameter."""
        return np.repeat(np.arange(len(self.group_sizes), dtype=np.int32), self.group_sizes)

    def subset(self) -> Subset:
        """The approximated parameters as a :class:`jaxreg.curvature.Subset` of ``params``."""
        mask = jax.tree.unflatten(jax.tree.structure(self.params), list(self.wrt))
        return subset(self.params, mask)


def _group_names(params: chex.ArrayTree, wrt: tuple[bool, ...]) -> tuple[str, ...]:
    paths = [leaf_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return tuple(p for p, chosen in zip(paths, wrt, strict=True) if chosen)


def _fit_term(apply, params, data, likelihood: str) -> tuple[jax.Array, jax.Array]:
    """``(N, Σ fit)``: total weight, and summed cross-entropy or squared error."""

    def batch_mean(batch):
        outputs = as_outputs(apply(params, batch["x"]))
        if likelihood == "classification":
            per_example = negative_log_likelihood(outputs, batch["y"], likelihood)
        else:
            targets = batch["y"].reshape(outputs.shape).astype(outputs.dtype)
            per_example = jnp.sum(jnp.square(outputs - targets), axis=-1)
        return weighted_mean(per_example, batch.get("weight"))

    num_data = jnp.sum(jax.vmap(batch_weight)(data))
    return num_data, mean_over_batches(batch_mean, data) * num_data


def fit_laplace(
    apply: Callable[[Any, jax.Array], jax.Array],
    params: chex.ArrayTree,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    structure: Structure = "full",
    wrt: MaskLike | None = None,
) -> Laplace:
    """Fit a Laplace approximation around trained ``params`` on the training ``data``.

    Args:
      apply: ``apply(params, x) -> outputs`` in eval mode (logits, or regression
        means); for a :class:`jaxreg.nn.Model` pass ``model.bind()``.
      params: the trained (MAP) parameters.
      data: the *training* data, batched (:func:`jaxreg.data.batches`); weights
        count as multiplicities, padding never counts.
      likelihood: ``"classification"`` or ``"regression"`` (Gaussian; its noise
        ``σ`` is an argument of the evidence and the predictive).
      structure: ``"full"`` (``P × P``: memory ``P²``, an ``eigh`` of ``P³``),
        ``"diag"`` (memory ``O(P)`` plus ``batch × C × P`` for the Jacobians),
        ``"kron"`` (KFAC; memory ``Σ in² + out²`` plus ``batch × P`` per-example
        gradients) or ``"ekfac"`` (KFAC's eigenbasis, eigenvalues re-fitted to
        the exact diagonal: one more pass). For kron/ekfac a dense layer must be
        applied once per example (``ValueError`` otherwise; see
        :func:`jaxreg.curvature.kfac_factors`); a convolution, and a dense
        kernel applied over a sequence, gets KFAC-expand factors
        (:func:`jaxreg.curvature.conv_kfac_factors`, memory ``C × T × out``
        per example and layer for ``T`` output positions).
      wrt: the parameters to approximate (a mask, e.g.
        ``masks.by_path(r"layers/2/")`` for a last-layer Laplace); all by default.

    Returns:
      A :class:`Laplace`; pass it with a prior precision to
      :func:`log_marginal_likelihood`, :func:`glm_predictive`,
      :func:`sample_predictive` or :func:`optimize_prior_precision`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> x = jax.random.normal(jax.random.key(0), (20, 3))
      >>> y = (x[:, 0] > 0).astype(int)
      >>> la = fit_laplace(lambda w, x: x @ w, jnp.zeros((3, 2)), batches(x, y, 10),
      ...                  structure="diag")
      >>> la.curvature.shape, round(float(la.fit_term), 3)  # 20 · log 2 at w = 0
      ((6,), 13.863)
    """
    check_likelihood(likelihood)
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    mask = tuple(bool(m) for m in jax.tree.leaves(resolve(wrt, params)))
    chosen = subset(params, wrt)
    bases = ()
    leaves = jax.tree.leaves(params)
    shapes = tuple(np.shape(leaf) for leaf, m in zip(leaves, mask, strict=True) if m)
    if structure in ("kron", "ekfac"):
        curvature, bases, shapes = kron_curvature(apply, params, data, structure=structure,
                                                  likelihood=likelihood, mask=mask)  # fmt: skip
    else:
        curvature_fn = ggn_matrix if structure == "full" else ggn_diagonal
        curvature = curvature_fn(apply, params, data, likelihood=likelihood, wrt=wrt)
    if structure == "full":
        eigenvalues, eigenvectors = jnp.linalg.eigh(curvature)
        eigenvalues = jnp.maximum(eigenvalues, 0.0)  # a PSD matrix's rounding below 0
    else:
        eigenvalues, eigenvectors = curvature, jnp.zeros((0,), curvature.dtype)
    num_data, fit_term = _fit_term(apply, params, data, likelihood)
    probe = jax.eval_shape(apply, params, data["x"][0, :1])
    num_outputs = int(np.prod(probe.shape[1:], dtype=int)) if len(probe.shape) > 1 else 1
    return Laplace(
        mean=chosen.flat,
        params=params,
        curvature=curvature,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        num_data=num_data,
        fit_term=fit_term,
        structure=structure,
        likelihood=likelihood,
        group_sizes=chosen.sizes,
        group_names=_group_names(params, mask),
        num_outputs=num_outputs,
        wrt=mask,
        bases=bases,
        group_shapes=shapes,
    )
