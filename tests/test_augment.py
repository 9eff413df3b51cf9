"""Augmentation properties: identities, involutions, conservation, per-example keys, vocab."""

import chex
import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.augment import Stage, audio, compose, image, mix, signal, text

IMAGES = jax.random.uniform(jax.random.key(0), (16, 12, 12, 3))
SIGNALS = jax.random.normal(jax.random.key(1), (16, 40))


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
TOKENS = jnp.asarray(np.random.default_rng(0).integers(1, VOCAB, size=(32, 12)), jnp.int32)
LENGTHS = jnp.asarray(np.random.default_rng(1).integers(0, 13, size=32), jnp.int32)
TOKENS = jnp.where(jnp.arange(12)[None] < LENGTHS[:, None], TOKENS, 0)
SYNONYMS = jnp.asarray(
    np.where(
        np.random.default_rng(2).random((VOCAB, 3)) < 0.5,
        np.random.default_rng(3).integers(1, VOCAB, (VOCAB, 3)),
        -1,
    ),
    jnp.int32,
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
