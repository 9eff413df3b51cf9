"""Audio augmentation on waveforms ``(N, T)`` and spectrograms ``(N, frames, bins)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_non_negative, float_dtype
from jaxreg.augment._util import check_rank, per_example
from jaxreg.augment.signal import interpolate

__all__ = [
    "add_background_noise",
    "frequency_mask",
    "pitch_shift",
    "shift_pitch",
    "spectrogram",
    "time_mask",
    "time_stretch",
]


def _waves(waves: ArrayLike) -> jax.Array:
    return check_rank(waves, (2,), "waves", "(N, T)")


def _resample(wave: jax.Array, rate: jax.Array) -> jax.Array:
    """Play ``wave`` at ``rate`` × speed (linear interpolation), zero-padded to length ``T``."""
    positions = jnp.arange(wave.shape[0], dtype=float_dtype(wave))
    return interpolate(wave, positions * rate, "constant")


def time_stretch(
    key: jax.Array, waves: ArrayLike, min_rate: ArrayLike = 0.9, max_rate: ArrayLike = 1.1
) -> jax.Array:
    """Speed change by resampling: each wave plays at a rate uniform in ``[min_rate, max_rate]``.

    Resampling changes duration and pitch together (rate 1.1 is 10% faster and
    higher); the output keeps length ``T`` (cropped, or zero-padded when slower).

    Example:
      >>> waves = jax.random.normal(jax.random.key(0), (2, 1000))
      >>> bool(jnp.allclose(time_stretch(jax.random.key(1), waves, 1.0, 1.0), waves, atol=1e-5))
      True
      >>> time_stretch(jax.random.key(1), waves, 0.8, 1.2).shape
      (2, 1000)
    """
    check_non_negative(min_rate, "min_rate")

    def stretch(k, wave):
        return _resample(wave, jax.random.uniform(k, (), minval=min_rate, maxval=max_rate))

    return per_example(stretch, key, _waves(waves))


def _stft(wave: jax.Array, n_fft: int, hop: int) -> jax.Array:
    padded = jnp.pad(wave, (n_fft // 2, n_fft // 2 + n_fft))
    num_frames = 1 + (wave.shape[0] + n_fft // 2) // hop
    index = jnp.arange(num_frames)[:, None] * hop + jnp.arange(n_fft)[None, :]
    return jnp.fft.rfft(padded[index] * _hann(n_fft, wave.dtype), axis=-1)


def _hann(n: int, dtype) -> jax.Array:
    return jnp.hanning(n + 1)[:-1].astype(dtype)  # periodic: overlap-adds to a constant


def _istft(frames: jax.Array, n_fft: int, hop: int, dtype) -> jax.Array:
    window = _hann(n_fft, dtype)
    time = jnp.fft.irfft(frames, n=n_fft, axis=-1).astype(dtype) * window
    index = jnp.arange(frames.shape[0])[:, None] * hop + jnp.arange(n_fft)[None, :]
    length = (frames.shape[0] - 1) * hop + n_fft
    out = jnp.zeros(length, dtype).at[index].add(time)
    norm = jnp.zeros(length, dtype).at[index].add(jnp.broadcast_to(window**2, time.shape))
    return (out / jnp.maximum(norm, 1e-8))[n_fft // 2 :]


MAX_SEMITONES = 12.0


def shift_pitch(
    wave: ArrayLike, semitones: ArrayLike, *, n_fft: int = 512, hop: int = 128
) -> jax.Array:
    """Shift the pitch of one wave ``(T,)`` by ``semitones``, keeping its duration.

    The librosa recipe: a phase-vocoder time stretch by ``f = 2^(semitones/12)``
    (Flanagan & Golden, 1966; magnitudes interpolated between frames, phases
    advanced by the measured per-hop advance), then resampling by ``f`` back to
    ``T`` samples, which moves every frequency by ``f``. Deterministic;
    ``semitones`` may be traced and is clipped to ``±12``.

    Example:
      >>> t = jnp.arange(4096.0)
      >>> wave = jnp.sin(2 * jnp.pi * 0.05 * t)  # 0.05 cycles per sample
      >>> up = shift_pitch(wave, 12.0, n_fft=256, hop=64)  # one octave up: 0.1
      >>> spectrum = jnp.abs(jnp.fft.rfft(up[512:-512]))
      >>> round(float(jnp.argmax(spectrum) / (len(t) - 1024)), 2)
      0.1
    """
    wave = jnp.asarray(wave)
    if n_fft % hop or n_fft // hop < 2:
        raise ValueError(f"n_fft must be a multiple (>= 2) of hop, got n_fft={n_fft}, hop={hop}")
    semitones = jnp.clip(jnp.asarray(semitones, float_dtype(wave)), -MAX_SEMITONES, MAX_SEMITONES)
    factor = 2.0 ** (semitones / 12)
    spectrum = _stft(wave, n_fft, hop)
    num_frames = spectrum.shape[0]
    magnitude, phase = jnp.abs(spectrum), jnp.angle(spectrum)
    advance = jnp.diff(phase, axis=0, append=phase[-1:])
    # Enough output frames for the longest stretch (factor 2), static under jit.
    steps = jnp.arange(int(num_frames * 2 ** (MAX_SEMITONES / 12)) + 2) / factor
    low = jnp.clip(jnp.floor(steps).astype(jnp.int32), 0, num_frames - 1)
    high = jnp.clip(low + 1, 0, num_frames - 1)
    frac = (steps - jnp.floor(steps))[:, None]
    stretched_magnitude = (1 - frac) * magnitude[low] + frac * magnitude[high]
    stretched_magnitude = jnp.where((steps < num_frames)[:, None], stretched_magnitude, 0.0)
    new_phase = phase[0] + jnp.concatenate(
        [jnp.zeros_like(phase[:1]), jnp.cumsum(advance[low[:-1]], axis=0)]
    )
    stretched = _istft(stretched_magnitude * jnp.exp(1j * new_phase), n_fft, hop, wave.dtype)
    return interpolate(stretched, jnp.arange(wave.shape[0], dtype=float_dtype(wave)) * factor)


def pitch_shift(
    key: jax.Array,
    waves: ArrayLike,
    max_semitones: ArrayLike = 2.0,
    *,
    n_fft: int = 512,
    hop: int = 128,
) -> jax.Array:
    """Shift each wave's pitch by its own amount, uniform in ``±max_semitones``.

    Per example :func:`shift_pitch` with its own key.

    Duration is unchanged (unlike :func:`time_stretch`).

    Example:
      >>> waves = jnp.sin(2 * jnp.pi * 0.05 * jnp.arange(1024.0))[None].repeat(2, axis=0)
      >>> shifted = pitch_shift(jax.random.key(0), waves, max_semitones=2.0, n_fft=128, hop=32)
      >>> shifted.shape
      (2, 1024)
    """
    check_non_negative(max_semitones, "max_semitones")

    def shift(k, wave):
        semitones = jax.random.uniform(k, (), minval=-max_semitones, maxval=max_semitones)
        return shift_pitch(wave, semitones, n_fft=n_fft, hop=hop)

    return per_example(shift, key, _waves(waves))


def add_background_noise(
    key: jax.Array, waves: ArrayLike, snr_db: ArrayLike, noise: ArrayLike | None = None
) -> jax.Array:
    """Mix noise into each wave at exactly ``snr_db`` decibels (``10·log10(P_signal/P_noise)``).

    Args:
      key: PRNG key (picks a noise clip per example, or draws white noise).
      waves: ``(N, T)``.
      snr_db: target signal-to-noise ratio in dB (may be traced).
      noise: optional bank of background clips ``(M, T)``; white Gaussian if None.

    Example:
      >>> waves = jnp.sin(jnp.linspace(0, 200, 4000))[None].repeat(2, axis=0)
      >>> noisy = add_background_noise(jax.random.key(0), waves, snr_db=10.0)
      >>> noise_power = jnp.mean((noisy - waves) ** 2, axis=1)
      >>> (10 * jnp.log10(jnp.mean(waves**2, axis=1) / noise_power)).round(3).tolist()
      [10.0, 10.0]
    """
    waves = _waves(waves)
    pick_key, draw_key = jax.random.split(key)
    if noise is None:
        background = jax.random.normal(draw_key, waves.shape, waves.dtype)
    else:
        bank = check_rank(noise, (2,), "noise", "(M, T)")
        if bank.shape[1] != waves.shape[1]:
            raise ValueError(f"noise clips must have length {waves.shape[1]}, got {bank.shape[1]}")
        background = bank[jax.random.randint(pick_key, (waves.shape[0],), 0, bank.shape[0])]
    signal_power = jnp.mean(waves**2, axis=1, keepdims=True)
    noise_power = jnp.maximum(jnp.mean(background**2, axis=1, keepdims=True), 1e-20)
    scale = jnp.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10)))
    return waves + (scale * background).astype(waves.dtype)


def spectrogram(waves: ArrayLike, frame_length: int = 256, hop: int = 128) -> jax.Array:
    """Magnitude STFT with a Hann window: ``(N, frames, frame_length // 2 + 1)``.

    Example:
      >>> waves = jnp.sin(2 * jnp.pi * 0.125 * jnp.arange(1024.0))[None]  # bin 0.125·256 = 32
      >>> spec = spectrogram(waves, frame_length=256, hop=128)
      >>> spec.shape, int(spec[0].mean(axis=0).argmax())
      ((1, 7, 129), 32)
    """
    waves = _waves(waves)
    if waves.shape[1] < frame_length:
        raise ValueError(f"waves are shorter ({waves.shape[1]}) than frame_length={frame_length}")
    num_frames = 1 + (waves.shape[1] - frame_length) // hop
    index = jnp.arange(num_frames)[:, None] * hop + jnp.arange(frame_length)[None, :]
    window = jnp.hanning(frame_length).astype(waves.dtype)
    return jnp.abs(jnp.fft.rfft(waves[:, index] * window, axis=-1))


def _mask_axis(
    key: jax.Array, specs: jax.Array, max_width: ArrayLike, num_masks: int, axis: int, fill: float
) -> jax.Array:
    size = specs.shape[axis]

    def mask_one(k, spec):
        def body(i, spec):
            wk, sk = jax.random.split(jax.random.fold_in(k, i))
            width = jax.random.randint(wk, (), 0, max_width + 1)
            start = jax.random.randint(sk, (), 0, jnp.maximum(size - width, 0) + 1)
            positions = jnp.arange(size)
            hit = (positions >= start) & (positions < start + width)
            shape = [1, 1]
            shape[axis - 1] = size
            return jnp.where(hit.reshape(shape), fill, spec)

        return jax.lax.fori_loop(0, num_masks, body, spec)

    return per_example(mask_one, key, specs)


def time_mask(
    key: jax.Array, specs: ArrayLike, max_width: ArrayLike, num_masks: int = 1, fill: float = 0.0
) -> jax.Array:
    """SpecAugment time masking: ``num_masks`` bands of up to ``max_width`` frames → ``fill``.

    Example:
      >>> specs = jnp.ones((2, 20, 8))  # (N, frames, bins)
      >>> masked = time_mask(jax.random.key(0), specs, max_width=5, num_masks=1)
      >>> masked_frames = jnp.all(masked == 0, axis=2).sum(axis=1)
      >>> bool(jnp.all(masked_frames <= 5))
      True
    """
    specs = check_rank(specs, (3,), "specs", "(N, frames, bins)")
    check_non_negative(max_width, "max_width")
    return _mask_axis(key, specs, max_width, num_masks, 1, fill)


def frequency_mask(
    key: jax.Array, specs: ArrayLike, max_width: ArrayLike, num_masks: int = 1, fill: float = 0.0
) -> jax.Array:
    """SpecAugment frequency masking: bands of up to ``max_width`` bins set to ``fill``.

    Example:
      >>> specs = jnp.ones((2, 10, 16))  # (N, frames, bins)
      >>> masked = frequency_mask(jax.random.key(0), specs, max_width=4)
      >>> masked_bins = jnp.all(masked == 0, axis=1)  # (N, bins): a bin is masked in every frame
      >>> at_most_4 = bool(jnp.all(masked_bins.sum(axis=1) <= 4))
      >>> at_most_4, bool(jnp.all((masked == 0) == masked_bins[:, None]))
      (True, True)
    """
    specs = check_rank(specs, (3,), "specs", "(N, frames, bins)")
    check_non_negative(max_width, "max_width")
    return _mask_axis(key, specs, max_width, num_masks, 2, fill)
