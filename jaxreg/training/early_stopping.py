"""Early stopping as a pure state machine: safe inside ``jit``, ``scan`` and per ``vmap`` member.

Keras's ``EarlyStopping`` callback branches in Python, so it cannot live inside
a compiled loop, let alone stop one member of a vmapped sweep and not another.
Here the state is a pytree of arrays and :func:`update` uses ``jnp.where`` only:
each member of a ``vmap`` keeps its own best parameters, counter and stop step.

Semantics (Keras's): a metric *improves* when it beats the best so far by more
than ``min_delta``; after ``patience`` consecutive calls without improvement the
member stops. A NaN or infinite metric never improves and never becomes best.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_non_negative

__all__ = ["EarlyStopping", "EarlyStoppingState", "init", "update"]

Mode = Literal["min", "max"]


class EarlyStoppingState(NamedTuple):
    """State of one early-stopping run (every field an array, so it vmaps).

    Attributes:
      best_metric: best value seen (``+inf``/``-inf`` before any finite one).
      best_params: parameters at ``best_step``.
      best_step: index of the :func:`update` call that set the best (``-1`` if none).
      wait: consecutive calls without improvement.
      stopped: whether the run has stopped (it then stays frozen).
      stop_step: index of the call at which it stopped (``-1`` while running).
      step: number of :func:`update` calls so far.
      patience: calls without improvement before stopping.
      min_delta: minimum change that counts as an improvement.
      sign: ``+1`` for ``mode="min"``, ``-1`` for ``"max"``.

    Example:
      >>> state = init({"w": jnp.zeros(2)}, patience=2, mode="max")  # watch an accuracy
      >>> for accuracy in [0.5, 0.75, 0.625, 0.6875]:
      ...     state = update(state, accuracy, {"w": jnp.full(2, accuracy)})
      >>> float(state.best_metric), int(state.best_step), bool(state.stopped)
      (0.75, 1, True)
      >>> state.best_params["w"].tolist()
      [0.75, 0.75]
    """

    best_metric: jax.Array
    best_params: chex.ArrayTree
    best_step: jax.Array
    wait: jax.Array
    stopped: jax.Array
    stop_step: jax.Array
    step: jax.Array
    patience: jax.Array
    min_delta: jax.Array
    sign: jax.Array


class EarlyStopping(NamedTuple):
    """Early-stopping option of :func:`jaxreg.fit`: which history metric to watch, and how.

    ``monitor`` is a history key such as ``"eval_loss"`` or ``"eval_accuracy"``
    (``"eval_*"`` needs ``eval_data``). ``patience`` and ``min_delta`` may be traced.

    Example:
      >>> import optax
      >>> from jaxreg import fit
      >>> x = jnp.linspace(-1, 1, 32)[:, None]
      >>> y = (x[:, 0] > 0).astype(jnp.int32)
      >>> result = fit(lambda p, x, **kw: x @ p["w"], {"w": jnp.zeros((1, 2))},
      ...              optax.sgd(1.0), (x, y), key=jax.random.key(0), num_epochs=200,
      ...              batch_size=32, eval_data=(x, y),
      ...              early_stopping=EarlyStopping(patience=5, min_delta=1e-3))
      >>> s = result.early_stopping  # stops 5 epochs after the best; best params restored
      >>> bool(s.stopped), int(s.stop_step) - int(s.best_step)
      (True, 5)
    """

    patience: ArrayLike
    min_delta: ArrayLike = 0.0
    mode: Mode = "min"
    monitor: str = "eval_loss"


def _sign(mode: str) -> float:
    if mode == "min":
        return 1.0
    if mode == "max":
        return -1.0
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


def init(
    params: chex.ArrayTree, patience: ArrayLike, min_delta: ArrayLike = 0.0, mode: Mode = "min"
) -> EarlyStoppingState:
    """Fresh state; ``best_params`` starts as ``params``.

    Example:
      >>> state = init({"w": jnp.zeros(2)}, patience=1)
      >>> for loss in [3.0, 2.0, 2.5, 2.4]:
      ...     state = update(state, loss, {"w": jnp.full(2, loss)})
      >>> bool(state.stopped), int(state.best_step), int(state.stop_step), float(state.best_metric)
      (True, 1, 2, 2.0)
    """
    check_non_negative(patience, "patience")
    check_non_negative(min_delta, "min_delta")
    sign = _sign(mode)
    dtype = jnp.result_type(float)  # float64 under jax_enable_x64
    return EarlyStoppingState(
        best_metric=jnp.asarray(jnp.inf * sign, dtype),
        best_params=params,
        best_step=jnp.asarray(-1, jnp.int32),
        wait=jnp.asarray(0, jnp.int32),
        stopped=jnp.asarray(False),
        stop_step=jnp.asarray(-1, jnp.int32),
        step=jnp.asarray(0, jnp.int32),
        patience=jnp.asarray(patience, dtype),
        min_delta=jnp.asarray(min_delta, dtype),
        sign=jnp.asarray(sign, dtype),
    )


def update(
    state: EarlyStoppingState, metric: ArrayLike, params: chex.ArrayTree
) -> EarlyStoppingState:
    """Record ``metric`` for ``params``; a stopped state is returned unchanged (frozen).

    Pure and branch-free: use it inside ``jit``/``scan``/``vmap``.

    Example:
      >>> state = init(jnp.zeros(()), patience=1)
      >>> state = update(state, 1.0, jnp.array(1.0))
      >>> state = update(state, jnp.nan, jnp.array(2.0))  # a non-finite metric never improves
      >>> bool(state.stopped), float(state.best_params)
      (True, 1.0)
      >>> update(state, 0.0, jnp.array(3.0)) == state  # stopped: frozen
      True
    """
    metric = jnp.asarray(metric, state.best_metric.dtype)
    running = ~state.stopped
    improved = jnp.isfinite(metric) & (
        state.sign * metric < state.sign * state.best_metric - state.min_delta
    )
    take = running & improved
    wait = jnp.where(running, jnp.where(improved, 0, state.wait + 1), state.wait)
    stop_now = running & ~improved & (wait >= state.patience)
    return EarlyStoppingState(
        best_metric=jnp.where(take, metric, state.best_metric),
        best_params=jax.tree.map(
            lambda new, old: jnp.where(take, new, old), params, state.best_params
        ),
        best_step=jnp.where(take, state.step, state.best_step),
        wait=wait.astype(jnp.int32),
        stopped=state.stopped | stop_now,
        stop_step=jnp.where(stop_now, state.step, state.stop_step),
        step=jnp.where(running, state.step + 1, state.step),
        patience=state.patience,
        min_delta=state.min_delta,
        sign=state.sign,
    )
