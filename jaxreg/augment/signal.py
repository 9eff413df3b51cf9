"""1-D signal augmentation (e.g. MNIST-1D) on batches ``(N, L)`` or ``(N, L, C)``."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, check_non_negative, float_dtype
from jaxreg.augment._util import check_rank, per_example
from jaxreg.noise import gaussian_input_noise

__all__ = [
    "interpolate",
    "jitter",
    "mnist1d_pipeline",
    "random_scale",
    "random_shift",
    "random_time_stretch",
]

PadMode = Literal["constant", "edge", "wrap"]


def _signals(signals: ArrayLike) -> jax.Array:
    return check_rank(signals, (2, 3), "signals", "(N, L) or (N, L, C)")


def interpolate(signal: jax.Array, positions: jax.Array, mode: PadMode = "constant") -> jax.Array:
    """Linear interpolation of one signal ``(L, ...)`` at fractional ``positions``.

    Outside ``[0, L-1]``: zeros (``"constant"``), the end values (``"edge"``) or
    the periodic continuation (``"wrap"``).

    Example:
      >>> signal = jnp.array([0.0, 10.0, 20.0])
      >>> interpolate(signal, jnp.array([0.5, 1.25, 3.0])).tolist()  # beyond the end: 0
      [5.0, 12.5, 0.0]
      >>> interpolate(signal, jnp.array([3.0]), mode="edge").tolist()
      [20.0]
    """
    length = signal.shape[0]
    if mode == "wrap":
        positions = jnp.mod(positions, length)
    low = jnp.floor(positions)
    frac = (positions - low).reshape(positions.shape + (1,) * (signal.ndim - 1))
    low = low.astype(jnp.int32)

    def take(i):
        if mode == "wrap":
            return signal[jnp.mod(i, length)]
        values = signal[jnp.clip(i, 0, length - 1)]
        if mode == "constant":
            inside = ((i >= 0) & (i < length)).reshape(i.shape + (1,) * (signal.ndim - 1))
            values = jnp.where(inside, values, 0)
        return values

    if mode not in ("constant", "edge", "wrap"):
        raise ValueError(f"mode must be 'constant', 'edge' or 'wrap', got {mode!r}")
    return ((1 - frac) * take(low) + frac * take(low + 1)).astype(signal.dtype)


def random_shift(
    key: jax.Array, signals: ArrayLike, max_shift: ArrayLike, mode: PadMode = "constant"
) -> jax.Array:
    """Shift each signal by an integer in ``[-max_shift, max_shift]``, padding per ``mode``.

    Example:
      >>> x = jnp.arange(1.0, 6.0)[None]
      >>> bool(jnp.all(random_shift(jax.random.key(0), x, 0) == x))
      True
    """
    check_non_negative(max_shift, "max_shift")
    signals = _signals(signals)
    positions = jnp.arange(signals.shape[1], dtype=float_dtype(signals))

    def shift(k, signal):
        offset = jax.random.randint(k, (), -max_shift, max_shift + 1)
        return interpolate(signal, positions - offset, mode)

    return per_example(shift, key, signals)


def random_scale(
    key: jax.Array, signals: ArrayLike, min_scale: ArrayLike = 0.8, max_scale: ArrayLike = 1.2
) -> jax.Array:
    """Multiply each signal by its own amplitude factor, uniform in ``[min_scale, max_scale]``.

    Example:
      >>> x = jnp.ones((4, 40))
      >>> scaled = random_scale(jax.random.key(0), x, 0.8, 1.2)
      >>> bool(jnp.all((scaled >= 0.8) & (scaled <= 1.2))), bool(jnp.all(scaled == scaled[:, :1]))
      (True, True)
    """
    check_non_negative(min_scale, "min_scale")
    signals = _signals(signals)
    factors = jax.random.uniform(key, (signals.shape[0],), minval=min_scale, maxval=max_scale)
    return signals * factors.reshape((-1,) + (1,) * (signals.ndim - 1)).astype(signals.dtype)


def random_time_stretch(
    key: jax.Array, signals: ArrayLike, max_stretch: ArrayLike = 0.1, mode: PadMode = "edge"
) -> jax.Array:
    """Stretch each signal about its centre by a factor uniform in ``[1 - s, 1 + s]``.

    The length stays ``L``: a factor above 1 zooms in (ends cropped), below 1
    zooms out (ends padded per ``mode``). Linear interpolation.

    Example:
      >>> x = jnp.sin(jnp.linspace(0, 3, 40))[None].repeat(4, axis=0)
      >>> bool(jnp.allclose(random_time_stretch(jax.random.key(0), x, 0.0), x, atol=1e-6))
      True
      >>> random_time_stretch(jax.random.key(0), x, 0.2).shape
      (4, 40)
    """
    check_interval(max_stretch, "max_stretch", 0.0, 1.0)
    signals = _signals(signals)
    length = signals.shape[1]
    centre = (length - 1) / 2
    positions = jnp.arange(length, dtype=float_dtype(signals))

    def stretch(k, signal):
        factor = jax.random.uniform(k, (), minval=1 - max_stretch, maxval=1 + max_stretch)
        return interpolate(signal, centre + (positions - centre) / factor, mode)

    return per_example(stretch, key, signals)


def jitter(key: jax.Array, signals: ArrayLike, sigma: ArrayLike = 0.05) -> jax.Array:
    """Add ``N(0, σ²)`` noise to every sample of every signal.

    Example:
      >>> noisy = jitter(jax.random.key(0), jnp.zeros((100, 40)), sigma=0.05)
      >>> round(float(noisy.std()), 2)
      0.05
    """
    return gaussian_input_noise(key, _signals(signals), sigma)


def mnist1d_pipeline(strength: ArrayLike = 1.0):
    """The 1-D augmentation recipe of the jaxreg study, as a ``(key, x) -> x`` transform.

    Per example: random shift ±4 with probability ``min(0.8·strength, 1)``, amplitude
    scale in ``1 ± 0.2·strength``, time stretch ``±0.1·strength``, jitter
    ``σ = 0.05·strength``. ``strength`` may be traced (0 turns it off).

    Example:
      >>> augment = mnist1d_pipeline()
      >>> augment(jax.random.key(0), jnp.zeros((8, 40))).shape
      (8, 40)
    """
    from jaxreg.augment.compose import Stage, compose

    return compose(
        [
            # Strengths above 1.25 shift every example (the probability saturates at 1).
            Stage(lambda k, x: random_shift(k, x, 4), jnp.minimum(0.8 * strength, 1.0)),
            Stage(lambda k, x: random_scale(k, x, 1 - 0.2 * strength, 1 + 0.2 * strength)),
            Stage(lambda k, x: random_time_stretch(k, x, 0.1 * strength)),
            Stage(lambda k, x: jitter(k, x, 0.05 * strength)),
        ]
    )
