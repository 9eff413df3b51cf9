"""Label smoothing (both conventions) and label noise (symmetric and from a transition matrix)."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, is_traced

__all__ = ["asymmetric_label_noise", "one_hot", "smooth", "symmetric_label_noise"]


def _check_num_classes(num_classes: int) -> None:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")


def one_hot(labels: ArrayLike, num_classes: int) -> jax.Array:
    """Integer labels ``(...)`` → one-hot ``(..., K)``; float ``(..., K)`` passes through.

    Example:
      >>> one_hot(jnp.array([2, 0]), 3).tolist()
      [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
      >>> one_hot(jnp.array([[0.2, 0.8]]), 2).tolist()  # soft labels pass through
      [[0.20000000298023224, 0.800000011920929]]
    """
    _check_num_classes(num_classes)
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        return jax.nn.one_hot(labels, num_classes)
    if labels.shape[-1:] != (num_classes,):
        raise ValueError(
            f"float labels must be one-hot with last axis {num_classes}, got shape {labels.shape}"
        )
    return labels


def smooth(
    labels: ArrayLike,
    num_classes: int,
    eps: ArrayLike,
    convention: Literal["off_target", "uniform"] = "off_target",
) -> jax.Array:
    """Label smoothing.

    ``convention="off_target"`` (the classic statement): ``1 - ε`` on the true
    class and ``ε/(K-1)`` on every other class. ``convention="uniform"``:
    optax's ``(1 - ε)·onehot + ε/K`` (so the true class gets ``1 - ε + ε/K``),
    computed by ``optax.smooth_labels``. ``eps`` may be traced.

    Args:
      labels: integer ids ``(...)`` or one-hot ``(..., K)``.
      num_classes: ``K``.
      eps: smoothing ``ε`` in ``[0, 1)``.
      convention: ``"off_target"`` or ``"uniform"``.

    Returns:
      Soft labels ``(..., K)``, rows summing to 1.

    Example:
      >>> [round(v, 4) for v in smooth(jnp.array([0]), 3, 0.2)[0].tolist()]
      [0.8, 0.1, 0.1]
      >>> [round(v, 4) for v in smooth(jnp.array([0]), 3, 0.3, "uniform")[0].tolist()]
      [0.8, 0.1, 0.1]
    """
    check_interval(eps, "eps", 0.0, 1.0)
    targets = one_hot(labels, num_classes)
    if convention == "uniform":
        return optax.smooth_labels(targets, eps)
    if convention != "off_target":
        raise ValueError(f"convention must be 'off_target' or 'uniform', got {convention!r}")
    return (1 - eps) * targets + eps / (num_classes - 1) * (1 - targets)


def symmetric_label_noise(
    key: jax.Array, labels: ArrayLike, rate: ArrayLike, num_classes: int
) -> jax.Array:
    """Flip each integer label with probability ``rate`` to one of the *other* ``K-1`` classes.

    Example:
      >>> noisy = symmetric_label_noise(jax.random.key(0), jnp.zeros(1000, int), 0.3, 10)
      >>> 0.25 < float(jnp.mean(noisy != 0)) < 0.35
      True
    """
    _check_num_classes(num_classes)
    check_interval(rate, "rate", 0.0, 1.0, closed_high=True)
    labels = jnp.asarray(labels)
    flip_key, class_key = jax.random.split(key)
    flip = jax.random.bernoulli(flip_key, rate, labels.shape)
    offset = jax.random.randint(class_key, labels.shape, 1, num_classes)
    return jnp.where(flip, (labels + offset) % num_classes, labels).astype(labels.dtype)


def asymmetric_label_noise(key: jax.Array, labels: ArrayLike, transition: ArrayLike) -> jax.Array:
    """Resample each label ``y`` from row ``transition[y]`` of a ``(K, K)`` row-stochastic matrix.

    ``transition[i, j]`` is ``P(noisy = j | clean = i)``; e.g. a pair-flip
    matrix models systematic confusions.

    Example:
      >>> flip = jnp.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # 0 -> 1 always
      >>> asymmetric_label_noise(jax.random.key(0), jnp.array([0, 1, 2, 0]), flip).tolist()
      [1, 1, 2, 1]
    """
    transition = jnp.asarray(transition)
    if transition.ndim != 2 or transition.shape[0] != transition.shape[1]:
        raise ValueError(f"transition must be a square (K, K) matrix, got shape {transition.shape}")
    if not is_traced(transition):
        rows = np.asarray(transition)
        if np.any(rows < 0) or not np.allclose(rows.sum(1), 1.0, atol=1e-5):
            raise ValueError("transition rows must be probabilities summing to 1")
    labels = jnp.asarray(labels)
    logits = jnp.log(transition[labels])
    return jax.random.categorical(key, logits).astype(labels.dtype)
