"""``run_stepwise``: :meth:`TrainLoop.run` driven from the host, one compiled call per step.

:meth:`TrainLoop.run` compiles whole epochs into ``lax.scan``: one program,
safe under ``jit``/``vmap``, and the fastest form on accelerators. On CPU one
case is much slower there: XLA:CPU rewrites convolutions into the layout its
fast (Eigen) kernel needs only in a program's entry computation
(``ConvCanonicalization`` visits ``module->entry_computation()``), so the
gradient convolutions inside a ``scan`` body fall back to a naive loop nest —
measured 6–18× slower per step on 2 cores. A hand-written loop, which calls a
jitted step per minibatch, never meets this.

:func:`run_stepwise` runs the same epochs as that hand-written loop does:
:meth:`TrainLoop.epoch_inputs`, then one jitted :meth:`TrainLoop.step` per
minibatch from a Python loop, then :meth:`TrainLoop.end_epoch`. Keys,
shuffles, early stopping and the history are those of :meth:`TrainLoop.run`;
numbers agree to float rounding (XLA may fuse a lone step differently), not
bitwise. It needs concrete inputs (a host call): under ``jit``/``vmap`` use
:meth:`TrainLoop.run`. :func:`jaxreg.fit` uses it with
``host=HostOptions(steps="host")``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxreg._checks import is_traced
from jaxreg.training.loop import Hparams, LoopData, TrainLoop, TrainState

__all__ = ["run_stepwise"]


class _Programs(NamedTuple):
    inputs: Callable[..., Any]
    step: Callable[..., Any]
    end: Callable[..., Any]


_PROGRAMS: OrderedDict[TrainLoop, _Programs] = OrderedDict()
_PROGRAMS_LIMIT = 4  # compiled programs hold memory: keep the last few loops only


def _stack(rows):
    return jax.tree.map(lambda *values: jnp.stack(values), *rows)


# Stacking a Python list of scalars eagerly costs one dispatch per element: compile it.
_stack_jit = jax.jit(_stack)


def _compile(loop: TrainLoop) -> _Programs:
    def step_at(carry, epoch_batches, step_keys, index, hparams):
        inputs = jax.tree.map(lambda a: a[index], (epoch_batches, step_keys))
        return loop.step(carry, inputs, hparams)

    def end(state, trained, step_outputs, data, hparams):
        values, weights = _stack(step_outputs)
        return loop.end_epoch(state, trained, values, weights, data, hparams)

    return _Programs(jax.jit(loop.epoch_inputs), jax.jit(step_at), jax.jit(end))


def _programs_for(loop: TrainLoop) -> _Programs:
    """The jitted pieces of ``loop``'s epoch, shared by every equal loop (the last few)."""
    try:
        programs = _PROGRAMS.pop(loop)
    except TypeError as error:  # an unhashable field: a tracer, or a user's callable
        if is_traced(loop.penalty_strength):
            raise ValueError(_UNDER_TRANSFORMATION) from error
        raise TypeError(
            f"steps='host' keeps compiled steps per TrainLoop and needs its fields hashable: "
            f"{error} (pass plain functions, optax transformations and numbers)"
        ) from error
    except KeyError:
        programs = _compile(loop)
    _PROGRAMS[loop] = programs  # most recently used last
    while len(_PROGRAMS) > _PROGRAMS_LIMIT:
        _PROGRAMS.popitem(last=False)
    return programs


_UNDER_TRANSFORMATION = (
    "steps='host' drives each minibatch step from the host and needs a host-side call of "
    "fit (concrete arrays, no enclosing jit/vmap/grad); use the default steps='scan' there"
)


def _epoch(
    programs: _Programs, state: TrainState, data: LoopData, key: jax.Array, hparams: Hparams
) -> tuple[TrainState, dict[str, jax.Array]]:
    epoch_batches, step_keys = programs.inputs(state.epoch, data, key)
    carry = (state.params, state.opt_state, state.model_state)
    step_outputs = []
    for index in range(step_keys.shape[0]):
        carry, output = programs.step(carry, epoch_batches, step_keys, index, hparams)
        if is_traced(output):  # e.g. a closure over a vmapped learning rate
            raise ValueError(_UNDER_TRANSFORMATION)
        step_outputs.append(output)
    return programs.end(state, carry, step_outputs, data, hparams)


def run_stepwise(
    loop: TrainLoop,
    state: TrainState,
    data: LoopData,
    *,
    key: jax.Array,
    num_epochs: int,
    hparams: Hparams | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Advance ``state`` by ``num_epochs`` epochs, one compiled call per minibatch step.

    Same contract as :meth:`TrainLoop.run` (same keys, shuffles, early
    stopping and history; a run split into several calls equals the run in
    one), from the host only. Programs are compiled once per equal
    :class:`TrainLoop` and reused by later calls.

    Args:
      loop: the run's :class:`TrainLoop`.
      state: the state to advance (from :meth:`TrainLoop.init` or an earlier run).
      data: :func:`~jaxreg.training.loop_data` of the run.
      key: the run's PRNG key (epoch ``e`` uses ``fold_in(key, e)``).
      num_epochs: epochs to run.
      hparams: the run's hyperparameters (concrete values).

    Returns:
      The advanced state and the per-epoch history (leading axis ``num_epochs``).

    Raises:
      ValueError: when called under ``jit``/``vmap``/``grad`` (traced inputs).

    Example:
      >>> import optax
      >>> from jaxreg.training import TrainLoop, loop_data
      >>> apply = lambda p, s, x, **kw: (x @ p, s)
      >>> x = jax.random.normal(jax.random.key(0), (32, 3)); y = (x[:, 0] > 0).astype(int)
      >>> loop = TrainLoop(apply, optax.sgd(0.1), batch_size=8)
      >>> data, key = loop_data((x, y)), jax.random.key(1)
      >>> state, history = run_stepwise(loop, loop.init(jnp.zeros((3, 2))), data, key=key,
      ...                               num_epochs=3)
      >>> scanned, _ = loop.run(loop.init(jnp.zeros((3, 2))), data, key=key, num_epochs=3)
      >>> int(state.epoch), bool(jnp.allclose(state.params, scanned.params, atol=1e-6))
      (3, True)
    """
    hparams = {} if hparams is None else hparams
    if is_traced((state, data, key, hparams)):
        raise ValueError(_UNDER_TRANSFORMATION)
    programs = _programs_for(loop)
    records = []
    try:
        for _ in range(num_epochs):
            state, record = _epoch(programs, state, data, key, hparams)
            records.append(record)
    except ValueError:
        _PROGRAMS.pop(loop, None)  # it closes over a tracer: keep none alive
        raise
    return state, _stack_jit(records)
