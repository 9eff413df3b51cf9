"""Image augmentation on batches ``(N, H, W, C)``, built on ``dm_pix`` with one key per example.

``dm_pix``'s random functions draw one random value per call, so calling them
on a whole batch transforms every image the same way. Each function here
splits its key per example and ``vmap``s the ``dm_pix`` op, so every image gets
its own flip, angle, crop and colour change. Strengths may be traced.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, check_non_negative, is_concrete_zero
from jaxreg.augment._util import check_rank, per_example
from jaxreg.augment.mix import cutout
from jaxreg.noise import gaussian_input_noise

__all__ = [
    "color_jitter",
    "cutout",
    "gaussian_pixel_noise",
    "random_crop_and_resize",
    "random_flip_left_right",
    "random_flip_up_down",
    "random_pad_and_crop",
    "random_rotation",
]


def _images(images: ArrayLike) -> jax.Array:
    return check_rank(images, (4,), "images", "(N, H, W, C)")


def random_flip_left_right(
    key: jax.Array, images: ArrayLike, probability: ArrayLike = 0.5
) -> jax.Array:
    """Mirror each image horizontally with ``probability`` (``dm_pix.random_flip_left_right``).

    Example:
      >>> images = jax.random.uniform(jax.random.key(0), (8, 4, 4, 3))
      >>> flipped = random_flip_left_right(jax.random.key(1), images, 1.0)
      >>> bool(jnp.all(flipped == images[:, :, ::-1]))
      True
    """
    check_interval(probability, "probability", 0.0, 1.0, closed_high=True)
    return per_example(
        lambda k, im: pix.random_flip_left_right(k, im, probability=probability),
        key,
        _images(images),
    )


def random_flip_up_down(
    key: jax.Array, images: ArrayLike, probability: ArrayLike = 0.5
) -> jax.Array:
    """Flip each image vertically with ``probability`` (``dm_pix.random_flip_up_down``).

    Example:
      >>> images = jax.random.uniform(jax.random.key(0), (8, 4, 4, 3))
      >>> flipped = random_flip_up_down(jax.random.key(1), images, 1.0)
      >>> bool(jnp.all(flipped == images[:, ::-1]))
      True
    """
    check_interval(probability, "probability", 0.0, 1.0, closed_high=True)
    return per_example(
        lambda k, im: pix.random_flip_up_down(k, im, probability=probability), key, _images(images)
    )


def random_rotation(
    key: jax.Array,
    images: ArrayLike,
    max_degrees: ArrayLike,
    *,
    mode: str = "constant",
    cval: float = 0.0,
) -> jax.Array:
    """Rotate each image by its own angle, uniform in ``±max_degrees`` (``dm_pix.rotate``).

    Example:
      >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
      >>> bool(jnp.allclose(random_rotation(jax.random.key(1), images, 0.0), images, atol=1e-5))
      True
    """
    check_non_negative(max_degrees, "max_degrees")
    max_radians = jnp.deg2rad(max_degrees)

    def rotate(k, image):
        angle = jax.random.uniform(k, (), minval=-max_radians, maxval=max_radians)
        return pix.rotate(image, angle, mode=mode, cval=cval)

    return per_example(rotate, key, _images(images))


def random_crop_and_resize(
    key: jax.Array,
    images: ArrayLike,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """Random-resized crop: a box of area ``scale`` and aspect ``ratio``, resized back to ``H×W``.

    The box is sampled per example (area fraction uniform in ``scale``, log
    aspect ratio uniform in ``log(ratio)``, clipped to the image) and resampled
    bilinearly with ``jax.image.scale_and_translate``.

    Example:
      >>> images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
      >>> random_crop_and_resize(jax.random.key(1), images, scale=(0.3, 0.6)).shape
      (4, 16, 16, 3)
    """
    images = _images(images)
    height, width = images.shape[1:3]
    check_interval(scale[0], "scale", 0.0, 1.0, closed_high=True)
    check_interval(scale[1], "scale", 0.0, 1.0, closed_high=True)

    def crop(k, image):
        area_key, ratio_key, y_key, x_key = jax.random.split(k, 4)
        area = jax.random.uniform(area_key, (), minval=scale[0], maxval=scale[1]) * height * width
        log_ratio = jax.random.uniform(
            ratio_key, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])
        )
        aspect = jnp.exp(log_ratio)
        crop_h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
        crop_w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
        top = jax.random.uniform(y_key, ()) * (height - crop_h)
        left = jax.random.uniform(x_key, ()) * (width - crop_w)
        scales = jnp.array([height / crop_h, width / crop_w])
        translation = -jnp.array([top, left]) * scales
        return jax.image.scale_and_translate(
            image, image.shape, (0, 1), scales, translation, method="linear", antialias=False
        )

    return per_example(crop, key, images)


def random_pad_and_crop(
    key: jax.Array, images: ArrayLike, padding: int = 4, mode: str = "constant"
) -> jax.Array:
    """Pad each side by ``padding`` pixels, then take a random ``H×W`` crop (the CIFAR recipe).

    Example:
      >>> images = jnp.ones((2, 8, 8, 1))
      >>> out = random_pad_and_crop(jax.random.key(0), images, padding=2)
      >>> out.shape, bool(jnp.all((out == 0) | (out == 1)))  # shifted, zero-filled
      ((2, 8, 8, 1), True)
    """
    images = _images(images)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    padded = jnp.pad(images, [(0, 0), (padding, padding), (padding, padding), (0, 0)], mode=mode)
    crop_size = images.shape[1:]
    return per_example(lambda k, im: pix.random_crop(k, im, crop_size), key, padded)


def color_jitter(
    key: jax.Array,
    images: ArrayLike,
    brightness: ArrayLike = 0.0,
    contrast: ArrayLike = 0.0,
    saturation: ArrayLike = 0.0,
    hue: ArrayLike = 0.0,
) -> jax.Array:
    """Random brightness (``±brightness``), contrast and saturation (factors in ``1 ± s``), hue.

    Uses ``dm_pix.random_brightness/contrast/saturation/hue`` per example.
    Saturation and hue need RGB images (``C == 3``). All strengths zero is
    the identity (up to float rounding of the colour-space round trip).

    Example:
      >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
      >>> out = color_jitter(jax.random.key(1), images, brightness=0.2, contrast=0.2)
      >>> out.shape
      (4, 8, 8, 3)
      >>> bool(jnp.allclose(color_jitter(jax.random.key(1), images), images, atol=1e-5))
      True
    """
    images = _images(images)
    for value, name in (
        (brightness, "brightness"),
        (contrast, "contrast"),
        (saturation, "saturation"),
        (hue, "hue"),
    ):
        check_non_negative(value, name)
    rgb = images.shape[-1] == 3
    if not rgb and (not is_concrete_zero(saturation) or not is_concrete_zero(hue)):
        raise ValueError(f"saturation and hue need RGB images, got {images.shape[-1]} channels")

    def jitter(k, image):
        kb, kc, ks, kh = jax.random.split(k, 4)
        image = pix.random_brightness(kb, image, brightness)
        image = pix.random_contrast(kc, image, 1 - contrast, 1 + contrast)
        if rgb:
            image = pix.random_saturation(ks, image, 1 - saturation, 1 + saturation)
            image = pix.random_hue(kh, image, hue)
        return image

    return per_example(jitter, key, images)


def gaussian_pixel_noise(key: jax.Array, images: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """Add ``N(0, σ²)`` noise to every pixel (independent per example and pixel).

    Example:
      >>> images = jnp.zeros((256, 8, 8, 1))
      >>> noisy = gaussian_pixel_noise(jax.random.key(0), images, 0.1)
      >>> round(float(noisy.std()), 2)
      0.1
    """
    return gaussian_input_noise(key, _images(images), sigma)
