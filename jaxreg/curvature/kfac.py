"""KFAC and EKFAC factors of the GGN for dense layers, found in any parameter pytree.

For a dense layer ``y = x W + b`` used once per example, the GGN block of its
kernel is ``mean_n xₙxₙᵀ ⊗ Σ_k gₙₖgₙₖᵀ`` with ``gₙₖ = ∂yₙ/∂b ᵀ Aₙ[:, k]`` the
output gradient along the ``k``-th root of the loss Hessian; KFAC (Martens &
Grosse, 2015) replaces the mean of Kronecker products by the Kronecker
product of means, ``A ⊗ G`` with ``A = mean_n xₙxₙᵀ`` and ``G = mean_n Σ_k gₙₖgₙₖᵀ``,
and ``G`` is the exact GGN block of the bias (laplace-torch's convention:
kernel and bias are separate blocks). EKFAC (George et al., 2018) keeps the
eigenbasis of ``A ⊗ G`` and re-fits its eigenvalues to the exact diagonal of
the GGN in that basis.

No layer tagging is needed: a layer is a 2-D leaf named ``kernel`` (Flax,
``(in, out)``) or ``weight`` (Equinox/PyTorch, ``(out, in)``) with a 1-D
``bias`` sibling of the output size. The bias's per-example Jacobian gives
``gₙₖ``; a per-example gradient of the kernel is ``xₙ ⊗ gₙ``, so
``xₙ = (∂ℓₙ/∂W) gₙ / ‖gₙ‖²`` recovers the layer's input without reading the
model's activations. A kernel used several times per example (over a
sequence, a convolution, weight sharing) breaks that rank-1 form:
:attr:`DenseFactors.rank_one_error` measures it, and :func:`kfac_factors`
reports it instead of returning wrong factors silently. An example whose
layer output has no effect on the model's output (``gₙ = 0``: every ReLU after
the layer off) hides its input; :attr:`DenseFactors.unrecovered` counts those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from jaxreg.curvature._roots import ggn_roots
from jaxreg.curvature.likelihoods import Likelihood, as_outputs, check_likelihood
from jaxreg.curvature.subset import subset
from jaxreg.data import mean_over_batches
from jaxreg.masks import by_leaf_index, leaf_path

__all__ = ["DenseFactors", "DenseLayer", "dense_layers", "ekfac_eigenvalues", "kfac_factors"]

Apply = Callable[[Any, jax.Array], jax.Array]
#: How a kernel is laid out: ``"in_out"`` (Flax ``kernel``) or ``"out_in"`` (``weight``).
Layout = Literal["in_out", "out_in"]
_LAYOUTS = {"kernel": "in_out", "weight": "out_in"}


@struct.dataclass
class DenseLayer:
    """Where one dense layer's kernel and bias sit in ``jax.tree.leaves(params)``.

    Attributes:
      path: the layer's path, e.g. ``"layers/0"``.
      kernel: the kernel's index among the leaves.
      bias: the bias's index among the leaves.
      layout: ``"in_out"`` or ``"out_in"``.

    Example:
      >>> import jax.numpy as jnp
      >>> dense_layers({"dense": {"bias": jnp.zeros(2), "kernel": jnp.zeros((3, 2))}})
      (DenseLayer(path='dense', kernel=1, bias=0, layout='in_out'),)
    """

    path: str = struct.field(pytree_node=False)
    kernel: int = struct.field(pytree_node=False)
    bias: int = struct.field(pytree_node=False)
    layout: str = struct.field(pytree_node=False)


@struct.dataclass
class DenseFactors:
    """One dense layer's KFAC factors (means over the data; a pytree, so ``vmap`` it).

    Attributes:
      layer: the :class:`DenseLayer`.
      inputs: ``A = mean_n xₙxₙᵀ`` ``(in, in)``.
      output_grads: ``G = mean_n Σ_k gₙₖgₙₖᵀ`` ``(out, out)``: also the bias's exact GGN block.
      unrecovered: the share of the data (by weight) whose input to this layer
        could not be recovered: the layer's outputs had no effect at all on the
        model's outputs for them (e.g. every ReLU after it inactive), so they
        count with ``xₙ = 0`` in ``A`` (``G`` is exact: they add nothing to it).
        0 for a smooth network; check it for a ReLU network with narrow layers.
      rank_one_error: the root-mean-square relative distance of the per-example
        kernel gradients from ``xₙ ⊗ gₙ`` (about √ε of the dtype for a layer used once
        per example; order one for a kernel shared over positions).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> params = {"bias": jnp.zeros(1), "kernel": jnp.zeros((2, 1))}
      >>> apply = lambda p, x: x @ p["kernel"] + p["bias"]
      >>> (f,) = kfac_factors(apply, params, batches(jnp.array([[1.0, 2.0]]), jnp.zeros(1), 1),
      ...                     likelihood="regression")
      >>> f.inputs.tolist(), f.output_grads.tolist()
      ([[1.0, 2.0], [2.0, 4.0]], [[1.0]])
    """

    layer: DenseLayer
    inputs: jax.Array
    output_grads: jax.Array
    rank_one_error: jax.Array
    unrecovered: jax.Array


def dense_layers(params: Any) -> tuple[DenseLayer, ...]:
    """The dense layers of ``params``: 2-D ``kernel``/``weight`` leaves with a ``bias`` sibling.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"conv": {"kernel": jnp.zeros((3, 3, 1, 4))},
      ...           "out": {"weight": jnp.zeros((2, 4)), "bias": jnp.zeros(2)}}
      >>> [(layer.path, layer.layout) for layer in dense_layers(params)]
      [('out', 'out_in')]
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    where = {leaf_path(path): (index, leaf) for index, (path, leaf) in enumerate(leaves)}
    layers = []
    for name, (index, leaf) in where.items():
        parent, _, last = name.rpartition("/")
        bias = where.get(f"{parent}/bias" if parent else "bias")
        if last not in _LAYOUTS or jnp.ndim(leaf) != 2 or bias is None or jnp.ndim(bias[1]) != 1:
            continue
        layout = _LAYOUTS[last]
        out = jnp.shape(leaf)[1 if layout == "in_out" else 0]
        if jnp.shape(bias[1])[0] == out:
            layers.append(DenseLayer(parent, index, bias[0], layout))
    return tuple(layers)


def _layer_inputs(grads: list, layer: DenseLayer) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``xₙ`` ``(n, in)`` from per-example kernel and bias gradients, the squared relative
    rank-1 error ``(n,)`` and whether ``xₙ`` was lost (``gₙ = 0``) ``(n,)``."""
    kernel, bias = grads[layer.kernel], grads[layer.bias]
    if layer.layout == "out_in":
        kernel = jnp.swapaxes(kernel, 1, 2)
    norm = jnp.sum(jnp.square(bias), axis=1)
    safe = jnp.where(norm > 0, norm, 1.0)
    inputs = jnp.einsum("nio,no->ni", kernel, bias) / safe[:, None]
    total = jnp.sum(jnp.square(kernel), axis=(1, 2))
    # ‖∂W − x⊗g‖² = ‖∂W‖² − ‖x‖²‖g‖² for the least-squares x.
    residual = jnp.maximum(total - jnp.sum(jnp.square(inputs), axis=1) * norm, 0.0)
    return inputs, residual / jnp.where(total > 0, total, 1.0), norm == 0


def _batch_pieces(apply, params, layers, batch, likelihood, sigma_noise):
    """Per example: each layer's input ``xₙ``, output gradients ``gₙₖ``, and rank-1 error."""
    biases = subset(params, by_leaf_index(layer.bias for layer in layers))
    roots, weights = ggn_roots(apply, biases, batch, likelihood, sigma_noise)  # (n, K, B)
    splits = np.cumsum(biases.sizes)[:-1].tolist()
    by_leaf = dict(zip(biases.paths, jnp.split(roots, splits, axis=2), strict=True))
    num_outputs = roots.shape[1]  # the Hessian roots are C × C
    direction = jax.random.normal(jax.random.key(0), (num_outputs,), roots.dtype)

    def projected(p, xi):  # one fixed output direction: a generic, non-zero gₙ
        return jnp.vdot(direction, as_outputs(apply(p, xi[None]))[0])

    grads = jax.tree.leaves(jax.vmap(jax.grad(projected), (None, 0))(params, batch["x"]))
    pieces = [(_layer_inputs(grads, layer), by_leaf[layer.bias]) for layer in layers]
    return pieces, weights


def kfac_factors(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
) -> tuple[DenseFactors, ...]:
    """KFAC factors of the mean GGN for every dense layer of ``params`` (:func:`dense_layers`).

    Memory per batch: the per-example gradients of the parameters
    (``batch × P``) and the biases' Jacobian rows (``batch × C × Σ out``), never
    ``P²``; weighted like :func:`jaxreg.curvature.ggn_matrix` (padding never counts).

    Args:
      apply: ``apply(params, x) -> outputs`` in eval mode.
      params: the parameters (the curvature is taken at them).
      data: batched data (:func:`jaxreg.data.batches`); labels are not read.
      likelihood: ``"classification"`` or ``"regression"``.
      sigma_noise: the Gaussian's noise for regression (``G`` scales as ``1/σ²``).

    Returns:
      One :class:`DenseFactors` per dense layer, in leaf order. The layer's
      kernel block of the GGN is ``A ⊗ G`` (``"in_out"``) or ``G ⊗ A`` (``"out_in"``).

    Raises:
      ValueError: when ``params`` has no dense layer.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> params = {"bias": jnp.zeros(3), "kernel": jnp.zeros((2, 3))}
      >>> apply = lambda p, x: x @ p["kernel"] + p["bias"]
      >>> x = jax.random.normal(jax.random.key(0), (8, 2))
      >>> (f,) = kfac_factors(apply, params, batches(x, jnp.zeros(8, int), 4))
      >>> f.inputs.shape, f.output_grads.shape, bool(f.rank_one_error < 1e-2)
      ((2, 2), (3, 3), True)
    """
    check_likelihood(likelihood)
    layers = dense_layers(params)
    if not layers:
        raise ValueError(
            "params has no dense layer (a 2-D 'kernel' or 'weight' leaf with a 1-D 'bias' "
            "sibling of its output size); use ggn_diagonal or ggn_vp for other layers"
        )

    def batch_factors(batch):
        pieces, weights = _batch_pieces(apply, params, layers, batch, likelihood, sigma_noise)
        return [
            (
                jnp.einsum("ni,nj,n->ij", x, x, weights),
                jnp.einsum("nko,nkp,n->op", g, g, weights),
                jnp.dot(weights, error),
                jnp.dot(weights, lost.astype(weights.dtype)),
            )
            for (x, error, lost), g in pieces
        ]

    means = mean_over_batches(batch_factors, data)
    return tuple(
        DenseFactors(layer, a, g, jnp.sqrt(error), lost)
        for layer, (a, g, error, lost) in zip(layers, means, strict=True)
    )


def ekfac_eigenvalues(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    factors: tuple[DenseFactors, ...],
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
) -> tuple[tuple[jax.Array, jax.Array, jax.Array, jax.Array], ...]:
    """EKFAC: the exact GGN diagonal in each layer's KFAC eigenbasis.

    Args:
      apply, params, data, likelihood, sigma_noise: as for :func:`kfac_factors`.
      factors: :func:`kfac_factors` of the same model and data.

    Returns:
      Per layer ``(Q_A, Q_G, S_kernel, S_bias)``: the eigenvectors of ``A`` and
      ``G``, the re-fitted eigenvalues of the kernel block ``(in, out)``
      (``S[a, b] = mean_n Σ_k ((Q_Aᵀxₙ)_a (Q_Gᵀgₙₖ)_b)²``) and of the bias block ``(out,)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> params = {"bias": jnp.zeros(2), "kernel": jnp.zeros((2, 2))}
      >>> apply = lambda p, x: x @ p["kernel"] + p["bias"]
      >>> data = batches(jax.random.normal(jax.random.key(0), (6, 2)), jnp.zeros(6, int), 3)
      >>> factors = kfac_factors(apply, params, data)
      >>> ((qa, qg, s, sb),) = ekfac_eigenvalues(apply, params, data, factors)
      >>> s.shape, sb.shape
      ((2, 2), (2,))
    """
    check_likelihood(likelihood)
    layers = tuple(f.layer for f in factors)
    bases = [(jnp.linalg.eigh(f.inputs)[1], jnp.linalg.eigh(f.output_grads)[1]) for f in factors]

    def batch_scales(batch):
        pieces, weights = _batch_pieces(apply, params, layers, batch, likelihood, sigma_noise)
        scales = []
        for ((x, _, _), g), (qa, qg) in zip(pieces, bases, strict=True):
            xa, gb = jnp.square(x @ qa), jnp.square(jnp.einsum("nko,ob->nkb", g, qg))
            scales.append((jnp.einsum("na,nkb,n->ab", xa, gb, weights),
                           jnp.einsum("nkb,n->b", gb, weights)))  # fmt: skip
        return scales

    scales = mean_over_batches(batch_scales, data)
    return tuple((qa, qg, s, sb) for (qa, qg), (s, sb) in zip(bases, scales, strict=True))
