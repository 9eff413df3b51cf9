"""A whole training run inside ``lax.scan``: epochs × minibatches, eval every epoch.

Every hyperparameter that does not change a shape (learning rate inside the
optax optimizer, penalty strength, dropout key, ...) may be a traced value, so
``jax.vmap`` over a wrapper of :func:`fit` trains a whole sweep with one
compile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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

__all__ = ["FitResult", "evaluate", "fit"]

Penalty = Callable[[chex.ArrayTree], jax.Array]
BatchTransform = Callable[[jax.Array, dict[str, jax.Array]], dict[str, jax.Array]]


class FitResult(NamedTuple):
    """Outcome of :func:`fit`.

    Attributes:
      params: parameters after the last epoch.
      opt_state: optimizer state after the last epoch.
      history: dict of per-epoch arrays, leading axis ``num_epochs``:
        ``objective`` (mean minibatch training objective, penalty included),
        ``train_loss``/``train_accuracy`` (full training set, eval mode) and,
        with ``eval_data``, ``eval_loss``/``eval_accuracy``.
    """

    params: chex.ArrayTree
    opt_state: optax.OptState
    history: dict[str, jax.Array]


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
    train: tuple[ArrayLike, ArrayLike],
    *,
    key: jax.Array,
    num_epochs: int,
    batch_size: int,
    eval_data: tuple[ArrayLike, ArrayLike] | None = None,
    loss: PerExampleLoss = softmax_cross_entropy,
    penalty: Penalty | None = None,
    penalty_strength: ArrayLike = 0.0,
    batch_transform: BatchTransform | None = None,
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
      train: ``(x, y)`` training arrays; ``y`` int ids or soft labels.
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
    x, y = jnp.asarray(train[0]), jnp.asarray(train[1])
    # Builds once to validate sizes and fix the number of minibatches per epoch.
    num_batches = batches(x, y, batch_size)["weight"].shape[0]
    eval_sets = {"train": batches(x, y, min(eval_batch_size, len(y)))}
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
        run_key, train_x, train_y, evals = arrays

        def epoch(carry, epoch_index):
            shuffle_key, dropout_key = jax.random.split(jax.random.fold_in(run_key, epoch_index))
            data = shuffled_batches(shuffle_key, train_x, train_y, batch_size)
            step_keys = jax.random.split(dropout_key, num_batches)
            carry, (values, weights) = jax.lax.scan(step, carry, (data, step_keys))
            record = {"objective": jnp.sum(values * weights) / jnp.sum(weights)}
            for name, eval_batches in evals.items():
                metrics = _evaluate_batches(apply, carry[0], eval_batches, loss)
                record[f"{name}_loss"] = metrics["loss"]
                record[f"{name}_accuracy"] = metrics["accuracy"]
            return carry, record

        return jax.lax.scan(epoch, carry, start + jnp.arange(length))

    carry = (params, optimizer.init(params))
    arrays = (key, x, y, eval_sets)
    if is_traced((params, key, penalty_strength, x)):
        carry, history = run(carry, arrays, 0, num_epochs)
        return FitResult(carry[0], carry[1], history)

    if epochs_per_chunk is None:
        epochs_per_chunk = max(1, math.ceil(num_epochs / 20)) if progress else num_epochs
    if epochs_per_chunk <= 0:
        raise ValueError(f"epochs_per_chunk must be positive, got {epochs_per_chunk!r}")
    run_jit = jax.jit(run, static_argnums=3)
    chunks = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_epochs, desc="fit", unit="epoch", leave=False)
    start = 0
    while start < num_epochs:
        length = min(epochs_per_chunk, num_epochs - start)
        carry, chunk = run_jit(carry, arrays, start, length)
        chunks.append(chunk)
        start += length
        if bar is not None:
            last = {k: f"{float(v[-1]):.3f}" for k, v in chunk.items() if k.endswith("accuracy")}
            bar.set_postfix(last)
            bar.update(length)
    if bar is not None:
        bar.close()
    history = jax.tree.map(lambda *parts: jnp.concatenate(parts), *chunks)
    return FitResult(carry[0], carry[1], history)
