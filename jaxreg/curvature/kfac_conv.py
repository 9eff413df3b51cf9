"""KFAC factors of the GGN for convolutional layers, found in the model's jaxpr.

A convolution applies its kernel at every output position ``t``: its
per-example GGN root along the ``k``-th root of the loss Hessian is
``Σ_t xₙₜ ⊗ gₙₜₖ`` (``xₙₜ`` the input patch, ``gₙₜₖ`` the output gradient at ``t``),
so the kernel's GGN block is a sum over *pairs* of positions and is not one
Kronecker product even for one example. Grosse & Martens (2016) and
Eschenhagen et al. (2023) give two Kronecker approximations:

- ``"expand"`` (KFC): positions as extra examples. ``A = mean_n mean_t xₙₜxₙₜᵀ``,
  ``G = mean_n Σ_t Σ_k gₙₜₖgₙₜₖᵀ``.
- ``"reduce"``: positions pooled first. ``A = mean_n x̄ₙx̄ₙᵀ`` with
  ``x̄ₙ = mean_t xₙₜ``, ``G = mean_n Σ_k ḡₙₖḡₙₖᵀ`` with ``ḡₙₖ = Σ_t gₙₜₖ``.

Both scale like curvlinops' ``KFACLinearOperator`` (``kfac_approx``), and both
are exact for a convolution with one output position and one example. EKFAC
(:func:`conv_ekfac_eigenvalues`; George et al., 2018) keeps KFAC's eigenbasis
and re-fits the eigenvalues to the exact GGN diagonal in it. The
layers are found without tagging: the model is traced once and every
``conv_general_dilated`` whose kernel is a parameter leaf, used once, is a
layer (grouped and transposed convolutions are left out), and so is a dense
kernel applied at several positions of one example (a ``Dense`` over a
sequence: a 1×1 convolution, whose kernel :func:`jaxreg.curvature.kfac_factors`
reports as not rank one). ``A`` is laid out
in the kernel leaf's own order: for a Flax kernel ``(kh, kw, in, out)`` the
kernel block is ``A ⊗ G`` over the leaf's row-major entries, for an Equinox
or PyTorch ``weight`` ``(out, in, kh, kw)`` it is ``G ⊗ A``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from jaxreg.curvature._conv_sites import Site, Traced
from jaxreg.curvature._roots import ggn_roots
from jaxreg.curvature.likelihoods import Likelihood, as_outputs, check_likelihood, hessian_root
from jaxreg.curvature.subset import subset
from jaxreg.data import example_weights, mean_over_batches
from jaxreg.masks import by_leaf_index, leaf_path

__all__ = [
    "APPROXIMATIONS",
    "ConvFactors",
    "ConvLayer",
    "conv_ekfac_eigenvalues",
    "conv_kfac_factors",
    "conv_layers",
]

Apply = Callable[[Any, jax.Array], jax.Array]
#: How KFAC treats a convolution's positions (a type alias): ``"expand"`` or ``"reduce"``.
#:
#: Example:
#:   >>> from jaxreg.curvature import APPROXIMATIONS
#:   >>> APPROXIMATIONS
#:   ('expand', 'reduce')
APPROXIMATIONS: tuple[str, ...] = ("expand", "reduce")
Approximation = Literal["expand", "reduce"]


@struct.dataclass
class ConvLayer:
    """Where one convolution's kernel and bias sit in ``jax.tree.leaves(params)``.

    Attributes:
      path: the layer's path, e.g. ``"conv"``.
      kernel: the kernel's index among the leaves.
      bias: the bias's index among the leaves (a ``bias`` sibling with one
        entry per output channel), or ``-1``.
      out_axis: the kernel's output-channel axis: ``0`` (``weight``,
        ``(out, in, kh, kw)``) or its last (``kernel``, ``(kh, kw, in, out)``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = {"conv": {"bias": jnp.zeros(4), "kernel": jnp.zeros((3, 3, 2, 4))}}
      >>> def apply(p, x):
      ...     y = jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (1, 1), "SAME",
      ...                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
      ...     return (y + p["conv"]["bias"]).mean(axis=(1, 2))
      >>> conv_layers(apply, params, jnp.zeros((1, 5, 5, 2)))
      (ConvLayer(path='conv', kernel=1, bias=0, out_axis=3),)
    """

    path: str = struct.field(pytree_node=False)
    kernel: int = struct.field(pytree_node=False)
    bias: int = struct.field(pytree_node=False)
    out_axis: int = struct.field(pytree_node=False)


@struct.dataclass
class ConvFactors:
    """One convolution's KFAC factors (means over the data; a pytree, so ``vmap`` it).

    Attributes:
      layer: the :class:`ConvLayer`.
      inputs: ``A`` ``(D, D)``, ``D`` the kernel's size without its output
        axis, in the kernel leaf's row-major order of its other axes.
      output_grads: ``G`` ``(out, out)``.
      approximation: ``"expand"`` or ``"reduce"``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxreg.data import batches
      >>> params = {"kernel": jnp.ones((2, 1, 1))}  # (out, in, width)
      >>> def apply(p, x):
      ...     return jax.lax.conv(x, p["kernel"], (1,), "VALID").mean(axis=2)
      >>> x = jnp.array([[[1.0, 3.0]]])  # (batch, channels, width)
      >>> (f,) = conv_kfac_factors(apply, params, batches(x, jnp.zeros(1), 1),
      ...                          likelihood="regression")
      >>> f.inputs.tolist(), f.output_grads.tolist()  # mean x² = 5; Σ_t (1/2)² = 1/2
      ([[5.0]], [[0.5, 0.0], [0.0, 0.5]])
    """

    layer: ConvLayer
    inputs: jax.Array
    output_grads: jax.Array
    approximation: str = struct.field(pytree_node=False, default="expand")


def _layers(params: Any, sites: tuple[Site, ...]) -> tuple[ConvLayer, ...]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [leaf_path(path) for path, _ in flat]  # indexed like the sites' kernels
    layers = []
    for site in sites:
        if site.out_axis not in (0, len(site.kernel_shape) - 1):
            continue  # neither Flax's nor PyTorch's layout: no 2-D reading of the leaf
        parent = paths[site.kernel].rpartition("/")[0]
        name = f"{parent}/bias" if parent else "bias"
        bias = paths.index(name) if name in paths else -1
        if bias >= 0 and np.size(flat[bias][1]) != site.kernel_shape[site.out_axis]:
            bias = -1  # a bias sibling of another size belongs to something else
        layers.append(ConvLayer(parent, site.kernel, bias, site.out_axis))
    return tuple(layers)


def conv_layers(apply: Apply, params: Any, x: jax.Array) -> tuple[ConvLayer, ...]:
    """The convolutions of ``apply`` whose kernel is a leaf of ``params``, in call order
    (dense kernels applied at several positions of an example included).

    Args:
      apply: ``apply(params, x) -> outputs``.
      params: the parameters.
      x: a batch of inputs (only its shape and dtype are read).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> net = nn.Sequential([nn.Conv(4, (3, 3)), lambda h: h.mean(axis=(1, 2)), nn.Dense(2)])
      >>> params = net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
      >>> layers = conv_layers(net.apply, params, jnp.zeros((1, 6, 6, 1)))
      >>> [(layer.path, layer.out_axis) for layer in layers]
      [('params/layers_0', 3)]
    """
    traced = Traced(apply, params, jnp.zeros_like(x[:1]))
    return _layers(params, traced.sites)


def _patches(site: Site, lhs: jax.Array) -> jax.Array:
    """Input patches ``(T, D)``, ``D`` in the kernel leaf's order of its non-output axes."""
    if site.kind == "im2col":  # already patches, in the kernel's row-major (taps, in) order
        return lhs.reshape(-1, lhs.shape[-1])
    p, spec = site.params, site.params["dimension_numbers"]
    filter_shape = [site.kernel_shape[a] for a in spec.rhs_spec[2:]]
    patches = jax.lax.conv_general_dilated_patches(
        lhs, filter_shape, p["window_strides"], p["padding"], p["lhs_dilation"],
        p["rhs_dilation"], spec, p["precision"],
    )  # fmt: skip
    rows = jnp.moveaxis(patches, spec.out_spec[1], -1).reshape(-1, patches.shape[spec.out_spec[1]])
    order = (spec.rhs_spec[1], *spec.rhs_spec[2:])  # a patch runs over (in, *window)
    blocks = rows.reshape(rows.shape[0], *[site.kernel_shape[a] for a in order])
    leaf_order = sorted(order)
    blocks = jnp.transpose(blocks, (0, *[1 + order.index(a) for a in leaf_order]))
    return blocks.reshape(rows.shape[0], -1)


def _example_pieces(traced: Traced, params, xi, likelihood, sigma_noise):
    """Per site of one example: patches ``(T, D)`` and output-gradient roots ``(K, T, out)``."""
    zeros = [jnp.zeros(s.output_shape, s.output_dtype) for s in traced.sites]

    def outputs(perturbations):
        out, inputs = traced.run_with_sites(params, xi[None], perturbations)
        out = as_outputs(out)[0]
        return out, (out, inputs)

    jac, (out, inputs) = jax.jacrev(outputs, has_aux=True)(zeros)
    root = hessian_root(out[None], likelihood, sigma_noise)[0]  # (C, K)
    pieces = []
    for site, site_jac, lhs in zip(traced.sites, jac, inputs, strict=True):
        grads = jnp.tensordot(root, site_jac, axes=([0], [0]))
        grads = jnp.moveaxis(grads, 1 + site.feature_axis, -1)
        pieces.append((_patches(site, lhs), grads.reshape(root.shape[1], -1, grads.shape[-1])))
    return pieces


def _factor_sums(x: jax.Array, g: jax.Array, w: jax.Array, approximation: str):
    """``(A, G)`` of a batch: ``x`` ``(n, T, D)``, ``g`` ``(n, K, T, out)``, weights ``w``."""
    if approximation == "expand":
        a = jnp.einsum("ntd,nte,n->de", x, x, w) / x.shape[1]
        return a, jnp.einsum("nkto,nktp,n->op", g, g, w)
    xbar, gsum = jnp.mean(x, axis=1), jnp.sum(g, axis=2)
    return jnp.einsum("nd,ne,n->de", xbar, xbar, w), jnp.einsum("nko,nkp,n->op", gsum, gsum, w)


def conv_kfac_factors(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
    approximation: Approximation = "expand",
) -> tuple[ConvFactors, ...]:
    """KFAC factors of the mean GGN for every convolution of ``apply`` (:func:`conv_layers`).

    Memory per batch: per example and layer, the input patches ``(T, D)`` and
    the output Jacobian ``C × T × out`` (``T`` output positions), never
    ``P²``; weighted like :func:`jaxreg.curvature.ggn_matrix` (padding never counts).

    Args:
      apply: ``apply(params, x) -> outputs`` in eval mode.
      params: the parameters (the curvature is taken at them).
      data: batched data (:func:`jaxreg.data.batches`); labels are not read.
      likelihood: ``"classification"`` or ``"regression"``.
      sigma_noise: the Gaussian's noise for regression (``G`` scales as ``1/σ²``).
      approximation: ``"expand"`` (positions as examples; the default) or ``"reduce"``.

    Returns:
      One :class:`ConvFactors` per convolution, in call order.

    Raises:
      ValueError: when ``apply`` has no convolution with a parameter kernel,
        or for an unknown ``approximation``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> from jaxreg.data import batches
      >>> net = nn.Sequential([nn.Conv(3, (3, 3)), lambda h: h.mean(axis=(1, 2)), nn.Dense(2)])
      >>> x = jax.random.normal(jax.random.key(0), (8, 5, 5, 2))
      >>> params = net.init(jax.random.key(1), x[:1])
      >>> (f,) = conv_kfac_factors(net.apply, params, batches(x, jnp.zeros(8, int), 4))
      >>> f.inputs.shape, f.output_grads.shape  # D = 3·3·2 in (kh, kw, in) order
      ((18, 18), (3, 3))
    """
    check_likelihood(likelihood)
    if approximation not in APPROXIMATIONS:
        raise ValueError(f"approximation must be one of {APPROXIMATIONS}, got {approximation!r}")
    traced = Traced(apply, params, jnp.zeros_like(data["x"][0, :1]))
    layers = _layers(params, traced.sites)
    if not layers:
        raise ValueError(
            "apply has no convolution whose kernel is a leaf of params (grouped and "
            "transposed convolutions, and kernels used twice, are left out); use "
            "kfac_factors for dense layers, or ggn_diagonal"
        )
    kept = [i for i, s in enumerate(traced.sites) if s.kernel in {la.kernel for la in layers}]

    def batch_factors(batch):
        pieces = jax.vmap(lambda xi: _example_pieces(traced, params, xi, likelihood, sigma_noise))(
            batch["x"]
        )
        weights = example_weights(batch, pieces[0][0].dtype)
        return [_factor_sums(*pieces[i], weights, approximation) for i in kept]

    means = mean_over_batches(batch_factors, data)
    return tuple(
        ConvFactors(layer, a, g, approximation) for layer, (a, g) in zip(layers, means, strict=True)
    )


def _kernel_roots(part: jax.Array, layer: ConvLayer, kernel_shape: tuple) -> jax.Array:
    """Per-example GGN roots of one kernel ``(n, K, D, out)`` from ``(n, K, size)``."""
    out = kernel_shape[layer.out_axis]
    if layer.out_axis == 0:
        return jnp.swapaxes(part.reshape(*part.shape[:2], out, -1), 2, 3)
    return part.reshape(*part.shape[:2], -1, out)


def conv_ekfac_eigenvalues(
    apply: Apply,
    params: Any,
    data: dict[str, jax.Array],
    factors: tuple[ConvFactors, ...],
    *,
    likelihood: Likelihood = "classification",
    sigma_noise: ArrayLike = 1.0,
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], ...]:
    """EKFAC for convolutions: each kernel's exact GGN diagonal in its KFAC eigenbasis.

    Memory per batch: the kernels' per-example GGN roots (``batch × C × Σ kernel sizes``).

    Args:
      apply, params, data, likelihood, sigma_noise: as for :func:`conv_kfac_factors`.
      factors: :func:`conv_kfac_factors` of the same model and data.

    Returns:
      Per layer ``(Q_A, Q_G, S)``: the eigenvectors of ``A`` and ``G`` and the
      re-fitted eigenvalues ``(D, out)`` of the kernel block (``S[a, b] =
      mean_n Σ_k ((Q_A ⊗ Q_G)ᵀ vec Rₙₖ)²_{ab}``, ``Rₙₖ = Σ_t xₙₜ gₙₜₖᵀ`` the kernel's
      per-example GGN root, read as ``(D, out)`` whatever the leaf's layout).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> from jaxreg.data import batches
      >>> net = nn.Sequential([nn.Conv(3, (3, 3)), lambda h: h.mean(axis=(1, 2)), nn.Dense(2)])
      >>> x = jax.random.normal(jax.random.key(0), (8, 5, 5, 2))
      >>> params = net.init(jax.random.key(1), x[:1])
      >>> data = batches(x, jnp.zeros(8, int), 4)
      >>> factors = conv_kfac_factors(net.apply, params, data)
      >>> ((qa, qg, s),) = conv_ekfac_eigenvalues(net.apply, params, data, factors)
      >>> qa.shape, qg.shape, s.shape
      ((18, 18), (3, 3), (18, 3))
    """
    check_likelihood(likelihood)
    leaves = jax.tree.leaves(params)
    kernels = [f.layer.kernel for f in factors]
    chosen = subset(params, by_leaf_index(kernels))
    order = [chosen.paths.index(i) for i in kernels]
    splits = np.cumsum(chosen.sizes)[:-1].tolist()
    bases = [(jnp.linalg.eigh(f.inputs)[1], jnp.linalg.eigh(f.output_grads)[1]) for f in factors]

    def batch_scales(batch):
        roots, weights = ggn_roots(apply, chosen, batch, likelihood, sigma_noise)  # (n, K, P)
        parts = jnp.split(roots, splits, axis=2)
        scales = []
        for f, index, (qa, qg) in zip(factors, order, bases, strict=True):
            block = _kernel_roots(parts[index], f.layer, leaves[f.layer.kernel].shape)
            rotated = jnp.einsum("nkde,da,eb->nkab", block, qa, qg)
            scales.append(jnp.einsum("nkab,n->ab", jnp.square(rotated), weights))
        return scales

    scales = mean_over_batches(batch_scales, data)
    return tuple((qa, qg, s) for (qa, qg), s in zip(bases, scales, strict=True))
