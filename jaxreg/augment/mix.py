"""Mixing augmentations: mixup, cutmix (inputs *and* soft labels), and cutout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_non_negative
from jaxreg.augment._util import check_rank, per_example
from jaxreg.labels import one_hot

__all__ = ["cutmix", "cutout", "mixup"]


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
) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al., 2018): ``λx_i + (1-λ)x_π(i)`` and the same mix of the labels.

    ``λ ~ Beta(α, α)``, one per batch (the paper's recipe, which keeps each
    class's total label mass in the batch unchanged) or one per example with
    ``per_example``; ``π`` is a random permutation of the batch.

    Args:
      key: PRNG key.
      x: inputs ``(N, ...)``.
      labels: integer ids ``(N,)`` (give ``num_classes``) or soft labels ``(N, K)``.
      alpha: Beta concentration (may be traced).
      num_classes: needed with integer labels.
      per_example: draw ``λ`` per example.

    Returns:
      ``(mixed_x, mixed_soft_labels)``.
    """
    check_non_negative(alpha, "alpha")
    x = check_rank(x, (2, 3, 4, 5), "x", "(N, ...)")
    soft = _soft_labels(labels, num_classes)
    lam_key, perm_key = jax.random.split(key)
    n = x.shape[0]
    lam = jax.random.beta(lam_key, alpha, alpha, (n,) if per_example else ())
    lam = jnp.broadcast_to(lam, (n,)).astype(x.dtype)
    perm = jax.random.permutation(perm_key, n)
    lam_x = lam.reshape((n,) + (1,) * (x.ndim - 1))
    mixed_x = lam_x * x + (1 - lam_x) * x[perm]
    mixed_y = lam[:, None] * soft + (1 - lam[:, None]) * soft[perm]
    return mixed_x, mixed_y


def _soft_labels(labels: ArrayLike, num_classes: int | None) -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(jnp.float32)
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
) -> tuple[jax.Array, jax.Array]:
    """CutMix (Yun et al., 2019): paste a box from a partner image; labels mix by pasted area.

    Per example: ``λ ~ Beta(α, α)``, a box of area ``(1-λ)·H·W`` at a random
    centre (clipped at the border) is copied from image ``π(i)``; the label
    weight of the partner is the box's *actual* area fraction after clipping.

    Returns:
      ``(mixed_images, mixed_soft_labels)``.
    """
    check_non_negative(alpha, "alpha")
    images = check_rank(images, (4,), "images", "(N, H, W, C)")
    soft = _soft_labels(labels, num_classes)
    n, height, width = images.shape[:3]
    perm_key, box_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, n)

    def box(k):
        lam_key, place_key = jax.random.split(k)
        lam = jax.random.beta(lam_key, alpha, alpha)
        cut = jnp.sqrt(1 - lam)
        return _box_mask(place_key, height, width, cut * height, cut * width)

    masks = jax.vmap(box)(jax.random.split(box_key, n))
    area = jnp.mean(masks, axis=(1, 2)).astype(soft.dtype)
    mixed = jnp.where(masks[..., None], images[perm], images)
    return mixed, (1 - area)[:, None] * soft + area[:, None] * soft[perm]


def cutout(key: jax.Array, images: ArrayLike, size: int, *, fill: float = 0.0) -> jax.Array:
    """Cutout (DeVries & Taylor, 2017): a ``size×size`` square at a random centre → ``fill``."""
    images = check_rank(images, (4,), "images", "(N, H, W, C)")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    height, width = images.shape[1:3]

    def erase(k, image):
        mask = _box_mask(k, height, width, jnp.asarray(float(size)), jnp.asarray(float(size)))
        return jnp.where(mask[..., None], jnp.asarray(fill, image.dtype), image)

    return per_example(erase, key, images)
