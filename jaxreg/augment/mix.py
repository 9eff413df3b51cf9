"""Mixing augmentations: mixup, cutmix (inputs *and* soft labels), and cutout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_non_negative, float_dtype
from jaxreg.augment._util import check_rank, per_example
from jaxreg.labels import one_hot

__all__ = ["cutmix", "cutout", "mixup"]


def _partners(key: jax.Array, n: int, weight: ArrayLike | None) -> jax.Array:
    """A random permutation of the batch; with ``weight``, one of the rows of positive
    weight only (padding and out-of-bag rows keep themselves as partner)."""
    if weight is None:
        return jax.random.permutation(key, n)
    weight = jnp.asarray(weight)
    if weight.shape != (n,):
        raise ValueError(f"weight must have shape ({n},), got {weight.shape}")
    valid = weight > 0
    scores = jnp.where(valid, jax.random.uniform(key, (n,)), jnp.inf)
    shuffled_valid = jnp.argsort(scores)  # the valid rows first, in random order
    rank = jnp.cumsum(valid) - 1  # position of each valid row among the valid rows
    return jnp.where(valid, shuffled_valid[jnp.clip(rank, 0, n - 1)], jnp.arange(n))


def _beta_or_one(key: jax.Array, alpha: ArrayLike, shape: tuple[int, ...]) -> jax.Array:
    """``Beta(α, α)`` draws, and exactly 1 (no mixing) where ``α = 0`` — never NaN."""
    alpha = jnp.asarray(alpha)
    positive = alpha > 0
    draws = jax.random.beta(
        key, jnp.where(positive, alpha, 1.0), jnp.where(positive, alpha, 1.0), shape
    )
    return jnp.where(positive, draws, 1.0)


def _box_mask(
    key: jax.Array, height: int, width: int, box_h: jax.Array, box_w: jax.Array
) -> jax.Array:
    """``(H, W)`` bool mask of a ``box_h×box_w`` box at a uniform random centre, clipped."""
    cy_key, cx_key = jax.random.split(key)
    cy = jax.random.uniform(cy_key, ()) * height
    cx = jax.random.uniform(cx_key, ()) * width
    rows = jnp.arange(height)[:, None] + 0.5
    cols = jnp.arange(width)[None, :] + 0.5
    return (jnp.abs(rows - cy) <= box_h / 2) & (jnp.abs(cols - cx) <= box_w / 2)


def mixup(
    key: jax.Array,
    x: ArrayLike,
    labels: ArrayLike,
    alpha: ArrayLike = 0.2,
    *,
    num_classes: int | None = None,
    per_example: bool = False,
    weight: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al., 2018): ``λx_i + (1-λ)x_π(i)`` and the same mix of the labels.

    ``λ ~ Beta(α, α)``, one per batch (the paper's recipe, which keeps each
    class's total label mass in the batch unchanged) or one per example with
    ``per_example``; ``π`` is a random permutation of the batch.

    Args:
      key: PRNG key.
      x: inputs ``(N, ...)``.
      labels: integer ids ``(N,)`` (give ``num_classes``) or soft labels ``(N, K)``.
      alpha: Beta concentration (may be traced); ``0`` means no mixing (``λ = 1``).
      num_classes: needed with integer labels.
      per_example: draw ``λ`` per example.
      weight: per-example weights of the batch (``fit``'s ``batch["weight"]``);
        rows of weight 0 (padding, out-of-bag) are never used as partners and
        stay unchanged.

    Returns:
      ``(mixed_x, mixed_soft_labels)``.

    Example:
      >>> x = jnp.array([[0.0], [1.0]])
      >>> mixed, soft = mixup(jax.random.key(0), x, jnp.array([0, 1]), alpha=0.4, num_classes=2)
      >>> bool(jnp.allclose(mixed[:, 0], soft[:, 1]))  # inputs and labels mix with the same λ
      True
      >>> soft.sum(axis=1).tolist()
      [1.0, 1.0]
    """
    check_non_negative(alpha, "alpha")
    x = check_rank(x, (2, 3, 4, 5), "x", "(N, ...)")
    soft = _soft_labels(labels, num_classes, float_dtype(x))
    lam_key, perm_key = jax.random.split(key)
    n = x.shape[0]
    lam = _beta_or_one(lam_key, alpha, (n,) if per_example else ())
    lam = jnp.broadcast_to(lam, (n,)).astype(x.dtype)
    perm = _partners(perm_key, n, weight)
    lam_x = lam.reshape((n,) + (1,) * (x.ndim - 1))
    mixed_x = lam_x * x + (1 - lam_x) * x[perm]
    mixed_y = lam[:, None] * soft + (1 - lam[:, None]) * soft[perm]
    return mixed_x, mixed_y


def _soft_labels(labels: ArrayLike, num_classes: int | None, dtype) -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(dtype)
    if num_classes is None:
        raise ValueError("num_classes is required with integer labels")
    return one_hot(labels, num_classes)


def cutmix(
    key: jax.Array,
    images: ArrayLike,
    labels: ArrayLike,
    alpha: ArrayLike = 1.0,
    *,
    num_classes: int | None = None,
    weight: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """CutMix (Yun et al., 2019): paste a box from a partner image; labels mix by pasted area.

    Per example: ``λ ~ Beta(α, α)``, a box of area ``(1-λ)·H·W`` at a random
    centre (clipped at the border) is copied from image ``π(i)``; the label
    weight of the partner is the box's *actual* area fraction after clipping.
    ``α = 0`` means no mixing; with ``weight``, rows of weight 0 are never
    partners (see :func:`mixup`).

    Returns:
      ``(mixed_images, mixed_soft_labels)``.

    Example:
      >>> images = jnp.stack([jnp.zeros((8, 8, 1)), jnp.ones((8, 8, 1))])
      >>> labels = jnp.array([0, 1])
      >>> mixed, soft = cutmix(jax.random.key(0), images, labels, alpha=1.0, num_classes=2)
      >>> pasted = mixed.mean(axis=(1, 2, 3))  # image 0 gains ones where the box was pasted
      >>> bool(jnp.allclose(soft[:, 1], pasted))  # label weight = pasted area fraction
      True
    """
    check_non_negative(alpha, "alpha")
    images = check_rank(images, (4,), "images", "(N, H, W, C)")
    soft = _soft_labels(labels, num_classes, float_dtype(images))
    n, height, width = images.shape[:3]
    perm_key, box_key = jax.random.split(key)
    perm = _partners(perm_key, n, weight)

    def box(k):
        lam_key, place_key = jax.random.split(k)
        lam = _beta_or_one(lam_key, alpha, ())
        cut = jnp.sqrt(1 - lam)
        return _box_mask(place_key, height, width, cut * height, cut * width)

    masks = jax.vmap(box)(jax.random.split(box_key, n))
    area = jnp.mean(masks, axis=(1, 2)).astype(soft.dtype)
    mixed = jnp.where(masks[..., None], images[perm], images)
    return mixed, (1 - area)[:, None] * soft + area[:, None] * soft[perm]


def cutout(key: jax.Array, images: ArrayLike, size: int, *, fill: float = 0.0) -> jax.Array:
    """Cutout (DeVries & Taylor, 2017): a ``size×size`` square at a random centre → ``fill``.

    Example:
      >>> out = cutout(jax.random.key(0), jnp.ones((3, 10, 10, 1)), size=4)
      >>> erased = (out == 0).sum(axis=(1, 2, 3))  # a 4×4 square, clipped at the border
      >>> bool(jnp.all((erased > 0) & (erased <= 16)))
      True
    """
    images = check_rank(images, (4,), "images", "(N, H, W, C)")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    height, width = images.shape[1:3]

    def erase(k, image):
        mask = _box_mask(k, height, width, jnp.asarray(float(size)), jnp.asarray(float(size)))
        return jnp.where(mask[..., None], jnp.asarray(fill, image.dtype), image)

    return per_example(erase, key, images)
