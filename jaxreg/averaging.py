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
(SWA's ``bn_update``): :func:`recompute_batch_stats`.

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

from jaxreg._checks import check_interval, require_params

__all__ = ["EmaState", "SwaState", "averaged_params", "ema", "recompute_batch_stats", "swa"]


class SwaState(NamedTuple):
    """State of :func:`swa`: steps taken, iterates averaged, their mean.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> opt = optax.chain(optax.sgd(1.0), swa(start=0))
      >>> params = {"w": jnp.array(0.0)}
      >>> state = opt.init(params)
      >>> for _ in range(3):  # w: 1, 2, 3
      ...     updates, state = opt.update({"w": jnp.array(-1.0)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> swa_state = state[1]
      >>> int(swa_state.count), int(swa_state.num_averaged), float(swa_state.average["w"])
      (3, 3, 2.0)
    """

    count: jax.Array
    num_averaged: jax.Array
    average: chex.ArrayTree


class EmaState(NamedTuple):
    """State of :func:`ema`: steps taken, the (biased) average, and the decay used.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> opt = optax.chain(optax.sgd(1.0), ema(0.5, debias=False))
      >>> params = {"w": jnp.array(0.0)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array(-2.0)}, state, params)  # w: 0 -> 2
      >>> ema_state = state[1]
      >>> int(ema_state.count), float(ema_state.average["w"])  # 0.5·0 + 0.5·2
      (1, 1.0)
    """

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

    Example:
      >>> opt = optax.chain(optax.sgd(1.0), swa(start=1, every=2))
      >>> params = {"w": jnp.array(0.0)}
      >>> state = opt.init(params)
      >>> for _ in range(4):  # w after steps 0..3: 1, 2, 3, 4; averaged at steps 1 and 3
      ...     updates, state = opt.update({"w": jnp.array(-1.0)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> float(averaged_params(state)["w"])
      3.0
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
        params = require_params(params, "swa")
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

    Example:
      >>> opt = optax.chain(optax.sgd(1.0), ema(0.5))
      >>> params = {"w": jnp.array(0.0)}
      >>> state = opt.init(params)
      >>> for _ in range(2):  # w: 1, 2; average 0.5, then 1.25; debiased 1.25 / (1 - 0.5²)
      ...     updates, state = opt.update({"w": jnp.array(-1.0)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> float(averaged_params(state)["w"])
      1.6666666269302368
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
        params = require_params(params, "ema")
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
    inside ``opt_state`` (e.g. ``FitResult.opt_state`` of a chained optimizer).

    Example:
      >>> opt = optax.chain(optax.adam(0.1), ema(0.9))
      >>> state = opt.init({"w": jnp.ones(2)})
      >>> averaged_params(state)["w"].shape
      (2,)
    """
    found = [node for node in jax.tree.leaves(opt_state, is_leaf=_is_average) if _is_average(node)]
    if len(found) != 1:
        raise ValueError(f"opt_state must hold exactly one swa or ema state, found {len(found)}")
    (state,) = found
    if isinstance(state, SwaState):
        return state.average
    correction = 1 - state.decay ** state.count.astype(state.decay.dtype)
    divisor = jnp.where(state.debias & (correction > 0), correction, 1)
    return jax.tree.map(lambda a: a / divisor.astype(a.dtype), state.average)


def recompute_batch_stats(
    model,
    params: chex.ArrayTree,
    x: jax.Array,
    *,
    batch_size: int,
    state: chex.ArrayTree | None = None,
    key: jax.Array | None = None,
    hparams: dict | None = None,
) -> chex.ArrayTree:
    """BatchNorm statistics for ``params`` (e.g. SWA's average): the mean of the per-batch
    statistics over ``x`` (SWA's ``bn_update``; PyTorch's ``update_bn``).

    Averaged weights were never run forward, so the running statistics that
    came with the last iterate do not match them. This runs ``model`` in train
    mode over ``x`` in batches of ``batch_size`` and returns, for every floating
    state leaf, the example-weighted mean of the per-batch statistics. Each
    such leaf must be an exponential moving average ``m·old + (1 − m)·batch``
    (NNX and Linen BatchNorm, any momentum): two train-mode passes per batch,
    from all-zero and all-one state, give ``m`` and the batch statistic
    without knowing the momentum. Other leaves are returned unchanged.

    Args:
      model: a :class:`jaxreg.nn.Model` with state (``from_nnx``, ``from_linen``).
      params: the parameters the statistics are for.
      x: inputs, examples along axis 0.
      batch_size: examples per forward pass (the statistics are per batch, as in
        training).
      state: the state to replace (default ``model.state``); gives the structure.
      key: dropout key for the train-mode passes (needed only with dropout > 0).
      hparams: hyperparameters ``model.apply`` reads (e.g. ``{"dropout_rate": 0.0}``).

    Returns:
      The new state, to pair with ``params`` for evaluation.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import ResNet1D, from_nnx
      >>> model = from_nnx(ResNet1D(widths=(4,), rngs=nnx.Rngs(0)))
      >>> x = jnp.ones((8, 40))
      >>> state = recompute_batch_stats(model, model.params, x, batch_size=4)
      >>> jax.tree.structure(state) == jax.tree.structure(model.state)
      True
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    state = model.state if state is None else state
    if not jax.tree.leaves(state):
        raise ValueError("model has no state to recompute (no BatchNorm statistics)")
    n = len(x)
    if n == 0:
        raise ValueError("x must hold at least one example")

    def floating(a) -> bool:
        return jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)

    zeros = jax.tree.map(lambda a: jnp.zeros_like(a) if floating(a) else a, state)
    ones = jax.tree.map(lambda a: jnp.ones_like(a) if floating(a) else a, state)

    @jax.jit
    def batch_statistics(xb):
        _, low = model.apply(params, zeros, xb, key=key, train=True, hparams=hparams)
        _, high = model.apply(params, ones, xb, key=key, train=True, hparams=hparams)
        # low = (1 − m)·s and high = m + (1 − m)·s, so m = high − low and s = low / (1 − m).
        return jax.tree.map(
            lambda lo, hi, a: lo / (1 - (hi - lo)) if floating(a) else a, low, high, state
        )

    total = None
    for start in range(0, n, batch_size):
        xb = jnp.asarray(x[start : start + batch_size])
        count = len(xb)
        weighted = jax.tree.map(
            lambda s, a: s * count if floating(a) else a,  # noqa: B023 (used at once)
            batch_statistics(xb),
            state,
        )
        total = (
            weighted
            if total is None
            else jax.tree.map(lambda t, s, a: t + s if floating(a) else a, total, weighted, state)
        )
    return jax.tree.map(lambda t, a: (t / n).astype(a.dtype) if floating(a) else a, total, state)
