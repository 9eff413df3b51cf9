"""Bridge from a Flax NNX module to a pure ``apply(params, x, *, key=None, train=False)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import chex
import jax
from flax import nnx

__all__ = ["Apply", "functional", "init_params"]


def _to_pure_dict(state: nnx.State) -> dict:
    if hasattr(nnx, "to_pure_dict"):
        return nnx.to_pure_dict(state)
    return state.to_pure_dict()  # flax < 0.12


class Apply(Protocol):
    """A model as a pure function of its parameters."""

    def __call__(
        self,
        params: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array: ...


def functional(model: nnx.Module) -> tuple[Apply, dict]:
    """Split an NNX module into a pure ``apply`` and its trainable parameters.

    ``params`` is a plain nested dict of the module's ``nnx.Param`` arrays, so it
    can be vmapped, differentiated, penalized and checkpointed like any pytree.
    Non-trainable state (e.g. batch-norm statistics) is held fixed inside
    ``apply``. The dropout key arrives at call time: ``apply(params, x,
    key=k, train=True)``; a ``vmap`` over keys gives each member its own mask.

    Args:
      model: an NNX module whose ``__call__(x, *, train, rngs)`` follows the
        jaxreg model convention (all models in :mod:`jaxreg.nn` do).

    Returns:
      ``(apply, params)``.

    Example:
      >>> from jaxreg.nn import MLP
      >>> apply, params = functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))
      >>> apply(params, jnp.ones((2, 4))).shape
      (2, 3)
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(
        params: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        module = nnx.merge(graphdef, params, rest)
        rngs = None if key is None else nnx.Rngs(dropout=key)
        return module(x, train=train, rngs=rngs)

    return apply, _to_pure_dict(params)


def init_params(
    make_model: Callable[[nnx.Rngs], nnx.Module], keys: jax.Array
) -> tuple[Apply, dict]:
    """Initialise a stack of models, one per key, as ``(apply, params with leading axis)``.

    Example:
      >>> from jaxreg.nn import MLP
      >>> make = lambda rngs: MLP((4, 8, 3), rngs=rngs)
      >>> apply, params = init_params(make, jax.random.split(jax.random.key(0), 5))
      >>> params["layers"][0]["kernel"].shape
      (5, 4, 8)
    """
    if keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of keys, got shape {keys.shape}")
    apply, _ = functional(make_model(nnx.Rngs(params=keys[0])))
    params = jax.vmap(lambda k: functional(make_model(nnx.Rngs(params=k)))[1])(keys)
    return apply, params
