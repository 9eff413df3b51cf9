"""Weight averaging as optax transforms: SWA and an exponential moving average of weights.

Both keep an average of the *parameters after each step* in their state and pass
the updates through unchanged, so put them **last** in ``optax.chain`` (they
read ``params + updates``). Read the average with :func:`averaged_params`, which
finds the averaging state anywhere inside a chained optimizer state.

- :func:`swa` (Izmailov et al., 2018): the plain mean of the iterates from step
  ``start`` on, every ``every`` steps (use it with a constant or cyclic learning
  rate from ``start``).
- :func:`ema`: Polyak–Ruppert style exponential average
  ``a ← decay·a + (1 − decay)·w``, with Adam's bias correction
  ``a / (1 − decayᵗ)`` when ``debias`` is set.

Models with BatchNorm need their statistics recomputed for the averaged weights
(SWA's ``bn_update``); that is not done here.

Example:
  >>> import jax.numpy as jnp, optax
  >>> opt = optax.chain(optax.sgd(1.0), swa(start=1))
  >>> params = {"w": jnp.array(0.0)}
  >>> state = opt.init(params)
  >>> for g in (-1.0, -2.0, -3.0):  # w: 1, 3, 6; averaged from step 1: (3 + 6) / 2
  ...     updates, state = opt.update({"w": jnp.array(g)}, state, params)
  ...     params = optax.apply_updates(params, updates)
  >>> float(averaged_params(state)["w"])
  4.5
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_interval
from jaxreg.transforms import _require_params

__all__ = ["EmaState", "SwaState", "averaged_params", "ema", "swa"]


class SwaState(NamedTuple):
    """State of :func:`swa`: steps taken, iterates averaged, their mean."""

    count: jax.Array
    num_averaged: jax.Array
    average: chex.ArrayTree


class EmaState(NamedTuple):
    """State of :func:`ema`: steps taken, the (biased) average, and the decay used."""

    count: jax.Array
    average: chex.ArrayTree
    decay: jax.Array
    debias: jax.Array


def swa(start: int = 0, every: int = 1) -> optax.GradientTransformation:
    """Stochastic weight averaging: the mean of the parameters after steps ``start``,
    ``start + every``, ... (steps counted from 0); before ``start`` the average is the
    latest iterate.

    Args:
      start: first step whose result is averaged.
      every: steps between averaged iterates (e.g. the steps per epoch, to average
        at the end of each epoch or each learning-rate cycle).
    """
    if start < 0:
        raise ValueError(f"start must be non-negative, got {start}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")

    def init_fn(params):
        return SwaState(
            count=jnp.zeros((), jnp.int32),
            num_averaged=jnp.zeros((), jnp.int32),
            average=jax.tree.map(jnp.asarray, params),
        )

    def update_fn(updates, state, params=None):
        params = _require_params(params, "swa")
        new = optax.apply_updates(params, updates)
        take = (state.count >= start) & ((state.count - start) % every == 0)
        n = state.num_averaged
        # Before the first averaged step the "average" follows the iterate.
        weight = jnp.where(n > 0, 1.0 / (n + 1), 1.0)
        average = jax.tree.map(
            lambda a, w: jnp.where(take | (n == 0), a + (w - a) * weight.astype(a.dtype), a),
            state.average,
            new,
        )
        return updates, SwaState(
            count=optax.safe_increment(state.count),
            num_averaged=n + take.astype(n.dtype),
            average=average,
        )

    return optax.GradientTransformation(init_fn, update_fn)


def ema(decay: ArrayLike, *, debias: bool = True) -> optax.GradientTransformation:
    """Exponential moving average of the parameters after each step.

    Args:
      decay: the weight of the old average, in ``[0, 1)`` (may be traced).
      debias: read the average divided by ``1 − decayᵗ`` (the average then starts
        at the first iterate rather than at zero).
    """
    check_interval(decay, "decay", 0.0, 1.0)

    def init_fn(params):
        return EmaState(
            count=jnp.zeros((), jnp.int32),
            average=jax.tree.map(jnp.zeros_like, params),
            decay=jnp.asarray(decay, jnp.result_type(float)),
            debias=jnp.asarray(debias),
        )

    def update_fn(updates, state, params=None):
        params = _require_params(params, "ema")
        new = optax.apply_updates(params, updates)
        average = jax.tree.map(
            lambda a, w: (decay * a + (1 - decay) * w).astype(a.dtype), state.average, new
        )
        return updates, state._replace(count=optax.safe_increment(state.count), average=average)

    return optax.GradientTransformation(init_fn, update_fn)


def _is_average(node) -> bool:
    return isinstance(node, SwaState | EmaState)


def averaged_params(opt_state: chex.ArrayTree) -> chex.ArrayTree:
    """The averaged parameters held by the (single) :func:`swa` or :func:`ema` state found
    inside ``opt_state`` (e.g. ``FitResult.opt_state`` of a chained optimizer)."""
    found = [node for node in jax.tree.leaves(opt_state, is_leaf=_is_average) if _is_average(node)]
    if len(found) != 1:
        raise ValueError(f"opt_state must hold exactly one swa or ema state, found {len(found)}")
    (state,) = found
    if isinstance(state, SwaState):
        return state.average
    correction = 1 - state.decay ** state.count.astype(state.decay.dtype)
    divisor = jnp.where(state.debias & (correction > 0), correction, 1)
    return jax.tree.map(lambda a: a / divisor.astype(a.dtype), state.average)
