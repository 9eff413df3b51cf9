"""Per-example image pipeline throughput: ``jaxreg.augment`` vs the same ops written on dm_pix.

Pipeline: random horizontal flip, rotation (±15°), pad-4-and-crop, colour
jitter (brightness, contrast, saturation, hue), on 32×32×3 images, batch 256.
The alternative is what a user writes by hand: one function per image calling
the ``dm_pix`` ops with split keys, ``vmap``-ed over the batch and jitted. We
report images per second for both and the ratio (target ≥ 1.0).

Run: ``python -m benchmarks.augment``.
"""

from __future__ import annotations

import time

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._machine import describe, record
from jaxreg.augment import compose, image

BATCH, REPEATS, CALLS = 256, 7, 20


def jaxreg_pipeline():
    return compose(
        [
            lambda k, x: image.random_flip_left_right(k, x),
            lambda k, x: image.random_rotation(k, x, 15.0),
            lambda k, x: image.random_pad_and_crop(k, x, 4),
            lambda k, x: image.color_jitter(k, x, 0.2, 0.2, 0.2, 0.05),
        ]
    )


def dm_pix_pipeline(key, images):
    def one(k, im):
        k1, k2, k3, k4, k5, k6, k7 = jax.random.split(k, 7)
        im = pix.random_flip_left_right(k1, im)
        angle = jax.random.uniform(k2, (), minval=-jnp.deg2rad(15.0), maxval=jnp.deg2rad(15.0))
        im = pix.rotate(im, angle, mode="constant")
        im = pix.random_crop(k3, jnp.pad(im, [(4, 4), (4, 4), (0, 0)]), im.shape)
        im = pix.random_brightness(k4, im, 0.2)
        im = pix.random_contrast(k5, im, 0.8, 1.2)
        im = pix.random_saturation(k6, im, 0.8, 1.2)
        return pix.random_hue(k7, im, 0.05)

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def throughput(fn, images) -> float:
    keys = jax.random.split(jax.random.key(1), CALLS)
    jax.block_until_ready(fn(keys[0], images))
    start = time.perf_counter()
    for k in keys:
        out = fn(k, images)
    jax.block_until_ready(out)
    return CALLS * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    images = jax.random.uniform(jax.random.key(0), (BATCH, 32, 32, 3))
    ours = jax.jit(jaxreg_pipeline())
    direct = jax.jit(dm_pix_pipeline)
    rates = {"jaxreg": [], "dm_pix": []}
    for _ in range(REPEATS):
        rates["jaxreg"].append(throughput(ours, images))
        rates["dm_pix"].append(throughput(direct, images))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"machine: {describe()}")
    print(f"jaxreg.augment pipeline: {med['jaxreg']:10.0f} images/s")
    print(f"hand-written dm_pix:     {med['dm_pix']:10.0f} images/s")
    print(f"throughput ratio jaxreg/dm_pix: {med['jaxreg'] / med['dm_pix']:.3f} (target >= 1.0)")
    record(
        "augment",
        {"images_per_s": rates, "median": med, "ratio": med["jaxreg"] / med["dm_pix"]},
    )


if __name__ == "__main__":
    main()
