"""The eigenstructure of a KFAC (``"kron"``) or EKFAC Laplace, group by group.

Each selected leaf becomes one group: a dense layer's kernel gets the
Kronecker eigenbasis of its factors, its bias the eigenbasis of ``G`` (its
exact GGN block); a convolution's kernel (or a dense kernel applied at several
positions of an example, over a sequence), read as a matrix ``(taps·in, out)``
(or ``(out, in·taps)``), the Kronecker eigenbasis of its KFAC-expand factors,
its bias the eigenbasis of its exact GGN block; and every other leaf (a
normalization's scale, a kernel without a bias) its exact GGN diagonal.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._checks import is_traced
from jaxreg.curvature.dense import ggn_diagonal, ggn_matrix
from jaxreg.curvature.kfac import DenseFactors, dense_layers, ekfac_eigenvalues, kfac_factors
from jaxreg.curvature.kfac_conv import conv_ekfac_eigenvalues, conv_kfac_factors, conv_layers
from jaxreg.masks import by_leaf_index

#: The largest rank-one error a dense layer may have for ``"kron"``/``"ekfac"``.
RANK_ONE_TOLERANCE = 0.05
#: The largest share of the data whose layer input may be lost (see ``DenseFactors``).
UNRECOVERED_TOLERANCE = 1e-3


def _check_rank_one(factors: tuple[DenseFactors, ...], tolerance: float) -> None:
    errors = [(f.rank_one_error, f.unrecovered) for f in factors]
    if is_traced(errors):
        return
    for f in factors:
        if float(f.unrecovered) > UNRECOVERED_TOLERANCE:
            raise ValueError(
                f"layer {f.layer.path!r}: for {float(f.unrecovered):.1%} of the data its "
                "outputs have no effect on the model's outputs (every unit after it inactive, "
                "e.g. dead ReLUs), so its inputs cannot be recovered and KFAC's input factor "
                "would be too small. Use structure='diag', or leave the layer out with wrt="
            )
        if float(f.rank_one_error) > tolerance:
            raise ValueError(
                f"layer {f.layer.path!r} is not a dense layer applied once per example (its "
                f"per-example kernel gradients are {float(f.rank_one_error):.2g} from rank one: "
                "a kernel shared over a sequence or positions); KFAC's factors would be wrong. "
                "Use structure='diag', or leave the layer out with wrt="
            )


def _kron_eigen(factors) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(Q_A, Q_G, λ_A ⊗ λ_G (in, out), λ_G)`` of one layer's ``A ⊗ G`` (PSD: clipped at 0)."""
    (la, qa), (lg, qg) = jnp.linalg.eigh(factors.inputs), jnp.linalg.eigh(factors.output_grads)
    la, lg = jnp.maximum(la, 0.0), jnp.maximum(lg, 0.0)
    return qa, qg, jnp.outer(la, lg), lg


def _dense_groups(apply, params, data, structure, likelihood, chosen_leaves, tolerance, shared):
    """``{leaf index: (eigenvalues (size,), per-axis bases, shape)}`` of the selected dense
    leaves applied once per example (``shared`` kernels are factored as convolutions)."""
    if not {layer.kernel for layer in dense_layers(params)} - shared:
        return {}
    factors = kfac_factors(apply, params, data, likelihood=likelihood)
    factors = tuple(
        f
        for f in factors
        if {f.layer.kernel, f.layer.bias} & chosen_leaves and f.layer.kernel not in shared
    )
    _check_rank_one(factors, tolerance)
    if structure == "ekfac":
        decomposed = ekfac_eigenvalues(apply, params, data, factors, likelihood=likelihood)
    else:
        decomposed = [_kron_eigen(f) for f in factors]
    groups = {}
    for f, (qa, qg, kernel_values, bias_values) in zip(factors, decomposed, strict=True):
        flip = f.layer.layout == "out_in"
        kernel_values = kernel_values.T if flip else kernel_values
        groups[f.layer.kernel] = (
            kernel_values.ravel(),
            (qg, qa) if flip else (qa, qg),
            kernel_values.shape,
        )
        groups[f.layer.bias] = (bias_values, (qg,), bias_values.shape)
    return groups


def _conv_kernel_groups(apply, params, data, structure, likelihood, factors) -> dict:
    """Each convolution kernel's eigenvalues (as its matrix) and bases: KFAC's, or EKFAC's."""
    if structure == "ekfac":
        decomposed = conv_ekfac_eigenvalues(apply, params, data, factors, likelihood=likelihood)
    else:
        decomposed = [_kron_eigen(f)[:3] for f in factors]
    groups = {}
    for f, (qa, qg, values) in zip(factors, decomposed, strict=True):
        flip = f.layer.out_axis == 0
        groups[f.layer.kernel] = (values.T if flip else values, (qg, qa) if flip else (qa, qg))
    return groups


def _conv_groups(apply, params, data, structure, likelihood, chosen_leaves, found):
    """``{leaf index: (eigenvalues, bases, shape)}`` of the selected convolutions' leaves."""
    layers = [layer for layer in found if layer.kernel in chosen_leaves]
    if not layers:
        return {}
    kept = {layer.kernel for layer in layers}
    factors = conv_kfac_factors(apply, params, data, likelihood=likelihood)
    factors = tuple(f for f in factors if f.layer.kernel in kept)
    kernels = _conv_kernel_groups(apply, params, data, structure, likelihood, factors)
    groups = {i: (v.ravel(), bases, v.shape) for i, (v, bases) in kernels.items()}
    biases = [layer.bias for layer in layers if layer.bias >= 0 and layer.bias in chosen_leaves]
    if biases:
        block = ggn_matrix(apply, params, data, likelihood=likelihood, wrt=by_leaf_index(biases))
        offsets = np.cumsum([0, *(jax.tree.leaves(params)[i].size for i in biases)])
        for k, index in enumerate(biases):
            lo, hi = offsets[k], offsets[k + 1]
            values, basis = jnp.linalg.eigh(block[lo:hi, lo:hi])
            groups[index] = (jnp.maximum(values, 0.0), (basis,), values.shape)
    return groups


def kron_curvature(
    apply, params: Any, data, *, structure: str, likelihood: str, mask: tuple[bool, ...],
    tolerance: float = RANK_ONE_TOLERANCE,
) -> tuple[jax.Array, tuple, tuple]:  # fmt: skip
    """``(eigenvalues (P,), bases, shapes)`` over the selected leaves, in leaf order; each
    group's bases act on the axes of its shape (the leaf's size, as a matrix for a kernel)."""
    chosen_leaves = {index for index, chosen in enumerate(mask) if chosen}
    found = conv_layers(apply, params, data["x"][0, :1])
    if not found and not dense_layers(params):
        raise ValueError(
            f"structure={structure!r}: params has no dense layer (a 2-D 'kernel' or 'weight' "
            "leaf with a 1-D 'bias' sibling of its output size) and apply no convolution "
            "with a parameter kernel; use structure='diag'"
        )
    shared = {layer.kernel for layer in found}
    groups = _dense_groups(
        apply, params, data, structure, likelihood, chosen_leaves, tolerance, shared
    )
    groups.update(_conv_groups(apply, params, data, structure, likelihood, chosen_leaves, found))
    rest = sorted(chosen_leaves - set(groups))
    if rest:
        diagonal = ggn_diagonal(apply, params, data, likelihood=likelihood, wrt=by_leaf_index(rest))
        leaves = jax.tree.leaves(params)
        offsets = [0]
        for index in rest:
            offsets.append(offsets[-1] + leaves[index].size)
        for k, index in enumerate(rest):
            groups[index] = (diagonal[offsets[k] : offsets[k + 1]], (), leaves[index].shape)
    ordered = [groups[index] for index in sorted(chosen_leaves)]
    values = jnp.concatenate([values for values, _, _ in ordered])
    return values, tuple(b for _, b, _ in ordered), tuple(tuple(s) for _, _, s in ordered)
