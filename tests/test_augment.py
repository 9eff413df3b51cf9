"""Augmentation properties: identities, involutions, conservation, per-example keys, vocab."""

import re

import chex
import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.augment import Stage, audio, compose, image, mix, signal, text

# NumPy, not JAX, at import: a JAX computation during collection starts XLA's threads,
# and tools/mutation.py forks test processes from a collected server (they deadlock).
IMAGES = np.random.default_rng(0).random((16, 12, 12, 3), dtype=np.float32)
SIGNALS = np.random.default_rng(1).standard_normal((16, 40), dtype=np.float32)


def _distinct_examples(out, reference):
    """Number of distinct per-example transformations of identical inputs."""
    changes = np.asarray(out - reference).reshape(out.shape[0], -1).round(5)
    return len({row.tobytes() for row in changes})


def test_identities_at_zero_strength():
    key = jax.random.key(2)

    def at_zero():
        return (
            image.random_rotation(key, IMAGES, 0.0),
            image.color_jitter(key, IMAGES),
            image.random_crop_and_resize(key, IMAGES, (1.0, 1.0), (1.0, 1.0)),
            image.random_pad_and_crop(key, IMAGES, 0),
            image.gaussian_pixel_noise(key, IMAGES, 0.0),
            signal.random_shift(key, SIGNALS, 0),
            signal.random_time_stretch(key, SIGNALS, 0.0),
            signal.jitter(key, SIGNALS, 0.0),
            signal.random_scale(key, SIGNALS, 1.0, 1.0),
            mix.cutout(key, IMAGES, 0),
        )

    # One jitted program (op-by-op dispatch of these ops costs ~20 s on CPU); eager equals
    # jit for each op in tests/test_matrix.py.
    rotated, colored, cropped, padded, noisy, shifted, stretched, jittered, scaled, cut = jax.jit(
        at_zero
    )()
    np.testing.assert_allclose(rotated, IMAGES, atol=1e-6)
    np.testing.assert_allclose(colored, IMAGES, atol=1e-5)
    np.testing.assert_allclose(cropped, IMAGES, atol=1e-5)
    np.testing.assert_array_equal(padded, IMAGES)
    np.testing.assert_array_equal(noisy, IMAGES)
    np.testing.assert_array_equal(shifted, SIGNALS)
    np.testing.assert_allclose(stretched, SIGNALS, atol=1e-6)
    np.testing.assert_array_equal(jittered, SIGNALS)
    np.testing.assert_allclose(scaled, SIGNALS)
    np.testing.assert_array_equal(cut, IMAGES)


def test_flipping_twice_is_the_identity_and_matches_dm_pix():
    key = jax.random.key(3)
    once = image.random_flip_left_right(key, IMAGES, 1.0)
    np.testing.assert_array_equal(once, jax.vmap(pix.flip_left_right)(IMAGES))
    np.testing.assert_array_equal(image.random_flip_left_right(key, once, 1.0), IMAGES)
    up = image.random_flip_up_down(key, IMAGES, 1.0)
    np.testing.assert_array_equal(image.random_flip_up_down(key, up, 1.0), IMAGES)


def test_rotation_leaves_a_radially_symmetric_image_unchanged_and_turns_others():
    grid = np.arange(21) - 10.0
    blob = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 20.0)[None, :, :, None]
    blobs = jnp.asarray(np.repeat(blob, 8, axis=0), jnp.float32)
    np.testing.assert_allclose(
        image.random_rotation(jax.random.key(0), blobs, 180.0), blobs, atol=0.02
    )
    bar = np.zeros((1, 21, 21, 1), np.float32)
    bar[0, 10, 2:19] = 1.0  # a horizontal bar turns away from the horizontal
    turned = image.random_rotation(jax.random.key(0), jnp.asarray(bar), 90.0)
    assert float(jnp.abs(turned - bar).sum()) > 1.0


def _orientation_degrees(images):
    """Principal-axis angle of each single-channel image from its second moments."""
    height, width = images.shape[1:3]
    ys, xs = np.mgrid[:height, :width].astype(np.float64)
    angles = []
    for im in np.asarray(images[..., 0], np.float64):
        mass = im.sum()
        cy, cx = (im * ys).sum() / mass, (im * xs).sum() / mass
        myy = (im * (ys - cy) ** 2).sum() / mass
        mxx = (im * (xs - cx) ** 2).sum() / mass
        mxy = (im * (ys - cy) * (xs - cx)).sum() / mass
        angles.append(np.degrees(0.5 * np.arctan2(2 * mxy, mxx - myy)))
    return np.abs(np.asarray(angles))


def test_rotation_angles_stay_within_max_degrees_and_spread_over_it():
    bar = np.zeros((64, 41, 41, 1), np.float32)
    bar[:, 20, 8:33] = 1.0  # horizontal bar through the centre
    turned = image.random_rotation(jax.random.key(3), jnp.asarray(bar), 30.0)
    angles = _orientation_degrees(turned)
    assert angles.max() <= 31.0  # degrees, not radians: 30 rad would turn anywhere
    assert angles.max() > 20.0 and np.median(angles) > 5.0
    np.testing.assert_allclose(np.asarray(turned).sum((1, 2, 3)), 25.0, rtol=0.05)


def test_pad_and_crop_outputs_are_windows_of_the_padded_image():
    images = jax.random.uniform(jax.random.key(4), (12, 8, 8, 2))
    out = np.asarray(image.random_pad_and_crop(jax.random.key(5), images, padding=2))
    padded = np.pad(np.asarray(images), [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets = []
    for i in range(len(out)):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(out[i], padded[i, dy : dy + 8, dx : dx + 8])
        ]
        assert found, f"example {i} is not a window of its padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 3


def test_crop_and_resize_is_the_identity_at_full_scale_and_halves_a_ramp_at_quarter_area():
    images = jax.random.uniform(jax.random.key(6), (4, 16, 16, 1))
    whole = image.random_crop_and_resize(jax.random.key(7), images, scale=(1.0, 1.0), ratio=(1, 1))
    np.testing.assert_allclose(whole, images, atol=1e-5)
    ramp = jnp.broadcast_to(jnp.arange(32.0)[None, None, :, None], (6, 32, 32, 1))
    cropped = np.asarray(
        image.random_crop_and_resize(jax.random.key(8), ramp, scale=(0.25, 0.25), ratio=(1, 1))
    )
    # A 16×16 box resized to 32×32: a linear ramp keeps its shape with half the slope.
    slopes = np.diff(cropped[:, 8:24, 4:28, 0], axis=2)
    np.testing.assert_allclose(slopes, 0.5, atol=1e-4)


def test_color_jitter_brightness_and_contrast_follow_their_closed_forms():
    images = jax.random.uniform(jax.random.key(9), (32, 6, 6, 1))
    bright = np.asarray(image.color_jitter(jax.random.key(10), images, brightness=0.2))
    shift = (bright - np.asarray(images)).reshape(32, -1)
    np.testing.assert_allclose(shift, shift[:, :1] * np.ones_like(shift), atol=1e-6)
    assert np.abs(shift[:, 0]).max() <= 0.2 and np.ptp(shift[:, 0]) > 0.1
    contrast = np.asarray(image.color_jitter(jax.random.key(11), images, contrast=0.5))
    x = np.asarray(images).reshape(32, -1)
    y = contrast.reshape(32, -1)
    mean = x.mean(1, keepdims=True)
    factors = ((y - mean) * (x - mean)).sum(1) / ((x - mean) ** 2).sum(1)
    np.testing.assert_allclose(y, mean + factors[:, None] * (x - mean), atol=1e-5)
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6 and np.ptp(factors) > 0.3


@pytest.mark.parametrize(
    "transform",
    [
        lambda k, x: image.random_rotation(k, x, 30.0),
        lambda k, x: image.random_crop_and_resize(k, x),
        lambda k, x: image.random_pad_and_crop(k, x, 3),
        lambda k, x: image.color_jitter(k, x, 0.2, 0.2, 0.2, 0.05),
        lambda k, x: mix.cutout(k, x, 4),
    ],
)
def test_image_ops_use_one_key_per_example_and_are_reproducible(transform):
    same = jnp.broadcast_to(IMAGES[:1], IMAGES.shape)
    out = transform(jax.random.key(5), same)
    assert out.shape == same.shape
    assert _distinct_examples(out, same) >= 8
    np.testing.assert_array_equal(out, transform(jax.random.key(5), same))
    assert not np.array_equal(out, transform(jax.random.key(6), same))


@pytest.mark.parametrize(
    "transform",
    [
        lambda k, x: signal.random_shift(k, x, 5),
        lambda k, x: signal.random_scale(k, x),
        lambda k, x: signal.random_time_stretch(k, x, 0.2),
        lambda k, x: signal.jitter(k, x, 0.1),
    ],
)
def test_signal_ops_use_one_key_per_example(transform):
    same = jnp.broadcast_to(SIGNALS[:1], SIGNALS.shape)
    out = transform(jax.random.key(7), same)
    assert _distinct_examples(out, same) >= 5
    np.testing.assert_array_equal(out, transform(jax.random.key(7), same))


def test_shift_matches_numpy_roll_with_zero_fill():
    x = jnp.arange(1.0, 11.0)[None]
    out = np.asarray(signal.random_shift(jax.random.key(0), x, 4))[0]
    for s in range(-4, 5):
        expected = np.roll(np.arange(1.0, 11.0), s)
        if s > 0:
            expected[:s] = 0
        elif s < 0:
            expected[s:] = 0
        if np.array_equal(out, expected):
            break
    else:
        pytest.fail(f"{out} is not a zero-filled shift")
    wrapped = np.asarray(signal.random_shift(jax.random.key(0), x, 4, mode="wrap"))[0]
    assert sorted(wrapped) == list(np.arange(1.0, 11.0))


def test_mixup_conserves_label_mass_and_mixes_inputs_consistently():
    y = jnp.array([0, 1, 2, 3, 1, 1, 0, 2])
    x = jnp.eye(8)
    mixed_x, mixed_y = mix.mixup(jax.random.key(0), x, y, 0.4, num_classes=4)
    np.testing.assert_allclose(mixed_y.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed_y.sum(0), np.bincount(np.asarray(y), minlength=4), rtol=1e-5)
    # With one-hot inputs, mixed inputs reveal (λ, π): labels must follow the same mix.
    np.testing.assert_allclose(mixed_x @ jax.nn.one_hot(y, 4), mixed_y, rtol=1e-5, atol=1e-6)
    _, per_example = mix.mixup(jax.random.key(0), x, y, 0.4, num_classes=4, per_example=True)
    np.testing.assert_allclose(per_example.sum(1), 1.0, rtol=1e-6)


def test_cutmix_label_weights_equal_pasted_area():
    images = jnp.broadcast_to(jnp.arange(8.0)[:, None, None, None], (8, 10, 10, 1))
    mixed, soft = mix.cutmix(jax.random.key(1), images, jnp.arange(8), 1.0, num_classes=8)
    own_fraction = np.mean(np.asarray(mixed) == np.asarray(images), axis=(1, 2, 3))
    np.testing.assert_allclose(soft[np.arange(8), np.arange(8)], own_fraction, atol=1e-6)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)


def test_cutout_erases_a_square_of_the_requested_size_inside_the_image():
    out = mix.cutout(jax.random.key(0), jnp.ones((64, 20, 20, 1)), 4)
    erased = np.asarray((out == 0).sum((1, 2, 3)))
    assert erased.max() == 16 and erased.min() >= 4  # clipped at borders, never bigger


VOCAB = 30
TOKENS = np.random.default_rng(0).integers(1, VOCAB, size=(32, 12)).astype(np.int32)
LENGTHS = np.random.default_rng(1).integers(0, 13, size=32).astype(np.int32)
TOKENS = np.where(np.arange(12)[None] < LENGTHS[:, None], TOKENS, 0)
SYNONYMS = np.asarray(
    np.where(
        np.random.default_rng(2).random((VOCAB, 3)) < 0.5,
        np.random.default_rng(3).integers(1, VOCAB, (VOCAB, 3)),
        -1,
    ),
    np.int32,
)


def _check_text(tokens, lengths):
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    assert tokens.shape == TOKENS.shape
    assert np.all((tokens >= 0) & (tokens < VOCAB))
    assert np.all((lengths >= 0) & (lengths <= TOKENS.shape[1]))
    positions = np.arange(tokens.shape[1])[None]
    assert np.all(tokens[positions >= lengths[:, None]] == 0)


@pytest.mark.parametrize(
    "op",
    [
        lambda k: text.random_deletion(k, TOKENS, LENGTHS, 0.3),
        lambda k: text.random_swap(k, TOKENS, LENGTHS, 3),
        lambda k: text.random_insertion(k, TOKENS, LENGTHS, 4, vocab_size=VOCAB),
        lambda k: text.random_insertion(k, TOKENS, LENGTHS, 4, vocab_size=VOCAB, synonyms=SYNONYMS),
        lambda k: text.synonym_replacement(k, TOKENS, LENGTHS, SYNONYMS, 0.5),
    ],
)
def test_text_ops_keep_ids_in_vocab_and_lengths_in_padding(op):
    op = jax.jit(op)
    for seed in range(5):
        _check_text(*op(jax.random.key(seed)))
    a, b = op(jax.random.key(0)), op(jax.random.key(0))
    chex.assert_trees_all_equal(a, b)


def test_text_op_semantics():
    _deleted, new_len = text.random_deletion(jax.random.key(0), TOKENS, LENGTHS, 1.0)
    np.testing.assert_array_equal(new_len, np.minimum(LENGTHS, 1))  # one token survives
    swapped, same_len = text.random_swap(jax.random.key(0), TOKENS, LENGTHS, 5)
    np.testing.assert_array_equal(np.sort(swapped, 1), np.sort(TOKENS, 1))  # a permutation
    np.testing.assert_array_equal(same_len, LENGTHS)
    _inserted, ins_len = text.random_insertion(
        jax.random.key(0), TOKENS, LENGTHS, 3, vocab_size=VOCAB
    )
    np.testing.assert_array_equal(ins_len, np.minimum(LENGTHS + 3, 12))
    replaced, _ = text.synonym_replacement(jax.random.key(0), TOKENS, LENGTHS, SYNONYMS, 1.0)
    for row_in, row_out, n in zip(
        np.asarray(TOKENS), np.asarray(replaced), np.asarray(LENGTHS), strict=True
    ):
        for old, new in zip(row_in[:n], row_out[:n], strict=True):
            candidates = [c for c in np.asarray(SYNONYMS)[old] if c >= 0]
            assert (new in candidates) if candidates else new == old


def test_host_transform_hook_runs_inside_jit():
    def reverse(tokens, lengths):  # a stand-in for translate-and-back
        out = tokens.copy()
        for i, n in enumerate(lengths):
            out[i, :n] = tokens[i, :n][::-1]
        return out, lengths

    stage = text.host_transform(reverse)
    out, _lengths = jax.jit(stage)(jax.random.key(0), (TOKENS, LENGTHS))
    np.testing.assert_array_equal(out, reverse(np.asarray(TOKENS), np.asarray(LENGTHS))[0])


def test_compose_applies_each_stage_per_example_with_its_probability():
    pipeline = compose([Stage(lambda k, x: x + 1.0, 0.5), Stage(lambda k, x: x * 10.0, 1.0)])
    out = np.asarray(pipeline(jax.random.key(0), jnp.zeros((4000, 2))))
    took_first = out[:, 0] == 10.0
    assert np.all((out[:, 0] == 0.0) | took_first)
    assert abs(took_first.mean() - 0.5) < 5 * np.sqrt(0.25 / 4000)
    np.testing.assert_array_equal(out, pipeline(jax.random.key(0), jnp.zeros((4000, 2))))
    text_pipeline = compose([(lambda k, b: text.random_swap(k, *b), 0.5)])
    _check_text(*jax.jit(text_pipeline)(jax.random.key(0), (TOKENS, LENGTHS)))


def test_traced_strengths_compile_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def augment(strength):
        return image.random_rotation(jax.random.key(0), IMAGES, strength)

    chex.clear_trace_counter()
    out = jax.vmap(augment)(jnp.array([0.0, 10.0, 45.0]))
    np.testing.assert_allclose(out[0], IMAGES, atol=1e-6)


def test_audio_pitch_shift_moves_a_sine_and_keeps_duration():
    rate = 8000
    t = np.arange(rate) / rate
    wave = jnp.asarray(np.sin(2 * np.pi * 440 * t), jnp.float32)
    for semitones in (-3.0, 0.0, 4.0, 12.0):
        out = np.asarray(audio.shift_pitch(wave, semitones))
        assert out.shape == wave.shape
        peak = np.abs(np.fft.rfft(out)).argmax() * rate / len(out)
        assert peak == pytest.approx(440 * 2 ** (semitones / 12), abs=2.0)
        assert 0.5 < np.sqrt(np.mean(out**2)) / np.sqrt(0.5) < 1.1
    np.testing.assert_allclose(audio.shift_pitch(wave, 0.0), wave, atol=1e-4)


def test_audio_time_stretch_changes_speed():
    rate = 8000
    wave = jnp.asarray(np.sin(2 * np.pi * 500 * np.arange(rate) / rate), jnp.float32)[None]
    out = np.asarray(audio.time_stretch(jax.random.key(0), wave, 1.2, 1.2))[0]
    valid = out[: int(rate / 1.2) - 10]
    peak = np.abs(np.fft.rfft(valid)).argmax() * rate / len(valid)
    assert peak == pytest.approx(600, abs=3)


def test_background_noise_hits_the_target_snr_exactly():
    waves = jax.random.normal(jax.random.key(0), (6, 1000))
    bank = jax.random.uniform(jax.random.key(1), (3, 1000), minval=-1, maxval=1)
    for noise in (None, bank):
        noisy = audio.add_background_noise(jax.random.key(2), waves, 7.5, noise)
        added = noisy - waves
        snr = 10 * np.log10(np.mean(np.asarray(waves) ** 2, 1) / np.mean(np.asarray(added) ** 2, 1))
        np.testing.assert_allclose(snr, 7.5, atol=1e-3)


def test_spectrogram_masks():
    rate = 8000
    wave = jnp.asarray(np.sin(2 * np.pi * 1000 * np.arange(rate) / rate), jnp.float32)[None]
    spec = audio.spectrogram(wave, 256, 128)
    assert int(spec[0].mean(0).argmax()) == 32  # 1000 Hz / (8000 / 256)
    masked = audio.time_mask(jax.random.key(0), jnp.ones((50, 20, 30)), 5)
    per_example = np.asarray((masked == 0).all(axis=2).sum(1))
    assert per_example.max() <= 5 and len(set(per_example.tolist())) > 1
    masked = audio.frequency_mask(jax.random.key(0), jnp.ones((500, 20, 30)), 7, num_masks=2)
    bins = np.asarray(masked == 0)
    assert (bins == bins[:, :1, :]).all()  # whole bins, every frame
    widths = bins[:, 0, :].sum(1)
    assert widths.max() <= 14
    # Two widths uniform on {0..7} at random starts: about 6.3 bins masked on average
    # (overlaps subtract); a no-op or a single mask cannot reach this.
    assert 5.0 < widths.mean() < 7.0 and widths.max() > 7
    for row in bins[:, 0, :]:  # at most two contiguous bands
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])) == 1)
        assert len(edges) <= 2


def test_bad_input():
    with pytest.raises(ValueError, match="images"):
        image.random_rotation(jax.random.key(0), jnp.ones((8, 8, 3)), 10.0)
    with pytest.raises(ValueError, match="max_degrees"):
        image.random_rotation(jax.random.key(0), IMAGES, -1.0)
    with pytest.raises(ValueError, match="RGB"):
        image.color_jitter(jax.random.key(0), jnp.ones((2, 4, 4, 1)), saturation=0.1)
    with pytest.raises(ValueError, match="signals"):
        signal.jitter(jax.random.key(0), jnp.ones(5), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        signal.jitter(jax.random.key(0), SIGNALS, -0.1)
    with pytest.raises(ValueError, match="num_classes"):
        mix.mixup(jax.random.key(0), SIGNALS, jnp.zeros(16, int))
    with pytest.raises(ValueError, match="synonyms"):
        text.synonym_replacement(jax.random.key(0), TOKENS, LENGTHS, SYNONYMS + VOCAB, 0.1)
    with pytest.raises(ValueError, match="lengths"):
        text.random_swap(jax.random.key(0), TOKENS, LENGTHS + 20)
    with pytest.raises(ValueError, match="probability"):
        compose([Stage(lambda k, x: x, 1.5)])


def test_mnist1d_pipeline_shifts_scales_and_jitters_with_its_documented_ranges():
    """A unit impulse at position 20 through the study's recipe (strength 1): the shift stage
    moves the peak by an integer in [-4, 4] for a Bernoulli(0.8) subset (so the peak stays put
    with probability 0.2 + 0.8/9); the scale stage spreads its height uniformly over
    [0.8, 1.2] (sd 0.4/√12); stretch (±10% about the centre) and jitter (σ 0.05) barely move
    either. Removing or narrowing any stage's range changes these statistics."""
    from jaxreg.augment import signal

    n = 4000
    impulse = jnp.zeros((n, 40)).at[:, 20].set(1.0)
    out = np.asarray(signal.mnist1d_pipeline(1.0)(jax.random.key(0), impulse))
    position = out.argmax(axis=1)
    assert set(np.unique(position)) == set(range(16, 25))
    assert abs(np.mean(position == 20) - (0.2 + 0.8 / 9)) < 0.03
    assert abs(position.mean() - 20) < 0.15
    height = out.max(axis=1)[position == 20]  # unshifted: stretch moves its sample < 0.06
    assert height.min() > 0.55 and height.max() < 1.45  # [0.8, 1.2] × interpolation + jitter
    assert abs(height.std() - 0.4 / np.sqrt(12)) < 0.02
    residual = np.delete(out, [15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25], axis=1)
    assert abs(residual.std() - 0.05) < 0.01  # the jitter, far from the peak
    off = np.asarray(signal.mnist1d_pipeline(0.0)(jax.random.key(0), impulse))
    np.testing.assert_allclose(off, impulse, atol=1e-6)  # strength 0 turns every stage off


_WAVES = np.zeros((2, 300), np.float32)


def _k():
    return jax.random.key(0)


_SPECS = np.ones((2, 5, 6), np.float32)
_TOK, _LEN = np.ones((2, 4), np.int32), np.array([4, 2], np.int32)
_EXACT_ERRORS = {
    "images rank": (
        lambda: image.random_flip_left_right(_k(), np.ones((8, 8, 3))),
        "images must be a batch shaped (N, H, W, C), got shape (8, 8, 3)",
    ),
    "images empty": (
        lambda: image.random_flip_up_down(_k(), np.ones((0, 8, 8, 3))),
        "images is an empty batch",
    ),
    "flip lr probability": (
        lambda: image.random_flip_left_right(_k(), IMAGES, 1.5),
        "probability must lie in [0.0, 1.0], got 1.5",
    ),
    "flip ud probability": (
        lambda: image.random_flip_up_down(_k(), IMAGES, -0.5),
        "probability must lie in [0.0, 1.0], got -0.5",
    ),
    "rotation": (
        lambda: image.random_rotation(_k(), IMAGES, -1.0),
        "max_degrees must be non-negative, got -1.0",
    ),
    "crop scale low": (
        lambda: image.random_crop_and_resize(_k(), IMAGES, scale=(-0.5, 1.0)),
        "scale must lie in [0.0, 1.0], got -0.5",
    ),
    "crop scale high": (
        lambda: image.random_crop_and_resize(_k(), IMAGES, scale=(0.5, 1.5)),
        "scale must lie in [0.0, 1.0], got 1.5",
    ),
    "padding": (
        lambda: image.random_pad_and_crop(_k(), IMAGES, -1),
        "padding must be a non-negative int, got -1",
    ),
    "padding float": (
        lambda: image.random_pad_and_crop(_k(), IMAGES, 2.0),
        "padding must be a non-negative int, got 2.0",
    ),
    "brightness": (
        lambda: image.color_jitter(_k(), IMAGES, brightness=-0.1),
        "brightness must be non-negative, got -0.1",
    ),
    "contrast": (
        lambda: image.color_jitter(_k(), IMAGES, contrast=-0.2),
        "contrast must be non-negative, got -0.2",
    ),
    "saturation": (
        lambda: image.color_jitter(_k(), IMAGES, saturation=-0.3),
        "saturation must be non-negative, got -0.3",
    ),
    "hue": (
        lambda: image.color_jitter(_k(), IMAGES, hue=-0.4),
        "hue must be non-negative, got -0.4",
    ),
    "grey hue": (
        lambda: image.color_jitter(_k(), np.ones((2, 4, 4, 1)), hue=0.1),
        "saturation and hue need RGB images, got 1 channels",
    ),
    "waves rank": (
        lambda: audio.spectrogram(np.zeros(300)),
        "waves must be a batch shaped (N, T), got shape (300,)",
    ),
    "waves short": (
        lambda: audio.spectrogram(_WAVES, 301),
        "waves are shorter (300) than frame_length=301",
    ),
    "min_rate": (
        lambda: audio.time_stretch(_k(), _WAVES, -0.1, 1.0),
        "min_rate must be non-negative, got -0.1",
    ),
    "n_fft multiple": (
        lambda: audio.shift_pitch(np.zeros(300), 1.0, n_fft=100, hop=30),
        "n_fft must be a multiple (>= 2) of hop, got n_fft=100, hop=30",
    ),
    "n_fft twice hop": (
        lambda: audio.shift_pitch(np.zeros(300), 1.0, n_fft=64, hop=64),
        "n_fft must be a multiple (>= 2) of hop, got n_fft=64, hop=64",
    ),
    "max_semitones": (
        lambda: audio.pitch_shift(_k(), _WAVES, -1.0),
        "max_semitones must be non-negative, got -1.0",
    ),
    "noise rank": (
        lambda: audio.add_background_noise(_k(), _WAVES, 5.0, np.zeros(300)),
        "noise must be a batch shaped (M, T), got shape (300,)",
    ),
    "noise length": (
        lambda: audio.add_background_noise(_k(), _WAVES, 5.0, np.zeros((3, 299))),
        "noise clips must have length 300, got 299",
    ),
    "specs rank": (
        lambda: audio.time_mask(_k(), _WAVES, 2),
        "specs must be a batch shaped (N, frames, bins), got shape (2, 300)",
    ),
    "time mask width": (
        lambda: audio.time_mask(_k(), _SPECS, -2),
        "max_width must be non-negative, got -2",
    ),
    "frequency specs rank": (
        lambda: audio.frequency_mask(_k(), _WAVES, 2),
        "specs must be a batch shaped (N, frames, bins), got shape (2, 300)",
    ),
    "frequency mask width": (
        lambda: audio.frequency_mask(_k(), _SPECS, -3),
        "max_width must be non-negative, got -3",
    ),
    "signals rank": (
        lambda: signal.jitter(_k(), np.ones(5), 0.1),
        "signals must be a batch shaped (N, L) or (N, L, C), got shape (5,)",
    ),
    "interpolate mode": (
        lambda: signal.interpolate(np.ones(5), np.arange(5.0), "mirror"),
        "mode must be 'constant', 'edge' or 'wrap', got 'mirror'",
    ),
    "max_shift": (
        lambda: signal.random_shift(_k(), SIGNALS, -1),
        "max_shift must be non-negative, got -1",
    ),
    "min_scale": (
        lambda: signal.random_scale(_k(), SIGNALS, -0.5),
        "min_scale must be non-negative, got -0.5",
    ),
    "max_stretch": (
        lambda: signal.random_time_stretch(_k(), SIGNALS, 1.0),
        "max_stretch must lie in [0.0, 1.0), got 1.0",
    ),
    "alpha": (
        lambda: mix.mixup(_k(), SIGNALS, np.zeros(16, int), -1.0, num_classes=2),
        "alpha must be non-negative, got -1.0",
    ),
    "mixup rank": (
        lambda: mix.mixup(_k(), np.ones(5), np.zeros(5, int), num_classes=2),
        "x must be a batch shaped (N, ...), got shape (5,)",
    ),
    "mixup weight": (
        lambda: mix.mixup(_k(), SIGNALS, np.zeros(16, int), num_classes=2, weight=np.ones(3)),
        "weight must have shape (16,), got (3,)",
    ),
    "num_classes": (
        lambda: mix.mixup(_k(), SIGNALS, np.zeros(16, int)),
        "num_classes is required with integer labels",
    ),
    "cutmix alpha": (
        lambda: mix.cutmix(_k(), IMAGES, np.zeros(16, int), -2.0, num_classes=2),
        "alpha must be non-negative, got -2.0",
    ),
    "cutmix rank": (
        lambda: mix.cutmix(_k(), SIGNALS, np.zeros(16, int), num_classes=2),
        "images must be a batch shaped (N, H, W, C), got shape (16, 40)",
    ),
    "cutout size": (
        lambda: mix.cutout(_k(), IMAGES, -1),
        "size must be a non-negative int, got -1",
    ),
    "cutout rank": (
        lambda: mix.cutout(_k(), SIGNALS, 2),
        "images must be a batch shaped (N, H, W, C), got shape (16, 40)",
    ),
    "tokens": (
        lambda: text.random_swap(_k(), np.ones((2, 4), np.float32), _LEN),
        "tokens must be integer ids shaped (N, T), got float32(2, 4)",
    ),
    "lengths shape": (
        lambda: text.random_swap(_k(), _TOK, np.array([4])),
        "lengths must have shape (2,), got (1,)",
    ),
    "lengths range": (
        lambda: text.random_swap(_k(), _TOK, np.array([5, 0])),
        "lengths must lie in [0, 4]",
    ),
    "lengths negative": (
        lambda: text.random_swap(_k(), _TOK, np.array([-1, 0])),
        "lengths must lie in [0, 4]",
    ),
    "deletion rate": (
        lambda: text.random_deletion(_k(), _TOK, _LEN, 1.5),
        "rate must lie in [0.0, 1.0], got 1.5",
    ),
    "synonym rate": (
        lambda: text.synonym_replacement(_k(), _TOK, _LEN, np.ones((5, 2), int), -0.1),
        "rate must lie in [0.0, 1.0], got -0.1",
    ),
    "synonyms shape": (
        lambda: text.synonym_replacement(_k(), _TOK, _LEN, np.ones((5, 2), int), 0.1, vocab_size=6),
        "synonyms must be shaped (vocab_size=6, num_candidates), got (5, 2)",
    ),
    "synonyms rank": (
        lambda: text.synonym_replacement(_k(), _TOK, _LEN, np.ones(5, int), 0.1),
        "synonyms must be shaped (vocab_size=5, num_candidates), got (5,)",
    ),
    "synonym ids": (
        lambda: text.synonym_replacement(_k(), _TOK, _LEN, np.full((5, 2), 5), 0.1),
        "synonyms entries must be ids in [0, vocab_size) or -1 for none",
    ),
    "synonym ids low": (
        lambda: text.synonym_replacement(_k(), _TOK, _LEN, np.full((5, 2), -2), 0.1),
        "synonyms entries must be ids in [0, vocab_size) or -1 for none",
    ),
    "min_id": (
        lambda: text.random_insertion(_k(), _TOK, _LEN, vocab_size=5, min_id=5),
        "min_id must lie in [0, vocab_size), got 5",
    ),
    "min_id negative": (
        lambda: text.random_insertion(_k(), _TOK, _LEN, vocab_size=5, min_id=-1),
        "min_id must lie in [0, vocab_size), got -1",
    ),
    "stage probability": (
        lambda: compose([Stage(lambda k, x: x, 1.5)]),
        "probability must lie in [0.0, 1.0], got 1.5",
    ),
}


@pytest.mark.parametrize("case", list(_EXACT_ERRORS))
def test_bad_input_raises_the_exact_message(case):
    """The whole message, not a substring: a wrong argument name or layout in it fails."""
    call, message = _EXACT_ERRORS[case]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_a_stage_that_is_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match=r"^stage transform must be callable, got 3$"):
        compose([(3, 0.5)])


def _band_frequencies(size: int, max_width: int) -> dict[tuple[int, ...], float]:
    """Exact law of one SpecAugment band: width uniform on {0..W}, start uniform where it fits."""
    law: dict[tuple[int, ...], float] = {}
    for width in range(max_width + 1):
        starts = range(size - width + 1)
        for start in starts:
            band = tuple(range(start, start + width))
            law[band] = law.get(band, 0.0) + 1 / (max_width + 1) / len(starts)
    return law


@pytest.mark.parametrize(("size", "max_width"), [(6, 2), (4, 4)])
def test_a_mask_band_has_the_specaugment_law(size, max_width):
    """Every (width, start) pair has its exact probability: starts reach both edges, a band
    never hangs over the end, and a band as wide as the axis covers all of it."""
    n = 6000
    masked = np.asarray(audio.time_mask(jax.random.key(4), np.ones((n, size, 1)), max_width))
    bands = [tuple(np.flatnonzero(row[:, 0] == 0).tolist()) for row in masked]
    law = _band_frequencies(size, max_width)
    assert set(bands) <= set(law)
    for band, probability in law.items():
        observed = bands.count(band) / n
        assert abs(observed - probability) < 4.5 * np.sqrt(probability / n), band


def test_background_noise_adds_a_positive_multiple_of_a_bank_clip_chosen_uniformly():
    waves = np.asarray(jax.random.normal(jax.random.key(0), (400, 64)))
    bank = np.stack([np.linspace(-1, 1, 64), np.cos(np.arange(64.0))]).astype(np.float32)
    added = np.asarray(audio.add_background_noise(jax.random.key(5), waves, 3.0, bank)) - waves
    fits = np.stack([added @ clip / (clip @ clip) for clip in bank], 1)  # (n, 2) scales
    chosen = np.abs(fits).argmax(1)
    scale = fits[np.arange(len(waves)), chosen]
    np.testing.assert_allclose(added, scale[:, None] * bank[chosen], atol=1e-4)
    assert np.all(scale > 0)  # added, not subtracted
    assert abs(np.mean(chosen) - 0.5) < 4 * np.sqrt(0.25 / 400)  # both clips, equally often
    expected = np.sqrt(np.mean(waves**2, 1) / (np.mean(bank[chosen] ** 2, 1) * 10**0.3))
    np.testing.assert_allclose(scale, expected, rtol=1e-4)


def test_background_noise_keeps_the_waves_dtype():
    waves = jnp.ones((2, 16), jnp.bfloat16)
    bank = np.ones((1, 16), np.float32)
    assert audio.add_background_noise(jax.random.key(0), waves, 5.0, bank).dtype == jnp.bfloat16
    assert audio.add_background_noise(jax.random.key(0), waves, 5.0).dtype == jnp.bfloat16


def test_spectrogram_matches_a_numpy_stft():
    waves = np.asarray(jax.random.normal(jax.random.key(0), (2, 700)))
    frame_length, hop = 64, 48
    starts = range(0, 700 - frame_length + 1, hop)
    frames = np.stack([waves[:, s : s + frame_length] for s in starts], 1)
    expected = np.abs(np.fft.rfft(frames * np.hanning(frame_length), axis=-1))
    spec = audio.spectrogram(waves, frame_length, hop)
    np.testing.assert_allclose(spec, expected, rtol=1e-4, atol=1e-4)
    assert audio.spectrogram(waves[:, :frame_length], frame_length, hop).shape == (2, 1, 33)


def _peak_hz(out: np.ndarray, rate: int) -> np.ndarray:
    return np.abs(np.fft.rfft(out, axis=-1)).argmax(-1) * rate / out.shape[-1]


def test_pitch_shift_and_time_stretch_defaults_span_their_documented_ranges():
    """Defaults: ±2 semitones, and rates in [0.9, 1.1]; each spread over both sides of 1."""
    rate = 4000
    waves = np.tile(np.sin(2 * np.pi * 500 * np.arange(rate) / rate), (48, 1)).astype(np.float32)
    shifted = _peak_hz(np.asarray(audio.pitch_shift(jax.random.key(0), waves)), rate) / 500
    assert shifted.min() > 2 ** (-2 / 12) - 0.01 and shifted.max() < 2 ** (2 / 12) + 0.01
    assert shifted.min() < 0.95 and shifted.max() > 1.05
    stretched = np.asarray(audio.time_stretch(jax.random.key(1), waves))
    valid = stretched[:, : int(rate / 1.1) - 8]  # before the zero padding of the fastest
    speed = _peak_hz(valid, rate) / 500
    assert speed.min() > 0.9 - 0.01 and speed.max() < 1.1 + 0.01
    assert speed.min() < 0.95 and speed.max() > 1.05


def test_flips_default_to_half_the_examples():
    ramp = np.arange(4.0)
    for flip, images in (
        (image.random_flip_left_right, np.tile(ramp[None, None, :, None], (400, 4, 1, 1))),
        (image.random_flip_up_down, np.tile(ramp[None, :, None, None], (400, 1, 4, 1))),
    ):
        changed = np.any(np.asarray(flip(jax.random.key(0), images)) != images, axis=(1, 2, 3))
        assert abs(changed.mean() - 0.5) < 4 * np.sqrt(0.25 / 400)


def test_mnist1d_pipeline_shift_probability_saturates_at_one():
    impulse = jnp.zeros((3000, 40)).at[:, 20].set(1.0)
    out = np.asarray(signal.mnist1d_pipeline(1.5)(jax.random.key(0), impulse))
    assert abs(np.mean(out.argmax(1) == 20) - 1 / 9) < 0.025  # always shifted: 1 of 9 stays


def test_host_transform_casts_the_hook_outputs_to_the_input_dtypes():
    stage = text.host_transform(lambda t, n: (t.astype(np.float64), n.astype(np.float64)))
    tokens, lengths = jax.jit(stage)(jax.random.key(0), (TOKENS, LENGTHS))
    assert tokens.dtype == jnp.int32 and lengths.dtype == jnp.int32
    np.testing.assert_array_equal(tokens, TOKENS)


def test_mixup_draws_one_beta_lambda_per_example_and_keeps_zero_weight_rows():
    """One-hot inputs reveal each λᵢ (the diagonal); Beta(0.2, 0.2), the default, has sd 0.42."""
    n = 400
    x = np.concatenate([np.eye(n), np.zeros((n, 3))], 1).astype(np.float32)  # (N, N + 3)
    labels = np.arange(n) % 2
    mixed, _ = mix.mixup(jax.random.key(0), x, labels, num_classes=2, per_example=True)
    lam = np.diag(np.asarray(mixed)[:, :n])
    moved = lam < 1 - 1e-6  # partner ≠ self
    assert moved.mean() > 0.9
    beta_sd = np.sqrt(0.2 * 0.2 / (0.4**2 * 1.4))
    assert abs(lam[moved].std() - beta_sd) < 0.04 and abs(lam[moved].mean() - 0.5) < 0.06
    weight = (np.arange(n) < n // 2).astype(np.float32)
    mixed, _ = mix.mixup(jax.random.key(1), x, labels, 1.0, num_classes=2, weight=weight)
    mixed = np.asarray(mixed)
    np.testing.assert_array_equal(mixed[n // 2 :], x[n // 2 :])  # padding stays as it was
    assert not mixed[: n // 2, n // 2 :].any()  # and is never a partner
    assert (
        mix.mixup(jax.random.key(0), x.astype(jnp.bfloat16), labels, num_classes=2)[0].dtype
        == jnp.bfloat16
    )


def test_pad_and_crop_shifts_by_at_most_the_padding_and_honours_the_mode():
    images = np.ones((400, 8, 8, 1), np.float32)
    out = np.asarray(image.random_pad_and_crop(jax.random.key(0), images))  # padding 4
    zero_rows = (out == 0).all(axis=(2, 3)).sum(1)
    assert zero_rows.max() == 4
    edge = image.random_pad_and_crop(jax.random.key(0), images, 3, mode="edge")
    np.testing.assert_array_equal(edge, images)


def test_pitch_shift_passes_its_stft_sizes_on():
    waves = np.zeros((2, 400), np.float32)
    out = audio.pitch_shift(jax.random.key(0), waves, 1.0, n_fft=100, hop=50)  # 512 % 50 ≠ 0
    assert out.shape == (2, 400)


def test_saturation_jitter_both_lowers_and_raises_saturation():
    pixel = np.array([0.2, 0.5, 0.8], np.float32)  # HSV saturation 0.75
    images = np.tile(pixel, (200, 2, 2, 1))
    out = np.asarray(image.color_jitter(jax.random.key(0), images, saturation=0.5))[:, 0, 0]
    saturation = (out.max(1) - out.min(1)) / out.max(1)
    assert saturation.min() < 0.5 and saturation.max() > 0.95  # factors spread over [0.5, 1.5]


def test_mixup_takes_inputs_of_rank_two_to_five():
    for shape in ((4, 3), (4, 3, 2), (4, 3, 2, 2), (4, 3, 2, 2, 2)):
        mixed, _ = mix.mixup(jax.random.key(0), np.ones(shape), np.arange(4), num_classes=4)
        np.testing.assert_allclose(mixed, 1.0, rtol=1e-6)


def test_random_scale_multiplies_by_a_factor_in_its_range():
    out = np.asarray(signal.random_scale(jax.random.key(0), np.ones((500, 8)), 0.5, 1.0))
    assert out.min() >= 0.5 and out.max() <= 1.0 and out.max() - out.min() > 0.4


def test_synonym_zero_is_a_valid_candidate():
    table = np.zeros((VOCAB, 1), np.int32)  # every token's only synonym is id 0
    out, lengths = text.synonym_replacement(jax.random.key(0), TOKENS, LENGTHS, table, 1.0)
    inside = np.arange(TOKENS.shape[1])[None] < LENGTHS[:, None]
    assert np.all(np.asarray(out)[inside] == 0)
    np.testing.assert_array_equal(lengths, LENGTHS)


def test_insertion_inserts_a_synonym_of_the_row_inside_the_sequence():
    n, width, vocab = 64, 8, 40
    lengths = np.arange(n, dtype=np.int32) % 6 + 1
    tokens = np.where(np.arange(width)[None] < lengths[:, None], np.arange(1, width + 1), 0)
    table = np.full((vocab, 2), -1, np.int32)
    table[1:9, 0] = np.arange(21, 29)  # token t's one synonym is t + 20
    out, new_lengths = text.random_insertion(
        jax.random.key(0), tokens.astype(np.int32), lengths, vocab_size=vocab, synonyms=table
    )
    out = np.asarray(out)
    np.testing.assert_array_equal(new_lengths, lengths + 1)
    for row, length in zip(out, lengths, strict=True):
        inserted = [t for t in row[: length + 1] if t > 20]
        assert len(inserted) == 1 and 21 <= inserted[0] <= 20 + length  # a synonym of the row
        assert np.all(row[: length + 1] > 0) and np.all(row[length + 1 :] == 0)  # no gap


def test_audio_ops_keep_float32_under_x64(x64):
    waves = np.asarray(jax.random.normal(jax.random.key(0), (2, 600)), np.float32)
    assert audio.time_stretch(jax.random.key(1), waves).dtype == jnp.float32
    assert audio.spectrogram(waves, 64, 32).dtype == jnp.float32
    assert signal.random_scale(jax.random.key(1), waves).dtype == jnp.float32


def _line_fit(values: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of values[j] over the interior output pixels (borders clamp)."""
    j = np.arange(2, len(values) - 2)
    slope, intercept = np.polyfit(j, values[2:-2], 1)
    return slope, intercept


def test_crop_and_resize_samples_a_box_inside_the_image_with_its_area_law():
    """On coordinate ramps the output is linear: its slope is the box's size over the image's
    and its intercept the box's corner (bilinear, half-pixel centres)."""
    size, n = 32, 64
    ramp = np.arange(size, dtype=np.float32)
    images = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None]), -1)  # (col, row)
    out = np.asarray(
        image.random_crop_and_resize(jax.random.key(0), np.tile(images, (n, 1, 1, 1)), (0.25, 1.0))
    )
    areas = []
    for example in out:
        boxes = []
        for values in (example[size // 2, :, 0], example[:, size // 2, 1]):
            slope, intercept = _line_fit(values)
            extent, corner = slope * size, intercept - 0.5 * slope + 0.5
            assert 0.99 <= extent <= size * 1.001 and corner >= -1e-3
            assert corner + extent <= size * 1.001  # the box lies inside the image
            boxes.append(extent)
        areas.append(boxes[0] * boxes[1] / size**2)
    assert min(areas) < 0.4 and max(areas) > 0.7  # area fractions spread over [0.25, 1]


def test_cutout_centres_are_uniform_over_the_image():
    """Row 0 and the last row are each erased with probability (1/2 + s/2) / H."""
    n, size, box = 4000, 20, 4
    erased = np.asarray(mix.cutout(jax.random.key(0), np.ones((n, size, size, 1)), box)) == 0
    expected = (0.5 + box / 2) / size
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / n)
    for rows in (erased[:, 0], erased[:, -1], erased[:, :, 0], erased[:, :, -1]):
        assert abs(rows.any(axis=(1, 2)).mean() - expected) < tolerance


def test_time_stretch_is_about_the_centre_and_pads_by_its_mode():
    length = 41
    bump = np.exp(-((np.arange(length) - 20.0) ** 2) / 20).astype(np.float32)
    out = np.asarray(signal.random_time_stretch(jax.random.key(0), np.tile(bump, (16, 1)), 0.3))
    np.testing.assert_allclose(out, out[:, ::-1], atol=1e-5)  # symmetric stays symmetric
    assert np.abs(out - bump).max() > 0.05
    ones = np.ones((16, length), np.float32)
    np.testing.assert_allclose(signal.random_time_stretch(jax.random.key(0), ones, 0.5), 1.0)


def test_compose_takes_a_bare_callable_as_an_always_applied_stage():
    out = compose([lambda k, x: x + 1.0])(jax.random.key(0), np.zeros((8, 2), np.float32))
    np.testing.assert_array_equal(out, 1.0)


def test_shift_pitch_clips_at_an_octave_and_keeps_the_tail():
    rate = 4000
    wave = np.sin(2 * np.pi * 300 * np.arange(rate) / rate).astype(np.float32)
    octave = np.asarray(audio.shift_pitch(wave, audio.MAX_SEMITONES))
    np.testing.assert_allclose(audio.shift_pitch(wave, 30.0), octave, atol=1e-5)
    np.testing.assert_allclose(
        audio.shift_pitch(wave, -30.0), audio.shift_pitch(wave, -audio.MAX_SEMITONES), atol=1e-5
    )
    tail = octave[-rate // 20 : -rate // 100]  # the last 5% (the final frames are windowed)
    assert np.sqrt(np.mean(tail**2)) > 0.3 * np.sqrt(np.mean(octave**2))


def test_mixup_alpha_zero_soft_labels_and_weighted_rows_mix():
    x = np.asarray(jax.random.normal(jax.random.key(0), (64, 3)))
    labels = np.arange(64) % 4
    same, soft = mix.mixup(jax.random.key(1), x, labels, 0.0, num_classes=4)
    np.testing.assert_array_equal(same, x)  # α = 0: λ = 1, no mixing and no NaN
    np.testing.assert_array_equal(soft, np.eye(4)[labels])
    _, mixed_soft = mix.mixup(jax.random.key(1), x, np.eye(4)[labels], 1.0)  # soft labels
    np.testing.assert_allclose(mixed_soft.sum(1), 1.0, rtol=1e-6)
    weight = np.ones(64, np.float32)
    mixed, _ = mix.mixup(jax.random.key(1), x, labels, 1.0, num_classes=4, weight=weight)
    assert np.mean(np.any(np.asarray(mixed) != x, axis=1)) > 0.9  # weight-1 rows are mixed


def test_signal_ops_treat_channels_alike():
    signals = np.asarray(jax.random.normal(jax.random.key(0), (4, 40, 3)))
    for op in (
        lambda s: signal.random_shift(jax.random.key(1), s, 5),
        lambda s: signal.random_time_stretch(jax.random.key(1), s, 0.3),
    ):
        out = np.asarray(op(signals))
        for c in range(3):
            np.testing.assert_allclose(out[..., c], op(signals[..., c]), atol=1e-6)
