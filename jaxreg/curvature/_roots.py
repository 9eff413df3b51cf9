"""Per-example Jacobians, GGN roots and gradients: the pieces every dense curvature shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg.curvature.likelihoods import as_outputs, hessian_root, output_gradient
from jaxreg.curvature.subset import Subset
from jaxreg.data import example_weights

Apply = Callable[[Any, jax.Array], jax.Array]


def jacobians_and_outputs(apply: Apply, chosen: Subset, x: jax.Array):
    """Per-example Jacobians ``(n, C, P)`` and the outputs ``(n, C)`` from the same passes."""
    model = chosen.outputs(apply)

    def one(flat, xi):
        outputs = as_outputs(model(flat, xi[None]))[0]
        return outputs, outputs

    return jax.vmap(jax.jacrev(one, has_aux=True), (None, 0))(chosen.flat, x)


def ggn_roots(apply, chosen, batch, likelihood, sigma_noise):
    """``Rₙ = Jₙᵀ Aₙ`` ``(n, C, P)`` (``Gₙ = Rₙ Rₙᵀ``) and the batch's weights ``wₙ/Σw``."""
    jac, outputs = jacobians_and_outputs(apply, chosen, batch["x"])
    root = hessian_root(outputs, likelihood, sigma_noise)
    return jnp.einsum("ncp,nck->nkp", jac, root), example_weights(batch, jac.dtype)


def gradients(apply, chosen, batch, likelihood):
    """Per-example gradients ``gₙ`` ``(n, P)`` and the batch's weights ``wₙ/Σw``."""
    jac, outputs = jacobians_and_outputs(apply, chosen, batch["x"])
    residual = output_gradient(outputs, batch["y"], likelihood)
    return jnp.einsum("ncp,nc->np", jac, residual), example_weights(batch, jac.dtype)
