"""Per-example losses and the ``loss_fn(params, batch)`` builder shared by the toolkit.

Labels may be integer class ids or probability vectors (soft labels from label
smoothing or mixup); both losses below accept either.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from jaxreg._checks import check_label_range, float_dtype

__all__ = [
    "accuracy_per_example",
    "classification_loss",
    "r_drop",
    "softmax_cross_entropy",
    "symmetric_kl",
    "weighted_mean",
]

Apply = Callable[..., jax.Array]
PerExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy; ``labels`` are int ids ``(n,)`` or probabilities ``(n, K)``.

    Example:
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])
      >>> [round(v, 3) for v in softmax_cross_entropy(logits, jnp.array([0, 0])).tolist()]
      [0.127, 2.127]
    """
    if labels.ndim == logits.ndim:
        return optax.softmax_cross_entropy(logits, labels)
    check_label_range(labels, logits.shape[-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def accuracy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where ``argmax(logits)`` equals the (argmax of the) label, else 0.0.

    Example:
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
      >>> accuracy_per_example(logits, jnp.array([0, 1, 1])).tolist()
      [1.0, 1.0, 0.0]
    """
    if labels.ndim == logits.ndim:
        labels = jnp.argmax(labels, axis=-1)
    return (jnp.argmax(logits, axis=-1) == labels).astype(float_dtype(logits))


def weighted_mean(values: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Mean of ``values`` over examples, counting each with ``weight`` (padding has 0).

    Example:
      >>> float(weighted_mean(jnp.array([1.0, 2.0, 9.0]), jnp.array([1.0, 1.0, 0.0])))  # padding
      1.5
    """
    if weight is None:
        return jnp.mean(values)
    # A batch whose weights are all zero (e.g. bootstrap left every example out) contributes 0.
    total = jnp.sum(weight)
    return jnp.sum(values * weight) / jnp.where(total > 0, total, 1.0)


def classification_loss(
    apply: Apply, loss: PerExampleLoss = softmax_cross_entropy
) -> Callable[[chex.ArrayTree, dict[str, jax.Array]], jax.Array]:
    """Turn a model's ``apply`` into ``loss_fn(params, batch) -> scalar`` (eval mode).

    The batch is a dict with ``"x"``, ``"y"`` and optionally ``"weight"`` (as built by
    :func:`jaxreg.data.batches`); the result is the weighted mean loss, so
    padded examples do not count. This is the signature every analysis function
    of jaxreg takes.

    Example:
      >>> apply = lambda params, x, **kw: x @ params
      >>> loss_fn = classification_loss(apply)
      >>> batch = {"x": jnp.eye(2), "y": jnp.array([0, 1])}
      >>> float(loss_fn(jnp.zeros((2, 2)), batch)) == float(jnp.log(2.0))
      True
    """

    def loss_fn(params: chex.ArrayTree, batch: dict[str, jax.Array]) -> jax.Array:
        logits = apply(params, batch["x"])
        return weighted_mean(loss(logits, batch["y"]), batch.get("weight"))

    return loss_fn


def symmetric_kl(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
    """Per-example ``½(KL(p_a‖p_b) + KL(p_b‖p_a))`` of two softmax distributions.

    Example:
      >>> a, b = jnp.log(jnp.array([[0.5, 0.5]])), jnp.log(jnp.array([[0.9, 0.1]]))
      >>> round(float(symmetric_kl(a, b)[0]), 4)  # ½(0.5108 + 0.3681)
      0.4394
    """
    log_a = jax.nn.log_softmax(logits_a, axis=-1)
    log_b = jax.nn.log_softmax(logits_b, axis=-1)
    difference = log_a - log_b
    return 0.5 * jnp.sum((jnp.exp(log_a) - jnp.exp(log_b)) * difference, axis=-1)


def r_drop(
    apply: Apply,
    params: chex.ArrayTree,
    x: jax.Array,
    *,
    key: jax.Array,
    weight: jax.Array | None = None,
    **apply_kwargs,
) -> jax.Array:
    """R-Drop's consistency term (Liang et al., 2021): the weighted mean over examples of
    :func:`symmetric_kl` between two training-mode passes with independent dropout keys.

    Add ``α·r_drop(...)`` to the loss; it is 0 for a model without stochastic layers.
    ``apply_kwargs`` (e.g. ``hparams``) go to both passes.

    Example:
      >>> import jax
      >>> apply = lambda w, x, *, key, train: x @ w  # no dropout: both passes agree
      >>> float(r_drop(apply, jnp.eye(2), jnp.ones((3, 2)), key=jax.random.key(0)))
      0.0
    """
    key_a, key_b = jax.random.split(key)
    logits_a = apply(params, x, key=key_a, train=True, **apply_kwargs)
    logits_b = apply(params, x, key=key_b, train=True, **apply_kwargs)
    return weighted_mean(symmetric_kl(logits_a, logits_b), weight)
