"""The pure training core: a state and a function that advances it by N epochs.

Nothing here does I/O or branches on values in Python, so :meth:`TrainLoop.run`
is safe under any ``jit``, ``vmap``, ``scan`` or ``grad``;
:func:`jaxreg.fit` is the host driver around it (chunks, checkpoints,
progress, early exit). Use the loop directly to write your own driver::

    loop = TrainLoop(model.apply, optax.adam(1e-3), batch_size=100)
    data = loop_data((x, y), eval_data=(x_val, y_val))
    state = loop.init(model.params, model.state)
    state, history = loop.run(state, data, key=key, num_epochs=10)

Hyperparameters are data. ``run(..., hparams=h)`` hands one mapping ``h`` to
every part of a step: the model (dropout rates by name, see
:func:`jaxreg.nn.from_nnx`), the optimizer (a factory ``hparams ->
GradientTransformation``, or ``optax.inject_hyperparams`` values of the same
name), the penalty (``h["penalty_strength"]``) and every callable declared with
:func:`jaxreg.calling.takes` ``("hparams")`` (batch transforms, penalties, losses). Traced values
in ``h`` make a whole sweep one compile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxreg._checks import is_traced
from jaxreg.calling import check_keywords
from jaxreg.data import batch_weight, batches, mean_over_batches, shuffled_batches
from jaxreg.losses import weighted_mean
from jaxreg.nn.model import StatefulApply
from jaxreg.tasks import Task, classification
from jaxreg.training import early_stopping as es
from jaxreg.training.early_stopping import EarlyStopping, EarlyStoppingState

__all__ = ["LoopData", "TrainLoop", "TrainState", "loop_data", "optimizer_for", "task_metrics"]

Hparams = Mapping[str, Any]
Penalty = Callable[..., jax.Array]
BatchTransform = Callable[..., dict[str, jax.Array]]
Optimizer = optax.GradientTransformation | Callable[[Hparams], optax.GradientTransformation]


class TrainState(NamedTuple):
    """Everything a run carries from one epoch to the next (a pytree of arrays).

    Attributes:
      params: trainable parameters.
      opt_state: optimizer state.
      model_state: non-parameter model state (BatchNorm statistics), ``{}`` if none.
      stopping: early-stopping state (its ``best_params`` are the best
        parameters), or None without early stopping.
      best_model_state: the model state that goes with ``stopping.best_params``
        (None without early stopping).
      epoch: epochs completed (int32 scalar).
      nonfinite_epoch: first epoch whose training objective was NaN or
        infinite, ``-1`` while the run is finite.

    Example:
      >>> import optax
      >>> from jaxreg.nn import MLP, from_nnx
      >>> model = from_nnx(MLP((3, 8, 2), rngs=nnx.Rngs(0)))
      >>> x = jax.random.normal(jax.random.key(0), (20, 3)); y = (x[:, 0] > 0).astype(jnp.int32)
      >>> loop = TrainLoop(model.apply, optax.adam(1e-2), batch_size=5)
      >>> state = loop.init(model.params, model.state)
      >>> int(state.epoch), int(state.nonfinite_epoch), state.stopping is None
      (0, -1, True)
      >>> state, _ = loop.run(state, loop_data((x, y)), key=jax.random.key(1), num_epochs=2)
      >>> int(state.epoch)  # a later run() continues from epoch 2
      2
    """

    params: chex.ArrayTree
    opt_state: optax.OptState
    model_state: chex.ArrayTree
    stopping: EarlyStoppingState | None
    best_model_state: chex.ArrayTree | None
    epoch: jax.Array
    nonfinite_epoch: jax.Array


class LoopData(NamedTuple):
    """Training arrays and pre-batched evaluation sets for :meth:`TrainLoop.run`.

    Attributes:
      x: training inputs ``(n, ...)``.
      y: training targets ``(n, ...)``.
      weight: per-example training weights ``(n,)`` or None.
      evals: name -> batches (``{"x", "y", "weight"}`` with a leading batch
        axis), evaluated in eval mode after every epoch as ``{name}_{metric}``.

    Example:
      >>> data = loop_data((jnp.ones((10, 3)), jnp.zeros(10, int), jnp.ones(10)),
      ...                  eval_data=(jnp.ones((4, 3)), jnp.zeros(4, int)))
      >>> sorted(data.evals), data.weight.shape  # evaluated as train_* and eval_*
      (['eval', 'train'], (10,))
    """

    x: jax.Array
    y: jax.Array
    weight: jax.Array | None
    evals: dict[str, dict[str, jax.Array]]


def loop_data(
    train: tuple[ArrayLike, ...],
    eval_data: tuple[ArrayLike, ArrayLike] | None = None,
    *,
    eval_batch_size: int = 1024,
) -> LoopData:
    """Build :class:`LoopData` from ``(x, y)`` or ``(x, y, weight)`` and an optional ``(x, y)``.

    The training set is evaluated (weighted) as ``train_*``; ``eval_data`` as ``eval_*``.

    Example:
      >>> data = loop_data((jnp.ones((10, 3)), jnp.zeros(10, int)), eval_batch_size=4)
      >>> data.evals["train"]["x"].shape
      (3, 4, 3)
    """
    if not isinstance(train, tuple | list) or len(train) not in (2, 3):
        raise ValueError("train must be (x, y) or (x, y, weight)")
    x, y = jnp.asarray(train[0]), jnp.asarray(train[1])
    weight = None if len(train) == 2 else jnp.asarray(train[2])
    evals = {"train": batches(x, y, min(eval_batch_size, len(y)), weight=weight)}
    if eval_data is not None:
        if not isinstance(eval_data, tuple | list) or len(eval_data) != 2:
            raise ValueError(
                "eval_data must be an (x, y) pair, got "
                + (
                    f"{len(eval_data)} arrays"
                    if isinstance(eval_data, tuple | list)
                    else type(eval_data).__name__
                )
            )
        ex, ey = jnp.asarray(eval_data[0]), jnp.asarray(eval_data[1])
        evals["eval"] = batches(ex, ey, min(eval_batch_size, len(ey)))
    return LoopData(x, y, weight, evals)


def optimizer_for(optimizer: Optimizer, hparams: Hparams) -> optax.GradientTransformation:
    """The optimizer for ``hparams``: a factory is called with them, a transformation passes.

    Example:
      >>> import optax
      >>> factory = lambda h: optax.sgd(h["learning_rate"])
      >>> opt = optimizer_for(factory, {"learning_rate": 0.1})
      >>> updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
      >>> updates.tolist()
      [-0.10000000149011612, -0.10000000149011612]
      >>> optimizer_for(optax.adam(1e-3), {}) is not None  # a transformation passes through
      True
    """
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if callable(optimizer):
        built = optimizer(hparams)
        if not isinstance(built, optax.GradientTransformation):
            raise TypeError(
                "an optimizer factory must return an optax.GradientTransformation, got "
                f"{type(built).__name__}"
            )
        return built
    raise TypeError(
        "optimizer must be an optax.GradientTransformation or a function hparams -> one, got "
        f"{type(optimizer).__name__}"
    )


_CLASSIFICATION = classification()


def _is_injected(node: Any) -> bool:
    return hasattr(node, "hyperparams") and isinstance(getattr(node, "hyperparams", None), dict)


def _inject(opt_state: optax.OptState, hparams: Hparams) -> optax.OptState:
    """Set ``optax.inject_hyperparams`` values named in ``hparams`` (any depth of chain)."""

    def visit(node):
        if not _is_injected(node):
            return node
        hyper = dict(node.hyperparams)
        for name, value in hyper.items():
            if name in hparams and not callable(value):
                hyper[name] = jnp.asarray(hparams[name], jnp.asarray(value).dtype)
        return node._replace(hyperparams=hyper)

    return jax.tree.map(visit, opt_state, is_leaf=_is_injected)


def _call(fn: Callable, takes_hparams: bool, hparams: Hparams, *args):
    return fn(*args, hparams=hparams) if takes_hparams else fn(*args)


def task_metrics(
    apply: StatefulApply,
    task: Task,
    params: chex.ArrayTree,
    model_state: chex.ArrayTree,
    data: dict[str, jax.Array],
    hparams: Hparams | None = None,
) -> dict[str, jax.Array]:
    """``task``'s loss and metrics of ``params`` on pre-batched ``data`` in eval mode.

    Each batch's values are weighted means over its examples (padding rows weigh 0);
    batches are then averaged by their total weight.

    Example:
      >>> from jaxreg.data import batches
      >>> apply = lambda params, state, x, **kw: (x @ params, state)
      >>> out = task_metrics(apply, classification(), jnp.eye(2), {},
      ...                    batches(jnp.eye(2), jnp.array([0, 0]), 2))
      >>> float(out["accuracy"])
      0.5
    """
    hparams = {} if hparams is None else hparams
    loss_takes_hparams = "hparams" in check_keywords(task.loss, frozenset({"hparams"}), "task.loss")

    def batch_metrics(batch):
        outputs, _ = apply(params, model_state, batch["x"], key=None, train=False, hparams=hparams)
        values = {"loss": _call(task.loss, loss_takes_hparams, hparams, outputs, batch["y"])}
        values.update(task.metrics(outputs, batch["y"]))
        return {k: weighted_mean(v, batch["weight"]) for k, v in values.items()}

    return task.summarize(mean_over_batches(batch_metrics, data))


@dataclass(frozen=True)
class TrainLoop:
    """A training run's static description; :meth:`init` and :meth:`run` are pure.

    Args:
      apply: ``apply(params, state, x, *, key, train, hparams) -> (outputs,
        new_state)`` (a :class:`jaxreg.nn.Model`'s ``apply``).
      optimizer: an optax ``GradientTransformation`` or a factory
        ``hparams -> GradientTransformation``.
      batch_size: minibatch size (static).
      task: loss and metrics (:mod:`jaxreg.tasks`); classification by default.
      penalty: optional ``penalty(params) -> scalar``, added times
        ``hparams.get("penalty_strength", penalty_strength)``. Declared with
        :func:`jaxreg.calling.takes`, it also gets the keywords ``hparams``,
        ``batch`` (the minibatch after ``batch_transform``, for input-space terms
        such as :func:`jaxreg.jacobian.input_gradient_norm`) and ``key`` (a step
        key of its own, e.g. for :func:`jaxreg.losses.r_drop`'s dropout passes):
        those it declares, and only those.
      penalty_strength: default multiplier of ``penalty``.
      batch_transform: optional ``(key, batch) -> batch`` applied to every training
        minibatch (with ``hparams`` when declared with ``takes("hparams")``, as
        :mod:`jaxreg.training.batch_transforms` does).
      early_stopping: an :class:`~jaxreg.training.EarlyStopping`, or None.
      drop_remainder: drop the short last training batch of every (shuffled)
        epoch instead of padding it — wanted with BatchNorm, whose batch
        statistics would otherwise see the padding rows.
      params_metrics: optional ``params -> {name: scalar}`` measured on the
        parameters after every epoch, recorded as ``params_<name>`` (e.g. weight
        norms or :func:`jaxreg.spectra.spectra`'s α per layer).

    Loops are values: two with equal fields (the same ``apply``, optimizer,
    task and callables) are equal and hash alike, so programs compiled for one
    serve the other (:func:`~jaxreg.training.run_stepwise` keeps a few).

    Example:
      >>> import optax
      >>> from jaxreg.nn import MLP, from_nnx
      >>> model = from_nnx(MLP((3, 8, 2), rngs=nnx.Rngs(0)))
      >>> x = jax.random.normal(jax.random.key(0), (20, 3)); y = (x[:, 0] > 0).astype(jnp.int32)
      >>> loop = TrainLoop(model.apply, optax.adam(1e-2), batch_size=5)
      >>> state = loop.init(model.params, model.state)
      >>> state, history = jax.jit(loop.run, static_argnames="num_epochs")(
      ...     state, loop_data((x, y)), key=jax.random.key(1), num_epochs=3)
      >>> int(state.epoch), history["train_loss"].shape
      (3, (3,))
    """

    apply: StatefulApply
    optimizer: Optimizer
    batch_size: int
    task: Task = _CLASSIFICATION
    penalty: Penalty | None = None
    penalty_strength: ArrayLike = 0.0
    batch_transform: BatchTransform | None = None
    early_stopping: EarlyStopping | None = None
    drop_remainder: bool = False
    params_metrics: Callable[[chex.ArrayTree], dict[str, jax.Array]] | None = None

    def __post_init__(self):
        strength = self.penalty_strength
        if not is_traced(strength) and np.ndim(strength) == 0:
            # A number, so that loops with equal fields hash equal (see run_stepwise's cache).
            object.__setattr__(self, "penalty_strength", float(strength))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError(f"batch_size must be an int, got {self.batch_size!r}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        hparams_only = frozenset({"hparams"})
        penalty = check_keywords(self.penalty, frozenset({"hparams", "batch", "key"}), "penalty")
        transform = check_keywords(self.batch_transform, hparams_only, "batch_transform")
        loss = check_keywords(self.task.loss, hparams_only, "task.loss")
        takes = {
            "penalty": "hparams" in penalty,
            "penalty_batch": "batch" in penalty,
            "penalty_key": "key" in penalty,
            "transform": "hparams" in transform,
            "loss": "hparams" in loss,
        }
        object.__setattr__(self, "_takes_hparams", takes)

    def init(
        self,
        params: chex.ArrayTree,
        model_state: chex.ArrayTree | None = None,
        *,
        hparams: Hparams | None = None,
    ) -> TrainState:
        """The state before the first epoch (optimizer state with ``hparams`` injected)."""
        hparams = {} if hparams is None else hparams
        opt_state = _inject(optimizer_for(self.optimizer, hparams).init(params), hparams)
        model_state = {} if model_state is None else model_state
        stopping = best_model_state = None
        if self.early_stopping is not None:
            config = self.early_stopping
            stopping = es.init(params, config.patience, config.min_delta, config.mode)
            best_model_state = model_state
        return TrainState(
            params,
            opt_state,
            model_state,
            stopping,
            best_model_state,
            jnp.zeros((), jnp.int32),
            jnp.full((), -1, jnp.int32),
        )

    def objective(
        self,
        params: chex.ArrayTree,
        model_state: chex.ArrayTree,
        batch: dict[str, jax.Array],
        key: jax.Array,
        hparams: Hparams,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        """Training objective of one minibatch and the model state after it (train mode)."""
        if self.batch_transform is not None:
            transform_key, key = jax.random.split(key)
            batch = _call(
                self.batch_transform,
                self._takes_hparams["transform"],
                hparams,
                transform_key,
                batch,
            )
        penalty_kwargs: dict[str, Any] = {}
        if self._takes_hparams["penalty_batch"]:
            penalty_kwargs["batch"] = batch
        if self._takes_hparams["penalty_key"]:
            # Split only for a penalty that asks, so every other run keeps its dropout keys.
            key, penalty_kwargs["key"] = jax.random.split(key)
        outputs, new_state = self.apply(
            params, model_state, batch["x"], key=key, train=True, hparams=hparams
        )
        per_example = _call(
            self.task.loss, self._takes_hparams["loss"], hparams, outputs, batch["y"]
        )
        value = weighted_mean(per_example, batch["weight"])
        if self.penalty is not None:
            strength = hparams.get("penalty_strength", self.penalty_strength)
            if self._takes_hparams["penalty"]:
                penalty_kwargs["hparams"] = hparams
            value = value + strength * self.penalty(params, **penalty_kwargs)
        return value, new_state

    def evaluate(
        self,
        params: chex.ArrayTree,
        model_state: chex.ArrayTree,
        data: dict[str, jax.Array],
        hparams: Hparams | None = None,
    ) -> dict[str, jax.Array]:
        """Task metrics of ``params`` on pre-batched ``data`` in eval mode."""
        return task_metrics(self.apply, self.task, params, model_state, data, hparams)

    def epoch_inputs(
        self, epoch: jax.Array, data: LoopData, key: jax.Array
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """Epoch ``epoch``'s shuffled minibatches (leading batch axis) and one key per step."""
        shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
        epoch_batches = shuffled_batches(
            shuffle_key,
            data.x,
            data.y,
            self.batch_size,
            weight=data.weight,
            drop_remainder=self.drop_remainder,
        )
        num_batches = epoch_batches["weight"].shape[0]
        return epoch_batches, jax.random.split(step_key, num_batches)

    def step(
        self,
        carry: tuple[chex.ArrayTree, optax.OptState, chex.ArrayTree],
        inputs: tuple[dict[str, jax.Array], jax.Array],
        hparams: Hparams,
    ) -> tuple[tuple[chex.ArrayTree, optax.OptState, chex.ArrayTree], tuple[jax.Array, jax.Array]]:
        """One optimizer step on one minibatch.

        Args:
          carry: ``(params, opt_state, model_state)``.
          inputs: ``(batch, step_key)``.
          hparams: the run's hyperparameters.

        Returns:
          The new carry and ``(objective, total batch weight)``.
        """
        params, opt_state, model_state = carry
        batch, step_key = inputs
        optimizer = optax.with_extra_args_support(optimizer_for(self.optimizer, hparams))
        (value, new_model_state), grads = jax.value_and_grad(self.objective, has_aux=True)(
            params, model_state, batch, step_key, hparams
        )

        def grad_fn(point, _):
            # Gradient of this minibatch's objective elsewhere (same batch, key and
            # state): what transforms.sam's descent step needs. Untraced otherwise.
            return jax.grad(lambda p: self.objective(p, model_state, batch, step_key, hparams)[0])(
                point
            )

        updates, opt_state = optimizer.update(grads, opt_state, params, grad_fn=grad_fn)
        new_params = optax.apply_updates(params, updates)
        return (new_params, opt_state, new_model_state), (value, batch_weight(batch))

    def end_epoch(
        self,
        carry: TrainState,
        trained: tuple[chex.ArrayTree, optax.OptState, chex.ArrayTree],
        values: jax.Array,
        weights: jax.Array,
        data: LoopData,
        hparams: Hparams,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Close an epoch: freeze stopped members, evaluate, update early stopping.

        Args:
          carry: the state at the start of the epoch.
          trained: ``(params, opt_state, model_state)`` after the epoch's steps.
          values: the steps' objectives ``(num_batches,)``.
          weights: the steps' total batch weights ``(num_batches,)``.
          data: the run's data (its ``evals`` are evaluated).
          hparams: the run's hyperparameters.

        Returns:
          The state after the epoch and the epoch's record (one history entry).
        """
        index = carry.epoch
        params, opt_state, model_state = trained
        stopping, best_model_state = carry.stopping, carry.best_model_state
        if stopping is not None:  # a stopped member stays bitwise frozen
            params, opt_state, model_state = jax.tree.map(
                lambda old, new: jnp.where(stopping.stopped, old, new),
                (carry.params, carry.opt_state, carry.model_state),
                (params, opt_state, model_state),
            )
        objective = jnp.sum(values * weights) / jnp.sum(weights)
        record = {"objective": objective}
        for name, eval_batches in data.evals.items():
            metrics = self.evaluate(params, model_state, eval_batches, hparams)
            record.update({f"{name}_{k}": v for k, v in metrics.items()})
        if self.params_metrics is not None:
            record.update({f"params_{k}": v for k, v in self.params_metrics(params).items()})
        if stopping is not None:
            monitor = self.early_stopping.monitor
            if monitor not in record:
                raise ValueError(
                    f"early_stopping.monitor must be one of {sorted(record)}, got {monitor!r}"
                )
            previous_best = stopping.best_step
            stopping = es.update(stopping, record[monitor], params)
            best_model_state = jax.tree.map(
                lambda new, old: jnp.where(stopping.best_step != previous_best, new, old),
                model_state,
                best_model_state,
            )
            record["stopped"] = stopping.stopped
        bad = ~jnp.isfinite(objective) & (carry.nonfinite_epoch < 0)
        nonfinite = jnp.where(bad, index, carry.nonfinite_epoch)
        new = TrainState(
            params, opt_state, model_state, stopping, best_model_state, index + 1, nonfinite
        )
        return new, record

    def run(
        self,
        state: TrainState,
        data: LoopData,
        *,
        key: jax.Array,
        num_epochs: int,
        hparams: Hparams | None = None,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Advance ``state`` by ``num_epochs`` (static) epochs; return it and the per-epoch history.

        Epoch ``e`` (counted from the start of the run, ``state.epoch``)
        shuffles with ``fold_in(key, e)``, so a run split into several calls
        is bitwise the run done in one. A member that has stopped early stays
        frozen (its epochs are computed and discarded). One epoch is
        :meth:`epoch_inputs`, :meth:`step` over its minibatches in ``lax.scan``,
        then :meth:`end_epoch`.
        """
        hparams = {} if hparams is None else hparams

        def step(carry, inputs):
            return self.step(carry, inputs, hparams)

        def epoch(carry: TrainState, _):
            inputs = self.epoch_inputs(carry.epoch, data, key)
            trained, (values, weights) = jax.lax.scan(
                step, (carry.params, carry.opt_state, carry.model_state), inputs
            )
            return self.end_epoch(carry, trained, values, weights, data, hparams)

        return jax.lax.scan(epoch, state, None, length=num_epochs)
