"""Classification metrics and calibration: accuracy, NLL, Brier, ECE/MCE/RMSCE, reliability bins.

All functions take predicted probabilities ``probs`` ``(n, K)`` and integer
labels ``(n,)`` (or one-hot / soft labels ``(n, K)``), are jit-able, and check
concrete inputs (probabilities in ``[0, 1]`` summing to 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxreg._checks import check_label_range, float_dtype, is_traced

__all__ = [
    "BiasVariance",
    "NoiseScale",
    "accuracy",
    "bias_variance",
    "brier",
    "ece",
    "gradient_noise_scale",
    "nll",
    "reliability_bins",
]

Binning = Literal["width", "mass"]


def _check_probs(probs: ArrayLike) -> jax.Array:
    probs = jnp.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (n, num_classes), got {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError("probs is empty")
    if not is_traced(probs):
        values = np.asarray(probs, np.float64)
        if np.any(values < -1e-6) or np.any(values > 1 + 1e-6):
            raise ValueError("probs must lie in [0, 1]; pass softmax(logits), not logits")
        sums = values.sum(1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            worst = float(sums[np.argmax(np.abs(sums - 1))])
            raise ValueError(f"probs rows must sum to 1 (a row sums to {worst:.4f})")
    return probs


def _label_ids(labels: ArrayLike, probs: jax.Array) -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.ndim == 2:
        labels = jnp.argmax(labels, axis=-1)
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
    check_label_range(labels, probs.shape[1])
    return labels


def accuracy(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Fraction of examples whose arg-max class is the label (also works on logits).

    Example:
      >>> float(accuracy(jnp.array([[0.9, 0.1], [0.4, 0.6]]), jnp.array([0, 0])))
      0.5
    """
    probs = jnp.asarray(probs)
    hits = jnp.argmax(probs, -1) == _label_ids(labels, probs)
    return jnp.mean(hits.astype(float_dtype(probs)))


def nll(probs: ArrayLike, labels: ArrayLike, *, eps: float = 1e-12) -> jax.Array:
    """Mean negative log-likelihood ``-log p[label]`` (probabilities clipped at ``eps``).

    Example:
      >>> probs = jnp.array([[0.5, 0.5], [0.25, 0.75]])
      >>> round(float(nll(probs, jnp.array([0, 1]))), 4)  # -(log 0.5 + log 0.75) / 2
      0.4904
    """
    probs = _check_probs(probs)
    ids = _label_ids(labels, probs)
    picked = jnp.take_along_axis(probs, ids[:, None], axis=1)[:, 0]
    return -jnp.mean(jnp.log(jnp.clip(picked, eps, 1.0)))


def brier(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Mean multi-class Brier score ``Σ_k (p_k - y_k)²`` (between 0 and 2).

    Example:
      >>> probs = jnp.array([[1.0, 0.0], [0.5, 0.5]])
      >>> float(brier(probs, jnp.array([0, 1])))  # (0 + 0.25 + 0.25) / 2
      0.25
    """
    probs = _check_probs(probs)
    targets = jax.nn.one_hot(_label_ids(labels, probs), probs.shape[1], dtype=probs.dtype)
    return jnp.mean(jnp.sum((probs - targets) ** 2, axis=1))


def _bin_index(confidence: jax.Array, num_bins: int, binning: Binning) -> jax.Array:
    if binning == "width":
        # Bin b covers (b/B, (b+1)/B]; a confidence of exactly 0 goes to bin 0.
        return jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    if binning == "mass":
        n = confidence.shape[0]
        rank = (
            jnp.zeros(n, jnp.int32)
            .at[jnp.argsort(confidence, stable=True)]
            .set(jnp.arange(n, dtype=jnp.int32))
        )
        return (rank * num_bins) // n
    raise ValueError(f"binning must be 'width' or 'mass', got {binning!r}")


def reliability_bins(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15, binning: Binning = "width"
) -> dict[str, jax.Array]:
    """Per-bin mean confidence, accuracy and count of the top-label prediction.

    ``binning="width"``: equal-width bins over ``[0, 1]``; ``"mass"``: equal-mass
    bins (each holds ``n/num_bins`` examples, by rank of confidence). Empty bins
    have count 0 and confidence/accuracy 0.

    Returns:
      ``{"confidence", "accuracy", "count"}``, each shaped ``(num_bins,)``.

    Example:
      >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
      >>> bins = reliability_bins(probs, jnp.array([0, 1, 1, 1]), num_bins=2)
      >>> bins["count"].tolist(), bins["accuracy"].tolist()  # all confidences in [0.5, 1]
      ([0.0, 4.0], [0.0, 0.75])
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    probs = _check_probs(probs)
    ids = _label_ids(labels, probs)
    confidence = jnp.max(probs, axis=1)
    correct = (jnp.argmax(probs, axis=1) == ids).astype(probs.dtype)
    index = _bin_index(confidence, num_bins, binning)
    count = jax.ops.segment_sum(jnp.ones_like(confidence), index, num_segments=num_bins)
    conf_sum = jax.ops.segment_sum(confidence, index, num_segments=num_bins)
    acc_sum = jax.ops.segment_sum(correct, index, num_segments=num_bins)
    safe = jnp.maximum(count, 1)
    return {"confidence": conf_sum / safe, "accuracy": acc_sum / safe, "count": count}


def ece(
    probs: ArrayLike,
    labels: ArrayLike,
    num_bins: int = 15,
    norm: Literal["l1", "l2", "max"] = "l1",
    binning: Binning = "width",
) -> jax.Array:
    """Top-label calibration error: ``norm="l1"`` ECE, ``"l2"`` RMSCE, ``"max"`` MCE.

    ``ECE = Σ_b (n_b/n)·|acc_b - conf_b|``; ``RMSCE = sqrt(Σ_b (n_b/n)·(acc_b - conf_b)²)``;
    ``MCE = max over non-empty bins of |acc_b - conf_b|`` (Guo et al., 2017).

    Example:
      >>> probs = jnp.array([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])
      >>> round(float(ece(probs, jnp.array([0, 0, 0, 0, 1]))), 6)  # 80% confident, 80% right
      0.0
    """
    bins = reliability_bins(probs, labels, num_bins, binning)
    weight = bins["count"] / jnp.sum(bins["count"])
    gap = jnp.abs(bins["accuracy"] - bins["confidence"])
    if norm == "l1":
        return jnp.sum(weight * gap)
    if norm == "l2":
        return jnp.sqrt(jnp.sum(weight * gap**2))
    if norm == "max":
        return jnp.max(jnp.where(bins["count"] > 0, gap, 0.0))
    raise ValueError(f"norm must be 'l1', 'l2' or 'max', got {norm!r}")


class NoiseScale(NamedTuple):
    """The simple gradient noise scale and the quantities it is made of.

    Attributes:
      simple_noise_scale: ``B_simple = tr(Σ)/|G|²`` (McCandlish et al., 2018),
        the batch size at which gradient noise and signal are of equal size.
      trace_covariance: ``tr(Σ)``, Σ the per-example gradient covariance.
      gradient_sq_norm: ``|G|²`` of the full-data gradient (bias-corrected).

    Example:
      >>> from jaxreg.data import batches
      >>> x = jax.random.normal(jax.random.key(0), (256, 2)); y = x @ jnp.ones(2)
      >>> def loss_fn(w, b):
      ...     return jnp.sum(b["weight"] * (b["x"] @ w - b["y"]) ** 2) / (2 * jnp.sum(b["weight"]))
      >>> s = gradient_noise_scale(loss_fn, jnp.zeros(2), batches(x, y, 32))
      >>> bool(jnp.isclose(s.simple_noise_scale, s.trace_covariance / s.gradient_sq_norm))
      True
    """

    simple_noise_scale: jax.Array
    trace_covariance: jax.Array
    gradient_sq_norm: jax.Array


def _weights(batch, size: int) -> jax.Array:
    if isinstance(batch, dict) and "weight" in batch:
        return batch["weight"]
    return jnp.ones((size,), jnp.result_type(float))


def gradient_noise_scale(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Any,
    *,
    method: Literal["per_example", "batches"] = "per_example",
) -> NoiseScale:
    """Simple noise scale ``tr(Σ)/|G|²`` of ``loss_fn`` at ``params`` over ``data``.

    ``data`` has a leading batch-index axis (see :func:`jaxreg.data.batches`).

    * ``method="per_example"``: per-example gradients (``vmap`` over each
      batch, ``scan`` over batches, padding excluded by ``"weight"``):
      ``tr(Σ) = Σᵢ|gᵢ - Ḡ|²/(N-1)`` and ``|G|² ≈ |Ḡ|² - tr(Σ)/N`` (unbiased).
    * ``method="batches"``: McCandlish et al.'s estimator from the per-batch
      gradients (size ``B``, full batches only) and the full gradient (size
      ``N``), using ``E|G_B|² = |G|² + tr(Σ)/B``. Cheaper, noisier.

    Example:
      >>> from jaxreg.data import batches
      >>> x = jax.random.normal(jax.random.key(0), (512, 3)); y = x @ jnp.ones(3)
      >>> def loss_fn(w, b):
      ...     return jnp.sum(b["weight"] * (b["x"] @ w - b["y"]) ** 2) / (2 * jnp.sum(b["weight"]))
      >>> scale = gradient_noise_scale(loss_fn, jnp.zeros(3), batches(x, y, 64))
      >>> bool(scale.simple_noise_scale > 0)
      True
    """
    grad_fn = jax.grad(loss_fn)
    zeros = jax.tree.map(jnp.zeros_like, params)
    if method == "per_example":

        def body(carry, batch):
            sq_sum, grad_sum, count = carry
            size = jax.tree.leaves(batch)[0].shape[0]
            weight = _weights(batch, size)

            def one(example):
                single = jax.tree.map(lambda a: a[None], example)
                if isinstance(single, dict) and "weight" in single:
                    single = {**single, "weight": jnp.ones_like(single["weight"])}
                return grad_fn(params, single)

            grads = jax.vmap(one)(batch)
            norms = sum(
                jnp.sum(jnp.square(g).reshape(size, -1), axis=1) for g in jax.tree.leaves(grads)
            )
            weighted = jax.tree.map(lambda g: jnp.tensordot(weight, g, axes=1), grads)
            grad_sum = jax.tree.map(jnp.add, grad_sum, weighted)
            return (sq_sum + jnp.sum(weight * norms), grad_sum, count + jnp.sum(weight)), None

        init = (jnp.zeros(()), zeros, jnp.zeros(()))
        (sq_sum, grad_sum, n), _ = jax.lax.scan(body, init, data)
        mean_grad_sq = optax.tree.norm(jax.tree.map(lambda g: g / n, grad_sum), squared=True)
        trace = (sq_sum - n * mean_grad_sq) / (n - 1)
        signal = mean_grad_sq - trace / n
    elif method == "batches":

        def body(carry, batch):
            sq_sum, grad_sum, total, full = carry
            size = jax.tree.leaves(batch)[0].shape[0]
            weight = jnp.sum(_weights(batch, size))
            g = grad_fn(params, batch)
            is_full = weight == size
            grad_sum = jax.tree.map(lambda s, x: s + weight * x, grad_sum, g)
            sq_sum = sq_sum + jnp.where(is_full, optax.tree.norm(g, squared=True), 0.0)
            return (sq_sum, grad_sum, total + weight, full + is_full), None

        init = (jnp.zeros(()), zeros, jnp.zeros(()), jnp.zeros(()))
        (sq_sum, grad_sum, n, full), _ = jax.lax.scan(body, init, data)
        small = float(jax.tree.leaves(data)[0].shape[1])
        small_sq = sq_sum / full
        big_sq = optax.tree.norm(jax.tree.map(lambda g: g / n, grad_sum), squared=True)
        signal = (n * big_sq - small * small_sq) / (n - small)
        trace = (small_sq - big_sq) / (1 / small - 1 / n)
    else:
        raise ValueError(f"method must be 'per_example' or 'batches', got {method!r}")
    return NoiseScale(trace / signal, trace, signal)


class BiasVariance(NamedTuple):
    """mlxtend's ``bias_variance_decomp`` quantities (averaged over test points).

    Example:
      >>> preds = jnp.array([[1.0, 2.0], [3.0, 2.0]])  # 2 training sets × 2 test points
      >>> bv = bias_variance(preds, jnp.array([2.0, 0.0]))
      >>> [float(v) for v in bv], float(bv.bias + bv.variance)  # expected_loss = bias + variance
      ([2.5, 2.0, 0.5], 2.5)
    """

    expected_loss: jax.Array
    bias: jax.Array
    variance: jax.Array


def bias_variance(
    preds: ArrayLike,
    targets: ArrayLike,
    loss: Literal["mse", "0-1"] = "mse",
    *,
    num_classes: int | None = None,
) -> BiasVariance:
    """Bias and variance over training sets, with mlxtend's definitions.

    ``preds`` is ``(rounds, n)``: one row per model trained on its own
    bootstrap/training set (e.g. from one vmapped run, instead of mlxtend's
    sequential refits). The main prediction is the mean (``"mse"``) or the
    mode (``"0-1"``, ties to the smallest class, as ``np.bincount(...).argmax()``).

    * ``"mse"``: loss ``E(ŷ−y)²``, bias ``(ȳ−y)²``, variance ``E(ŷ−ȳ)²``;
      ``loss = bias + variance`` exactly.
    * ``"0-1"``: loss ``P(ŷ≠y)``, bias ``[ŷ_main ≠ y]``, variance ``P(ŷ ≠ ŷ_main)``.
      Give ``num_classes`` to use it under ``jit``.

    Example:
      >>> labels = jnp.array([[0, 1, 1], [0, 1, 2], [1, 1, 2]])  # 3 models × 3 test points
      >>> bv = bias_variance(labels, jnp.array([0, 2, 2]), loss="0-1", num_classes=3)
      >>> [round(float(v), 4) for v in bv]  # main prediction (mode): [0, 1, 2]
      [0.5556, 0.3333, 0.2222]
    """
    preds = jnp.asarray(preds)
    targets = jnp.asarray(targets)
    if preds.ndim != 2 or preds.shape[1:] != targets.shape:
        raise ValueError(f"preds must be (rounds, n) with n = {targets.shape}, got {preds.shape}")
    if loss == "mse":
        main = jnp.mean(preds, axis=0)
        return BiasVariance(
            jnp.mean((preds - targets) ** 2),
            jnp.mean((main - targets) ** 2),
            jnp.mean((main - preds) ** 2),
        )
    if loss == "0-1":
        labels = preds.astype(jnp.int32)
        if num_classes is None:
            num_classes = int(max(int(jnp.max(labels)), int(jnp.max(targets)))) + 1
        counts = jnp.sum(jax.nn.one_hot(labels, num_classes), axis=0)
        main = jnp.argmax(counts, axis=-1)
        dtype = float_dtype(preds)

        def rate(wrong):
            return jnp.mean(wrong.astype(dtype))

        return BiasVariance(rate(labels != targets), rate(main != targets), rate(labels != main))
    raise ValueError(f"loss must be 'mse' or '0-1', got {loss!r}")
