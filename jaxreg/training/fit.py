"""``fit``: the host driver around the pure training core (:mod:`jaxreg.training.loop`).

:func:`fit` compiles :meth:`TrainLoop.run` once with ``jax.jit`` and runs it in
chunks of epochs. What it does between chunks follows one rule, visible in its
results: when a chunk's results are concrete arrays, fit reads them on the
host — it shows progress, writes orbax checkpoints after every chunk (and
resumes from them bitwise), stops as soon as every early-stopping member has
stopped, and raises on a run that diverged. When they are tracers
(``jax.core.Tracer``: fit is being traced by an enclosing ``jit``, ``vmap``,
``grad`` or ``scan``, through its arguments or through a closure such as
``optax.adam(lr)`` under ``vmap`` over ``lr``), nothing can be read on the host:
fit runs every chunk, returns traced results, flags divergence per member
(:attr:`FitResult.nonfinite_epoch`) and refuses checkpoints.

Hyperparameters are data: one mapping ``hparams`` reaches the model's
dropout rates (by name), an optimizer factory, the penalty strength and the
batch transforms, so a sweep of learning rate × dropout rate × weight decay
is one compile with nothing rebuilt per value:

Example:
  >>> import jaxreg
  >>> from jaxreg.nn import MLP, from_nnx
  >>> x = jax.random.normal(jax.random.key(0), (200, 8)); y = (x[:, 0] > 0).astype(int)
  >>> model = from_nnx(MLP((8, 32, 2), rngs=nnx.Rngs(0)))
  >>> optimizer = lambda h: optax.chain(optax.adam(h["learning_rate"]),
  ...     jaxreg.transforms.decoupled_weight_decay(h["weight_decay"]))
  >>> def train_fn(config, key):  # config: learning_rate, dropout_rate, weight_decay
  ...     result = jaxreg.fit(model, model.params, optimizer, (x[:150], y[:150]), key=key,
  ...         hparams=config, num_epochs=5, batch_size=50, eval_data=(x[150:], y[150:]))
  ...     return {"val_accuracy": result.history["eval_accuracy"][-1]}
  >>> configs = jaxreg.sweeps.grid(learning_rate=[1e-3, 1e-2], dropout_rate=[0.0, 0.3],
  ...                              weight_decay=[0.0, 1e-3])
  >>> sweep = jaxreg.sweeps.run(train_fn, configs, key=jax.random.key(1), seeds=2, progress=False)
  >>> sweep.to_dataframe().shape  # 8 configs × 2 seeds; 3 config columns, seed, failed, metric
  (16, 6)
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxreg._checks import (
    check_batch_size,
    check_key,
    check_non_negative,
    hparam_problems,
    is_traced,
)
from jaxreg.data import batches
from jaxreg.losses import PerExampleLoss
from jaxreg.nn.model import Apply, Model, as_model
from jaxreg.progress import progress_bar
from jaxreg.sweeps._tracking import ReadTracker
from jaxreg.tasks import Task, classification
from jaxreg.training import checkpoints
from jaxreg.training.early_stopping import EarlyStopping, EarlyStoppingState
from jaxreg.training.host import HostOptions, NonFinitePolicy
from jaxreg.training.loop import (
    BatchTransform,
    Optimizer,
    Penalty,
    TrainLoop,
    TrainState,
    loop_data,
    task_metrics,
)
from jaxreg.training.stepwise import run_stepwise

__all__ = ["FitResult", "evaluate", "fit"]


class FitResult(NamedTuple):
    """Outcome of :func:`fit`.

    Attributes:
      params: parameters after the last epoch (the best ones with early stopping).
      opt_state: optimizer state after the last epoch.
      history: dict of per-epoch arrays, leading axis ``num_epochs``:
        ``objective`` (mean minibatch training objective, penalty included),
        ``train_loss`` and the task's metrics on the full training set in eval
        mode (``train_accuracy`` for classification, ``train_rmse``/``train_r2``
        for regression) and, with ``eval_data``, the same as ``eval_*``; with
        early stopping, ``stopped``.
      early_stopping: the final early-stopping state (``best_step``,
        ``stop_step``, ...), or None.
      model_state: non-parameter model state that goes with ``params``
        (BatchNorm statistics; ``{}`` for a model without state).
      nonfinite_epoch: first epoch whose training objective was NaN or
        infinite, ``-1`` if none (per member under ``vmap``).

    Example:
      >>> import optax
      >>> x = jnp.linspace(-1, 1, 32)[:, None]; y = (x[:, 0] > 0).astype(jnp.int32)
      >>> result = fit(lambda p, x, **kw: x @ p["w"], {"w": jnp.zeros((1, 2))}, optax.sgd(1.0),
      ...              (x, y), key=jax.random.key(0), num_epochs=5, batch_size=8, eval_data=(x, y))
      >>> sorted(result.history), result.history["train_accuracy"].shape
      (['eval_accuracy', 'eval_loss', 'objective', 'train_accuracy', 'train_loss'], (5,))
      >>> result.early_stopping is None, int(result.nonfinite_epoch)
      (True, -1)
    """

    params: chex.ArrayTree
    opt_state: optax.OptState
    history: dict[str, jax.Array]
    early_stopping: EarlyStoppingState | None = None
    model_state: chex.ArrayTree = None
    nonfinite_epoch: jax.Array | None = None

    @property
    def failed(self) -> jax.Array:
        """Whether the run's objective became non-finite (per member under ``vmap``)."""
        return jnp.asarray(self.nonfinite_epoch) >= 0


def _task(task: Task | None, loss: PerExampleLoss | None) -> Task:
    if task is not None and loss is not None:
        raise ValueError("give either task or loss, not both")
    if task is None:
        return classification() if loss is None else classification(loss)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a jaxreg.tasks.Task, got {type(task).__name__}")
    return task


def _check_hparams(hparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated ``hparams`` as a dict (a ``dict`` passes as the same object).

    Checking a dict flattens it as a pytree instead of iterating it: a mapping that records
    which names are looked up (as :func:`jaxreg.sweeps.run` does) sees no reads here.
    """
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping):
        raise TypeError(
            f"hparams must be a mapping of names to values, got {type(hparams).__name__}"
        )
    if not isinstance(hparams, dict):
        hparams = dict(hparams)
    flat, _ = jax.tree_util.tree_flatten_with_path(hparams, is_leaf=lambda v: v is not hparams)
    items = [(path[0].key, value) for path, value in flat]
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"hparams keys must be str, got {name!r}")
        if isinstance(value, str) or np.ndim(value) != 0:
            raise ValueError(f"hparams[{name!r}] must be a scalar, got {value!r}")
        problem = "" if is_traced(value) else hparam_problems(name, value).item()
        if problem:
            raise ValueError(f"hparams[{name!r}] is invalid: {problem}")
    return hparams


# Abstract traces that a repeated fit call (a host-side loop over seeds, a benchmark)
# would otherwise redo each time: the names one step reads, the model's output shape.
_PROBES: dict[Any, Any] = {}
_PROBES_LIMIT = 32


def _abstract(tree: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves)


def _probe_key(*parts: Any, hparams: dict | None) -> Any:
    """A hashable key for a cached probe, or None when an input cannot be keyed.

    A sweep's :class:`ReadTracker` or traced values are never keyed: reading every
    name to build a key would mark them all as read.
    """
    if isinstance(hparams, ReadTracker) or is_traced(hparams):
        return None
    try:
        items = (hparams or {}).items()
        values = tuple(sorted((name, np.asarray(value).item()) for name, value in items))
        key = (*parts, values)
        hash(key)
    except (TypeError, ValueError):  # an unhashable loop field, or a non-scalar value
        return None
    return key


def _cached_probe(key: Any, probe: Callable[[], Any]) -> Any:
    """``probe()``, remembered under ``key`` (the last few keys; never when ``key`` is None)."""
    if key is None:
        return probe()
    if key not in _PROBES:
        _PROBES[key] = probe()
        while len(_PROBES) > _PROBES_LIMIT:
            _PROBES.pop(next(iter(_PROBES)))
    return _PROBES[key]


def _names_one_step_reads(loop: TrainLoop, params, state, data, hparams: dict) -> frozenset[str]:
    """The ``hparams`` names that ``init`` and one ``step`` look up (one abstract trace)."""
    read: set[str] = set()
    tracker = ReadTracker(hparams, read)

    def one_step():
        train_state = loop.init(params, state, hparams=tracker)
        epoch_batches, keys = loop.epoch_inputs(jnp.zeros((), jnp.int32), data, jax.random.key(0))
        first = jax.tree.map(lambda a: a[0], epoch_batches)
        carry = (train_state.params, train_state.opt_state, train_state.model_state)
        return loop.step(carry, (first, keys[0]), tracker)

    jax.eval_shape(one_step)
    return frozenset(read)


def _check_hparams_are_read(loop: TrainLoop, params, state, data, hparams: dict) -> None:
    """``ValueError`` for concrete ``hparams`` names that one training step never reads.

    One abstract trace (``jax.eval_shape``) of ``init`` and a ``step`` records which names
    the model, optimizer factory, penalty, loss and batch transform look up. Traced
    ``hparams`` (a sweep's members) are left to :func:`jaxreg.sweeps.run`, which checks the
    names its ``train_fn`` reads.
    """
    if not hparams or isinstance(hparams, ReadTracker) or is_traced(hparams):
        return
    key = _probe_key("read", loop, _abstract((params, state, data)), hparams=hparams)
    read = _cached_probe(key, lambda: _names_one_step_reads(loop, params, state, data, hparams))
    unread = sorted(set(hparams) - read)
    if unread:
        raise ValueError(
            f"hparams {unread} are read by nothing in this run (model, optimizer, penalty, "
            f"loss, batch transform); the names it reads are {sorted(read) or 'none'}. A fixed "
            "optax optimizer reads no hparams: pass a factory such as "
            "lambda h: optax.adam(h['learning_rate'])."
        )


def _check_targets(model: Model, params, state, task: Task, x, y, name: str, hparams: dict) -> None:
    """Host-side: targets against the model's output shape (concrete values only)."""
    if task.check_targets is None or is_traced((y, params, state)):
        return
    example = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), jnp.asarray(x[:1]).dtype)
    key = _probe_key("output", model.apply, _abstract((params, state, example)), hparams=hparams)
    try:
        probe = _cached_probe(
            key,
            lambda: jax.eval_shape(
                lambda p, s, xb: model.apply(p, s, xb, train=False, hparams=hparams)[0],
                params,
                state,
                example,
            ),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"the model cannot take the {name.replace('labels', 'inputs')} (examples of shape "
            f"{np.shape(x)[1:]}): {str(error).rstrip('.')}. Check the feature width against "
            "the model's first layer, and that params belong to this model."
        ) from error
    task.check_targets(np.asarray(y), probe.shape, name)


def _check_params_match(model: Model, params: chex.ArrayTree) -> None:
    """``params`` has the structure and shapes of the model's own parameters, or of one
    member of them (when it has them), so the parameters of one model never train silently
    through another's apply."""
    if model.params is None or params is model.params or is_traced(params):
        return
    own, given = jax.tree.structure(model.params), jax.tree.structure(params)
    if own != given:
        raise ValueError(f"params do not have the model's structure: {given} vs its {own}")
    flat = jax.tree_util.tree_flatten_with_path(model.params)[0]
    for (path, mine), theirs in zip(flat, jax.tree.leaves(params), strict=True):
        # Models built for several members (e.g. ``init_model`` with a batch of keys) stack
        # a leading member axis; one member's params drop it.
        if np.shape(theirs) not in (np.shape(mine), np.shape(mine)[1:]):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} has shape {np.shape(theirs)}, but the "
                f"model's has {np.shape(mine)}: these params belong to another model"
            )


def evaluate(
    model: Apply | Model,
    params: chex.ArrayTree,
    x: ArrayLike,
    y: ArrayLike,
    *,
    task: Task | None = None,
    loss: PerExampleLoss | None = None,
    state: chex.ArrayTree | None = None,
    hparams: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
) -> dict[str, jax.Array]:
    """A model's loss and task metrics on ``(x, y)`` in eval mode, in batches.

    Args:
      model: a plain ``apply(params, x, *, key=None, train=False)`` or a
        :class:`jaxreg.nn.Model`.
      params: parameters.
      x: inputs ``(n, ...)``.
      y: targets ``(n, ...)``.
      task: :mod:`jaxreg.tasks` task (classification by default).
      loss: per-example loss for classification (instead of ``task``).
      state: model state (default: the :class:`~jaxreg.nn.Model`'s own).
      hparams: hyperparameters the model reads (rates do nothing in eval mode).
      batch_size: evaluation batch size.

    Returns:
      ``{"loss": ..., **metrics}``, e.g. ``accuracy`` or ``rmse``/``r2``.

    Example:
      >>> apply = lambda params, x, **kw: x @ params
      >>> out = evaluate(apply, jnp.eye(2), jnp.eye(2), jnp.array([0, 1]))
      >>> float(out["accuracy"])
      1.0
    """
    model = as_model(model, params)
    task = _task(task, loss)
    state = model.state if state is None else state
    hparams = _check_hparams(hparams)
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_targets(model, params, state, task, x, y, "y", hparams)
    data = batches(x, y, min(batch_size, len(y)))
    return task_metrics(model.apply, task, params, state, data, hparams)


def fit(
    model: Apply | Model,
    params: chex.ArrayTree,
    optimizer: Optimizer,
    train: tuple[ArrayLike, ArrayLike] | tuple[ArrayLike, ArrayLike, ArrayLike],
    *,
    key: jax.Array,
    num_epochs: int,
    batch_size: int,
    eval_data: tuple[ArrayLike, ArrayLike] | None = None,
    hparams: Mapping[str, Any] | None = None,
    state: chex.ArrayTree | None = None,
    task: Task | None = None,
    loss: PerExampleLoss | None = None,
    penalty: Penalty | None = None,
    penalty_strength: ArrayLike = 0.0,
    batch_transform: BatchTransform | None = None,
    early_stopping: EarlyStopping | None = None,
    drop_remainder: bool | None = None,
    eval_batch_size: int = 1024,
    params_metrics: Callable[[chex.ArrayTree], dict[str, jax.Array]] | None = None,
    host: HostOptions | None = None,
    **host_keywords: Any,
) -> FitResult:
    """Train a model with minibatch ``optimizer`` steps, the whole run compiled in ``lax.scan``.

    Each epoch reshuffles the training set with a key folded from ``key`` and
    the epoch index, takes one optimizer step per minibatch (dropout keys split
    per step), then evaluates on the full training set and ``eval_data`` in eval
    mode. The same key gives a bitwise-identical run, however it is chunked or
    resumed. The objective per minibatch is ``mean(loss) + strength ·
    penalty(params)``.

    Works the same from the host and under ``jit``/``vmap``: e.g.
    ``jax.vmap(lambda lr: fit(apply, params, optax.adam(lr), ...).params)(lrs)``
    trains every learning rate with one compile, each member with its own
    early stopping (see the module docstring for sweeping through ``hparams``).

    Args:
      model: a plain ``apply(params, x, *, key=None, train=False) -> outputs``
        or a :class:`jaxreg.nn.Model` (models with BatchNorm, Linen, Equinox:
        see :func:`jaxreg.nn.from_nnx`, :func:`~jaxreg.nn.from_linen`,
        :func:`~jaxreg.nn.from_equinox`).
      params: initial parameters (any pytree).
      optimizer: an optax ``GradientTransformation`` (schedules included) or a
        factory ``hparams -> GradientTransformation``; values of
        ``optax.inject_hyperparams`` named in ``hparams`` are set from them.
      train: ``(x, y)`` training arrays, or ``(x, y, weight)`` with per-example
        weights (bagging via bootstrap counts).
      key: PRNG key for shuffling, dropout and batch transforms.
      num_epochs: number of passes over the training data (static).
      batch_size: minibatch size (static); a short last batch is padded and
        weighted exactly (or dropped, see ``drop_remainder``).
      eval_data: optional ``(x, y)`` evaluated after every epoch (``eval_*``).
      hparams: mapping of hyperparameter names to scalars (may be traced),
        handed to the model (dropout rates by name), the optimizer factory,
        the penalty (``"penalty_strength"``) and every callable declared with
        :func:`jaxreg.calling.takes` ``("hparams")`` (batch transforms, penalty, loss).
      state: initial model state; default the :class:`~jaxreg.nn.Model`'s.
      task: loss and metrics (:mod:`jaxreg.tasks`: classification by default,
        regression, sequence classification).
      loss: per-example classification loss ``(logits, labels) -> (n,)``
        (shorthand for ``task=tasks.classification(loss)``).
      penalty: optional ``params -> scalar`` regularizer (e.g. ``penalties.l2``); one
        declared with :func:`jaxreg.calling.takes` also gets the keywords it names of
        ``hparams``, ``batch`` (the transformed minibatch) and ``key`` (its own step key),
        as :class:`TrainLoop` describes.
      penalty_strength: multiplier of ``penalty`` unless ``hparams`` has
        ``"penalty_strength"`` (may be traced).
      batch_transform: optional ``(key, batch) -> batch`` applied to every
        training minibatch (``{"x", "y", "weight"}``) with its own key: input
        noise, augmentation, label smoothing, mixup
        (:mod:`jaxreg.training.batch_transforms` has ones that read ``hparams``).
      early_stopping: an :class:`~jaxreg.training.EarlyStopping`. A member
        that stops is frozen; the result's ``params`` (and ``model_state``) are
        then the *best* ones. From the host the loop ends once every member
        has stopped (the history then has fewer entries).
      drop_remainder: drop each epoch's short last batch; default: only for
        models with state (BatchNorm batch statistics must not see padding).
      eval_batch_size: batch size of evaluation passes.
      params_metrics: optional ``params -> {name: scalar}`` measured after every
        epoch and recorded in the history as ``params_<name>``, e.g. the power-law
        α of each layer's spectrum (:mod:`jaxreg.spectra`), under ``vmap`` per member.
      host: what happens between compiled chunks when fit runs from the host
        (:class:`~jaxreg.training.HostOptions`: ``checkpoint_dir``,
        ``progress``, ``epochs_per_chunk``, ``on_nonfinite``, and ``steps``:
        ``"host"`` runs one compiled call per minibatch, faster for
        convolutional models on CPU). Under a
        transformation a divergence is only flagged (``FitResult.nonfinite_epoch``,
        ``.failed``) and checkpoints are refused.
      **host_keywords: the same four options as keywords (the 0.2 form,
        e.g. ``progress=True``); any other name raises ``TypeError``.

    Returns:
      A :class:`FitResult`.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import MLP, functional
      >>> apply, params = functional(MLP((2, 16, 2), rngs=nnx.Rngs(0)))
      >>> x = jax.random.normal(jax.random.key(0), (64, 2)); y = (x[:, 0] > 0).astype(int)
      >>> result = fit(apply, params, optax.adam(1e-2), (x, y), key=jax.random.key(1),
      ...              num_epochs=20, batch_size=16)
      >>> bool(result.history["train_accuracy"][-1] > 0.9)
      True
    """
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs <= 0:
        raise ValueError(f"num_epochs must be a positive int, got {num_epochs!r}")
    host = _host_options(host, host_keywords)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping must be a jaxreg.training.EarlyStopping, got "
            f"{type(early_stopping).__name__}"
        )
    check_non_negative(penalty_strength, "penalty_strength")
    check_key(key)
    model = as_model(model, params)
    _check_params_match(model, params)
    state = model.state if state is None else state
    task = _task(task, loss)
    hparams = _check_hparams(hparams)
    if drop_remainder is None:
        drop_remainder = bool(jax.tree.leaves(state))
    loop = TrainLoop(
        model.apply,
        optimizer,
        batch_size,
        task,
        penalty,
        penalty_strength,
        batch_transform,
        early_stopping,
        drop_remainder,
        params_metrics,
    )
    data = loop_data(train, eval_data, eval_batch_size=eval_batch_size)
    check_batch_size(batch_size, data.x.shape[0])
    _check_hparams_are_read(loop, params, state, data, hparams)
    _check_targets(model, params, state, task, data.x, data.y, "train labels", hparams)
    if "eval" in data.evals:
        _check_targets(model, params, state, task, *eval_data, "eval_data labels", hparams)

    # Arrays travel as arguments, not closure constants: XLA would otherwise
    # constant-fold the shuffles of the whole dataset at compile time.
    if host.steps == "host":
        compiled_run = functools.partial(run_stepwise, loop)
    else:
        compiled_run = jax.jit(loop.run, static_argnames="num_epochs")
    advance = functools.partial(compiled_run, data=data, key=key, hparams=hparams)
    train_state = loop.init(params, state, hparams=hparams)
    return _drive(advance, train_state, key=key, num_epochs=num_epochs, host=host)


def _host_options(host: HostOptions | None, keywords: dict[str, Any]) -> HostOptions:
    """``host``, or one built from the 0.2 keywords (never both)."""
    unknown = sorted(set(keywords) - {f.name for f in dataclasses.fields(HostOptions)})
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {unknown}")
    if host is not None and keywords:
        raise TypeError(f"pass either host=HostOptions(...) or {sorted(keywords)}, not both")
    if host is not None and not isinstance(host, HostOptions):
        raise TypeError(f"host must be a jaxreg.training.HostOptions, got {type(host).__name__}")
    return host if host is not None else HostOptions(**keywords)


def _drive(
    advance: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    train_state: TrainState,
    *,
    key: jax.Array,
    num_epochs: int,
    host: HostOptions,
) -> FitResult:
    """The host loop: compiled chunks, checkpoints, progress, early exit, divergence policy.

    ``advance(train_state, num_epochs=n)`` runs ``n`` epochs (the data, key and
    hyperparameters are bound to it by :func:`fit`).
    """
    epochs_per_chunk = host.chunk_length(num_epochs)
    checkpoint_dir, on_nonfinite = host.checkpoint_dir, host.on_nonfinite
    history: dict[str, np.ndarray] | None = None  # allocated from the first chunk's entries
    start = 0
    if checkpoint_dir is not None and checkpoints.latest_step(checkpoint_dir) is not None:
        train_state, history, start = _resume(checkpoint_dir, train_state, key, num_epochs)
    bar = None
    try:
        while start < num_epochs:
            length = min(epochs_per_chunk, num_epochs - start)
            train_state, chunk = advance(train_state, num_epochs=length)
            if is_traced(chunk):  # fit is being traced: nothing can be read on the host
                if checkpoint_dir is not None:
                    raise ValueError(
                        "checkpoint_dir needs a host-side call of fit, not one under "
                        "jit/vmap/grad (its results are traced)"
                    )
                return _traced_result(advance, train_state, chunk, num_epochs - start - length)
            if history is None:
                history = {k: np.zeros((num_epochs,), v.dtype) for k, v in chunk.items()}
            for name, values in chunk.items():
                history[name][start : start + length] = np.asarray(values)
            start += length
            if checkpoint_dir is not None:
                done = {k: v[:start] for k, v in history.items()}
                checkpoints.save(
                    checkpoint_dir, start, {"carry": train_state, "key": key}, extra=done
                )
            if host.progress:
                bar = bar or _progress_bar(num_epochs, start - length)
                _show(bar, chunk, length)
            if _diverged(train_state, on_nonfinite):
                break
            if train_state.stopping is not None and bool(np.all(train_state.stopping.stopped)):
                break  # every member has stopped: the remaining epochs would change nothing
    finally:
        if bar is not None:
            bar.close()
    _report_nonfinite(train_state, on_nonfinite)
    return _result(train_state, {k: jnp.asarray(v[:start]) for k, v in history.items()})


def _traced_result(advance, train_state, chunk, rest: int) -> FitResult:
    """Finish a traced run: the remaining epochs in one more call, histories joined."""
    if rest > 0:
        train_state, tail = advance(train_state, num_epochs=rest)
        chunk = {k: jnp.concatenate([v, tail[k]]) for k, v in chunk.items()}
    return _result(train_state, chunk)


def _progress_bar(total: int, initial: int):
    return progress_bar(total, initial=initial, desc="fit", unit="epoch", leave=False)


def _show(bar, chunk: dict[str, jax.Array], length: int) -> None:
    shown = {
        k: f"{float(v[-1]):.3f}"
        for k, v in chunk.items()
        if k.startswith("eval_") or k == "objective"
    }
    bar.set_postfix(shown)
    bar.update(length)


def _diverged(train_state: TrainState, policy: NonFinitePolicy) -> bool:
    return policy == "raise" and bool(np.any(np.asarray(train_state.nonfinite_epoch) >= 0))


def _report_nonfinite(train_state: TrainState, policy: NonFinitePolicy) -> None:
    epochs = np.asarray(train_state.nonfinite_epoch)
    if policy == "ignore" or not np.any(epochs >= 0):
        return
    first = int(np.min(epochs[epochs >= 0]))
    message = (
        f"the training objective became non-finite (NaN or inf) at epoch {first}; "
        "check the learning rate, the data and the labels (pass on_nonfinite='warn' "
        "or 'ignore' to keep the run)"
    )
    if policy == "raise":
        raise FloatingPointError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _result(train_state: TrainState, history: dict[str, jax.Array]) -> FitResult:
    params, model_state = train_state.params, train_state.model_state
    if train_state.stopping is not None:
        params, model_state = train_state.stopping.best_params, train_state.best_model_state
    return FitResult(
        params,
        train_state.opt_state,
        history,
        train_state.stopping,
        model_state,
        train_state.nonfinite_epoch,
    )


def _resume(directory, train_state, key, num_epochs: int):
    restored, _ = checkpoints.restore(directory, {"carry": train_state, "key": key})
    if not bool(jnp.all(jax.random.key_data(restored["key"]) == jax.random.key_data(key))):
        raise ValueError(f"the checkpoint in {directory} was written by a run with another key")
    train_state = restored["carry"]
    epoch = min(int(train_state.epoch), num_epochs)
    done = checkpoints.restore_extra(directory, int(train_state.epoch))
    history = {}
    for name, values in done.items():
        values = np.asarray(values)
        history[name] = np.zeros((num_epochs,), values.dtype)
        history[name][:epoch] = values[:epoch]
    return train_state, history, epoch
