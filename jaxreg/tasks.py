"""What a model is trained to do: its per-example loss, its metrics, and checks of its targets.

A :class:`Task` tells :func:`jaxreg.fit` and :func:`jaxreg.evaluate` how to
score outputs against targets; the history keys follow the task
(``train_accuracy`` for classification, ``train_rmse``/``train_r2`` for
regression). Every metric is a weighted mean of per-example values, so
padded examples never count, optionally turned into dataset-level numbers by
``finalize`` (RMSE, R²).

Example:
  >>> task = regression()
  >>> task.loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 2.0])).tolist()
  [1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg.losses import PerExampleLoss, accuracy_per_example, softmax_cross_entropy

__all__ = ["Task", "classification", "regression", "sequence_classification"]

PerExampleMetrics = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
Finalize = Callable[[dict[str, jax.Array]], dict[str, jax.Array]]
TargetCheck = Callable[[np.ndarray, tuple[int, ...], str], None]


class Task(NamedTuple):
    """Loss and metrics of one kind of supervised problem.

    Attributes:
      name: e.g. ``"classification"``.
      loss: per-example loss ``(outputs, targets) -> (n,)``.
      metrics: per-example metrics ``(outputs, targets) -> {name: (n,)}``;
        names starting with ``_`` are helpers consumed by ``finalize``.
      finalize: maps the dataset means (``loss`` included) to the reported
        metrics; identity when None.
      check_targets: host-side check of concrete targets given the output
        shape, raising ``ValueError`` naming the argument.

    Example:
      >>> task = classification()
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
      >>> per_example = task.metrics(logits, jnp.array([0, 0]))
      >>> task.name, {k: v.tolist() for k, v in per_example.items()}
      ('classification', {'accuracy': [1.0, 0.0]})
      >>> task.summarize({"loss": jnp.array(0.7), "accuracy": jnp.array(0.5)})["accuracy"].tolist()
      0.5
    """

    name: str
    loss: PerExampleLoss
    metrics: PerExampleMetrics
    finalize: Finalize | None = None
    check_targets: TargetCheck | None = None

    def summarize(self, means: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Reported metrics from the dataset means of ``loss`` and ``metrics``."""
        if self.finalize is not None:
            means = self.finalize(means)
        return {k: v for k, v in means.items() if not k.startswith("_")}


def _check_class_ids(labels: np.ndarray, num_classes: int, name: str, ignore=None) -> None:
    valid = labels if ignore is None else labels[labels != ignore]
    if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
        allowed = f"[0, {num_classes})" + ("" if ignore is None else f" or {ignore}")
        raise ValueError(
            f"{name} has labels outside {allowed}: min {labels.min()}, max {labels.max()} "
            f"(the model has {num_classes} outputs)"
        )


def _check_classification(labels: np.ndarray, output_shape: tuple[int, ...], name: str) -> None:
    num_classes = output_shape[-1]
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        if labels.ndim != 1:
            raise ValueError(f"{name} must hold one class id per example, got shape {labels.shape}")
        _check_class_ids(labels, num_classes, name)
    elif labels.ndim != 2 or labels.shape[-1] != num_classes:
        raise ValueError(
            f"{name} must be int class ids (n,) or probabilities (n, {num_classes}), "
            f"got {labels.dtype} of shape {labels.shape}"
        )


def _accuracy(outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    return {"accuracy": accuracy_per_example(outputs, targets)}


def classification(loss: PerExampleLoss = softmax_cross_entropy) -> Task:
    """Classification from logits ``(n, K)``: cross-entropy (or ``loss``) and accuracy.

    Targets are int ids ``(n,)`` in ``[0, K)`` or probabilities ``(n, K)``
    (label smoothing, mixup).

    Example:
      >>> task = classification()
      >>> task.metrics(jnp.array([[2.0, 0.0]]), jnp.array([0]))["accuracy"].tolist()
      [1.0]
    """
    return Task("classification", loss, _accuracy, check_targets=_check_classification)


def _squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    if outputs.shape != targets.shape and outputs.shape == (*targets.shape, 1):
        outputs = outputs[..., 0]
    if outputs.shape != targets.shape:
        raise ValueError(
            f"regression outputs {outputs.shape} and targets {targets.shape} must match"
        )
    error = (outputs - targets.astype(outputs.dtype)) ** 2
    return jnp.mean(error.reshape(error.shape[0], -1), axis=1)


def _target_moments(outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    flat = targets.reshape(targets.shape[0], -1).astype(outputs.dtype)
    return {"_y": jnp.mean(flat, axis=1), "_y2": jnp.mean(flat**2, axis=1)}


def _finalize_regression(means: dict[str, jax.Array]) -> dict[str, jax.Array]:
    variance = means["_y2"] - means["_y"] ** 2
    safe = jnp.where(variance > 0, variance, 1.0)
    r2 = jnp.where(variance > 0, 1.0 - means["loss"] / safe, jnp.nan)
    return {**means, "rmse": jnp.sqrt(means["loss"]), "r2": r2}


def _check_regression(targets: np.ndarray, output_shape: tuple[int, ...], name: str) -> None:
    shape = tuple(output_shape)
    if targets.shape[1:] != shape[1:] and (*targets.shape[1:], 1) != shape[1:]:
        raise ValueError(f"{name} has shape {targets.shape}; the model outputs {shape}")
    if not np.issubdtype(targets.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got {targets.dtype}")


def regression() -> Task:
    """Least squares: loss = per-example mean squared error; metrics ``rmse`` and ``r2``.

    ``r2 = 1 − MSE / Var(y)`` over the evaluated set (pooled over output
    dimensions; scikit-learn's ``r2_score`` for one output). Outputs ``(n,)``,
    ``(n, 1)`` for targets ``(n,)``, or ``(n, d)``.

    Example:
      >>> task = regression()
      >>> means = {"loss": jnp.array(0.25), "_y": jnp.array(0.0), "_y2": jnp.array(1.0)}
      >>> out = task.summarize(means)
      >>> float(out["rmse"]), float(out["r2"])
      (0.5, 0.75)
    """
    return Task(
        "regression", _squared_error, _target_moments, _finalize_regression, _check_regression
    )


def sequence_classification(ignore_label: int = -1) -> Task:
    """Per-token classification: outputs ``(n, T, K)``, int targets ``(n, T)``.

    Tokens whose target is ``ignore_label`` (padding) are masked out. Each
    example's loss and accuracy are means over its valid tokens (an example
    with none contributes 0); the dataset value is the weighted mean over
    examples.

    Example:
      >>> task = sequence_classification()
      >>> logits = jnp.array([[[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]])
      >>> task.metrics(logits, jnp.array([[0, 0, -1]]))["accuracy"].tolist()
      [0.5]
    """

    def masked_mean(values: jax.Array, targets: jax.Array) -> jax.Array:
        mask = (targets != ignore_label).astype(values.dtype)
        count = jnp.sum(mask, axis=1)
        return jnp.sum(values * mask, axis=1) / jnp.where(count > 0, count, 1.0)

    def safe_targets(targets: jax.Array) -> jax.Array:
        return jnp.where(targets == ignore_label, 0, targets)

    def loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
        per_token = softmax_cross_entropy(outputs, safe_targets(targets))
        return masked_mean(per_token, targets)

    def metrics(outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
        hits = accuracy_per_example(outputs, safe_targets(targets)).astype(outputs.dtype)
        return {"accuracy": masked_mean(hits, targets)}

    def check(targets: np.ndarray, output_shape: tuple[int, ...], name: str) -> None:
        wanted = tuple(output_shape[1:-1])
        if targets.shape[1:] != wanted or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError(
                f"{name} must be int token labels of shape (n, {', '.join(map(str, wanted))}), "
                f"got {targets.dtype} of shape {targets.shape}"
            )
        _check_class_ids(targets, output_shape[-1], name, ignore=ignore_label)

    return Task("sequence_classification", loss, metrics, check_targets=check)
