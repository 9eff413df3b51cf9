"""The eigenstructure of a KFAC (``"kron"``) or EKFAC Laplace, group by group.

Each selected leaf becomes one group: a dense layer's kernel gets the
Kronecker eigenbasis of its factors, its bias the eigenbasis of ``G`` (its
exact GGN block), and every other leaf (a convolution, a normalization's
scale, a kernel without a bias) its exact GGN diagonal.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxreg._checks import is_traced
from jaxreg.curvature.dense import ggn_diagonal
from jaxreg.curvature.kfac import DenseFactors, ekfac_eigenvalues, kfac_factors

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


def _dense_groups(apply, params, data, structure, likelihood, chosen_leaves, tolerance):
    """``{leaf index: (eigenvalues (size,), per-axis bases)}`` of the selected dense leaves."""
    factors = kfac_factors(apply, params, data, likelihood=likelihood)
    factors = tuple(f for f in factors if {f.layer.kernel, f.layer.bias} & chosen_leaves)
    _check_rank_one(factors, tolerance)
    if structure == "ekfac":
        decomposed = ekfac_eigenvalues(apply, params, data, factors, likelihood=likelihood)
    else:
        decomposed = []
        for f in factors:
            (la, qa), (lg, qg) = jnp.linalg.eigh(f.inputs), jnp.linalg.eigh(f.output_grads)
            la, lg = jnp.maximum(la, 0.0), jnp.maximum(lg, 0.0)
            decomposed.append((qa, qg, jnp.outer(la, lg), lg))
    groups = {}
    for f, (qa, qg, kernel_values, bias_values) in zip(factors, decomposed, strict=True):
        flip = f.layer.layout == "out_in"
        groups[f.layer.kernel] = (
            (kernel_values.T if flip else kernel_values).ravel(),
            (qg, qa) if flip else (qa, qg),
        )
        groups[f.layer.bias] = (bias_values, (qg,))
    return groups


def kron_curvature(
    apply, params: Any, data, *, structure: str, likelihood: str, mask: tuple[bool, ...],
    tolerance: float = RANK_ONE_TOLERANCE,
) -> tuple[jax.Array, tuple]:  # fmt: skip
    """``(eigenvalues (P,), bases)`` over the selected leaves, in leaf order."""
    chosen_leaves = {index for index, chosen in enumerate(mask) if chosen}
    groups = _dense_groups(apply, params, data, structure, likelihood, chosen_leaves, tolerance)
    rest = sorted(chosen_leaves - set(groups))
    if rest:
        treedef = jax.tree.structure(params)
        rest_mask = jax.tree.unflatten(treedef, [i in rest for i in range(len(mask))])
        diagonal = ggn_diagonal(apply, params, data, likelihood=likelihood, wrt=rest_mask)
        leaves = jax.tree.leaves(params)
        offsets = [0]
        for index in rest:
            offsets.append(offsets[-1] + leaves[index].size)
        for k, index in enumerate(rest):
            groups[index] = (diagonal[offsets[k] : offsets[k + 1]], ())
    ordered = [groups[index] for index in sorted(chosen_leaves)]
    return jnp.concatenate([values for values, _ in ordered]), tuple(b for _, b in ordered)
