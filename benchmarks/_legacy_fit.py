"""jaxreg 0.1's ``fit`` (commit e97d7dd), frozen here only as the baseline of ``benchmarks/fit.py``.

Not part of the package; do not import it elsewhere.
"""

# ruff: noqa
"""A whole training run inside ``lax.scan``: epochs × minibatches, eval every epoch.

Every hyperparameter that does not change a shape (learning rate inside the
optax optimizer, penalty strength, dropout key, ...) may be a traced value, so
``jax.vmap`` over a wrapper of :func:`fit` trains a whole sweep with one
compile.
"""


import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_non_negative, is_traced
from jaxreg.data import batch_weight, batches, mean_over_batches, shuffled_batches
from jaxreg.losses import (
    PerExampleLoss,
    accuracy_per_example,
    softmax_cross_entropy,
    weighted_mean,
)
from jaxreg.training import checkpoints
from jaxreg.training import early_stopping as es
from jaxreg.training.early_stopping import EarlyStopping, EarlyStoppingState

__all__ = ["FitResult", "evaluate", "fit"]

Penalty = Callable[[chex.ArrayTree], jax.Array]
BatchTransform = Callable[[jax.Array, dict[str, jax.Array]], dict[str, jax.Array]]


class FitResult(NamedTuple):
    """Outcome of :func:`fit`.

    Attributes:
      params: parameters after the last epoch (the best ones with early stopping).
      opt_state: optimizer state after the last epoch.
      history: dict of per-epoch arrays, leading axis ``num_epochs``:
        ``objective`` (mean minibatch training objective, penalty included),
        ``train_loss``/``train_accuracy`` (full training set, eval mode) and,
        with ``eval_data``, ``eval_loss``/``eval_accuracy``; with early stopping,
        ``stopped``.
      early_stopping: the final early-stopping state (``best_step``,
        ``stop_step``, ...), or None.
    """

    params: chex.ArrayTree
    opt_state: optax.OptState
    history: dict[str, jax.Array]
    early_stopping: EarlyStoppingState | None = None


def _evaluate_batches(
    apply: Callable, params: chex.ArrayTree, data: dict, loss: PerExampleLoss
) -> dict[str, jax.Array]:
    def batch_metrics(batch):
        logits = apply(params, batch["x"])
        return {
            "loss": weighted_mean(loss(logits, batch["y"]), batch["weight"]),
            "accuracy": weighted_mean(accuracy_per_example(logits, batch["y"]), batch["weight"]),
        }

    return mean_over_batches(batch_metrics, data)


def evaluate(
    apply: Callable,
    params: chex.ArrayTree,
    x: ArrayLike,
    y: ArrayLike,
    *,
    loss: PerExampleLoss = softmax_cross_entropy,
    batch_size: int = 1024,
) -> dict[str, jax.Array]:
    """Mean loss and accuracy of a model on ``(x, y)`` in eval mode, in batches.

    Example:
      >>> apply = lambda params, x, **kw: x @ params
      >>> out = evaluate(apply, jnp.eye(2), jnp.eye(2), jnp.array([0, 1]))
      >>> float(out["accuracy"])
      1.0
    """
    data = batches(x, y, min(batch_size, len(y)))
    return _evaluate_batches(apply, params, data, loss)


def fit(
    apply: Callable,
    params: chex.ArrayTree,
    optimizer: optax.GradientTransformation,
    train: tuple[ArrayLike, ArrayLike] | tuple[ArrayLike, ArrayLike, ArrayLike],
    *,
    key: jax.Array,
    num_epochs: int,
    batch_size: int,
    eval_data: tuple[ArrayLike, ArrayLike] | None = None,
    loss: PerExampleLoss = softmax_cross_entropy,
    penalty: Penalty | None = None,
    penalty_strength: ArrayLike = 0.0,
    batch_transform: BatchTransform | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoint_dir: str | Path | None = None,
    eval_batch_size: int = 1024,
    progress: bool = False,
    epochs_per_chunk: int | None = None,
) -> FitResult:
    """Train ``apply``'s parameters with minibatch ``optimizer`` steps, all inside ``lax.scan``.

    Each epoch reshuffles the training set with a key folded from ``key`` and
    the epoch index, takes one optimizer step per minibatch (dropout keys split
    per step), then evaluates on the full training set and ``eval_data`` in eval
    mode. The randomness depends only on ``key``: the same key gives a
    bitwise-identical run, however the epochs are chunked.

    The objective per minibatch is ``mean(loss) + penalty_strength * penalty(params)``.
    Hyperparameters may be traced; e.g. ``jax.vmap(lambda lr: fit(apply, params,
    optax.adam(lr), ...))`` over learning rates compiles once.

    Args:
      apply: ``apply(params, x, *, key=None, train=False) -> logits``.
      params: initial parameters (any pytree).
      optimizer: any optax ``GradientTransformation`` (schedules included).
      train: ``(x, y)`` training arrays (``y`` int ids or soft labels), or
        ``(x, y, weight)`` with per-example weights (bagging via bootstrap counts).
      key: PRNG key for shuffling and dropout.
      num_epochs: number of passes over the training data (static).
      batch_size: minibatch size (static); a short last batch is padded and
        weighted exactly.
      eval_data: optional ``(x, y)`` evaluated after every epoch.
      loss: per-example loss ``(logits, labels) -> (n,)``.
      penalty: optional ``params -> scalar`` regularizer (e.g. ``penalties.l2``).
      penalty_strength: multiplier of ``penalty`` (may be traced).
      batch_transform: optional ``(key, batch) -> batch`` applied to every
        training minibatch (``{"x", "y", "weight"}``) with its own key: input
        noise, augmentation (:mod:`jaxreg.augment`), label smoothing or mixup
        (soft ``y`` of shape ``(batch, K)`` work with the default loss).
      early_stopping: an :class:`~jaxreg.training.EarlyStopping` (monitor,
        patience, min_delta, mode). A member that stops is frozen (its later
        epochs are computed and discarded, so under ``vmap`` it still costs
        compute); the result's ``params`` are then the *best* parameters. From
        the host, the loop ends early once every member has stopped (with
        ``epochs_per_chunk`` set; the history then has fewer entries).
      checkpoint_dir: save the training state there (orbax) after every chunk
        of epochs and resume from the latest checkpoint if one exists; the
        resumed run is bitwise equal to an uninterrupted one. Host calls only.
      eval_batch_size: batch size for evaluation passes.
      progress: show a progress bar (host-side, chunks of epochs); ignored
        when called under a transformation.
      epochs_per_chunk: epochs per compiled call when running from the host;
        default one chunk, or about 20 chunks with ``progress``.

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
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    check_non_negative(penalty_strength, "penalty_strength")
    if len(train) not in (2, 3):
        raise ValueError(f"train must be (x, y) or (x, y, weight), got {len(train)} arrays")
    x, y = jnp.asarray(train[0]), jnp.asarray(train[1])
    sample_weight = None if len(train) == 2 else jnp.asarray(train[2])
    # Builds once to validate sizes and fix the number of minibatches per epoch.
    num_batches = batches(x, y, batch_size)["weight"].shape[0]
    eval_sets = {"train": batches(x, y, min(eval_batch_size, len(y)), weight=sample_weight)}
    if eval_data is not None:
        ex, ey = jnp.asarray(eval_data[0]), jnp.asarray(eval_data[1])
        eval_sets["eval"] = batches(ex, ey, min(eval_batch_size, len(ey)))

    def objective(p, batch, step_key):
        if batch_transform is not None:
            transform_key, step_key = jax.random.split(step_key)
            batch = batch_transform(transform_key, batch)
        logits = apply(p, batch["x"], key=step_key, train=True)
        value = weighted_mean(loss(logits, batch["y"]), batch["weight"])
        if penalty is not None:
            value = value + penalty_strength * penalty(p)
        return value

    def step(carry, inputs):
        p, state = carry
        batch, step_key = inputs
        value, grads = jax.value_and_grad(objective)(p, batch, step_key)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), (value, batch_weight(batch))

    # Arrays travel as arguments, not closure constants: XLA would otherwise
    # constant-fold the shuffles of the whole dataset at compile time.
    def run(carry, arrays, start, length):
        run_key, train_x, train_y, train_weight, evals = arrays

        def epoch(carry, epoch_index):
            p, opt_state, stopping = carry
            shuffle_key, dropout_key = jax.random.split(jax.random.fold_in(run_key, epoch_index))
            data = shuffled_batches(shuffle_key, train_x, train_y, batch_size, weight=train_weight)
            step_keys = jax.random.split(dropout_key, num_batches)
            (new_p, new_state), (values, weights) = jax.lax.scan(
                step, (p, opt_state), (data, step_keys)
            )
            if stopping is not None:  # a stopped member stays bitwise frozen
                new_p, new_state = jax.tree.map(
                    lambda old, new: jnp.where(stopping.stopped, old, new),
                    (p, opt_state),
                    (new_p, new_state),
                )
            record = {"objective": jnp.sum(values * weights) / jnp.sum(weights)}
            for name, eval_batches in evals.items():
                metrics = _evaluate_batches(apply, new_p, eval_batches, loss)
                record[f"{name}_loss"] = metrics["loss"]
                record[f"{name}_accuracy"] = metrics["accuracy"]
            if stopping is not None:
                stopping = es.update(stopping, record[early_stopping.monitor], new_p)
                record["stopped"] = stopping.stopped
            return (new_p, new_state, stopping), record

        return jax.lax.scan(epoch, carry, start + jnp.arange(length))

    stopping = None
    if early_stopping is not None:
        monitors = ["objective", "train_loss", "train_accuracy"]
        if eval_data is not None:
            monitors += ["eval_loss", "eval_accuracy"]
        if early_stopping.monitor not in monitors:
            raise ValueError(
                f"early_stopping.monitor must be one of {monitors}, got {early_stopping.monitor!r}"
            )
        stopping = es.init(
            params, early_stopping.patience, early_stopping.min_delta, early_stopping.mode
        )
    carry = (params, optimizer.init(params), stopping)
    arrays = (key, x, y, sample_weight, eval_sets)
    if is_traced((params, key, penalty_strength, x)):
        if checkpoint_dir is not None:
            raise ValueError("checkpoint_dir needs a host-side call of fit, not one under jit/vmap")
        carry, history = run(carry, arrays, 0, num_epochs)
        return _result(carry, history)

    if epochs_per_chunk is None:
        chunks_wanted = 20 if progress else 10 if checkpoint_dir is not None else 1
        epochs_per_chunk = max(1, math.ceil(num_epochs / chunks_wanted))
    if epochs_per_chunk <= 0:
        raise ValueError(f"epochs_per_chunk must be positive, got {epochs_per_chunk!r}")
    run_jit = jax.jit(run, static_argnums=3)
    shapes = jax.eval_shape(lambda c, a: run(c, a, 0, 1), carry, arrays)[1]
    history = jax.tree.map(lambda s: jnp.zeros((num_epochs,), s.dtype), shapes)
    start = 0
    if checkpoint_dir is not None and checkpoints.latest_step(checkpoint_dir) is not None:
        carry, history, start = _resume(checkpoint_dir, carry, history, key)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_epochs, initial=start, desc="fit", unit="epoch", leave=False)
    while start < num_epochs:
        length = min(epochs_per_chunk, num_epochs - start)
        carry, chunk = run_jit(carry, arrays, start, length)
        history = jax.tree.map(
            lambda h, c, s=start: h.at[s : s + c.shape[0]].set(c), history, chunk
        )
        start += length
        if checkpoint_dir is not None:
            done = jax.tree.map(lambda h, s=start: h[:s], history)
            checkpoints.save(checkpoint_dir, start, {"carry": carry, "key": key}, extra=done)
        if bar is not None:
            last = {k: f"{float(v[-1]):.3f}" for k, v in chunk.items() if k.endswith("accuracy")}
            bar.set_postfix(last)
            bar.update(length)
        if carry[2] is not None and bool(jnp.all(carry[2].stopped)):
            break  # every member has stopped: the remaining epochs would change nothing
    if bar is not None:
        bar.close()
    return _result(carry, jax.tree.map(lambda h: h[:start], history))


def _result(carry, history) -> FitResult:
    params, opt_state, stopping = carry
    if stopping is None:
        return FitResult(params, opt_state, history)
    return FitResult(stopping.best_params, opt_state, history, stopping)


def _resume(directory, carry, history, key):
    state, epoch = checkpoints.restore(directory, {"carry": carry, "key": key})
    if not bool(jnp.all(jax.random.key_data(state["key"]) == jax.random.key_data(key))):
        raise ValueError(f"the checkpoint in {directory} was written by a run with another key")
    done = checkpoints.restore_extra(directory, epoch)
    epoch = min(epoch, len(next(iter(history.values()))))
    history = {k: h.at[:epoch].set(jnp.asarray(done[k])[:epoch]) for k, h in history.items()}
    return state["carry"], history, epoch
