import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxreg import labels


@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 12), eps=st.floats(0.0, 0.99), seed=st.integers(0, 1000))
def test_smooth_matches_both_formulas(k, eps, seed):
    y = np.random.default_rng(seed).integers(0, k, size=7)
    onehot = np.eye(k)[y]
    off = np.asarray(labels.smooth(jnp.asarray(y), k, eps))
    np.testing.assert_allclose(
        off, np.where(onehot == 1, 1 - eps, eps / (k - 1)), rtol=1e-6, atol=1e-7
    )
    uniform = np.asarray(labels.smooth(jnp.asarray(y), k, eps, convention="uniform"))
    np.testing.assert_allclose(uniform, (1 - eps) * onehot + eps / k, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(uniform, optax.smooth_labels(jnp.asarray(onehot), eps), rtol=1e-6)
    np.testing.assert_allclose(off.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(uniform.sum(1), 1.0, rtol=1e-6)
    # One-hot input gives the same answer as integer input.
    np.testing.assert_allclose(
        labels.smooth(jnp.asarray(onehot, jnp.float32), k, eps), off, rtol=1e-6
    )


def test_symmetric_label_noise_flips_at_the_rate_and_never_to_the_same_class():
    y = jnp.asarray(np.random.default_rng(0).integers(0, 10, 20000))
    noisy = labels.symmetric_label_noise(jax.random.key(0), y, 0.3, 10)
    flipped = np.asarray(noisy != y)
    band = 5 * np.sqrt(0.3 * 0.7 / y.size)
    assert abs(flipped.mean() - 0.3) < band
    counts = np.bincount(np.asarray(noisy)[flipped], minlength=10)
    assert counts.min() > 0 and np.all((np.asarray(noisy) >= 0) & (np.asarray(noisy) < 10))


def test_asymmetric_label_noise_follows_the_transition_matrix():
    transition = np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9]])
    y = jnp.repeat(jnp.arange(3), 20000)
    noisy = np.asarray(labels.asymmetric_label_noise(jax.random.key(0), y, transition))
    for clean in range(3):
        freq = np.bincount(noisy[np.asarray(y) == clean], minlength=3) / 20000
        np.testing.assert_allclose(freq, transition[clean], atol=0.015)


def test_bad_input():
    with pytest.raises(ValueError, match="eps"):
        labels.smooth(jnp.array([0]), 3, 1.0)
    with pytest.raises(ValueError, match="eps"):
        labels.smooth(jnp.array([0]), 3, -0.1)
    with pytest.raises(ValueError, match="convention"):
        labels.smooth(jnp.array([0]), 3, 0.1, convention="both")
    with pytest.raises(ValueError, match="num_classes"):
        labels.smooth(jnp.array([0]), 1, 0.1)
    with pytest.raises(ValueError, match="transition"):
        labels.asymmetric_label_noise(jax.random.key(0), jnp.array([0]), [[0.5, 0.4], [0, 1]])


def test_symmetric_label_noise_moves_each_class_uniformly_to_every_other_class():
    k, n = 5, 50000
    y = jnp.repeat(jnp.arange(k), n // k)
    noisy = np.asarray(labels.symmetric_label_noise(jax.random.key(1), y, 0.6, k))
    for clean in range(k):
        moved = noisy[(np.asarray(y) == clean) & (noisy != clean)]
        share = np.bincount(moved, minlength=k) / moved.size
        expected = np.where(np.arange(k) == clean, 0.0, 1 / (k - 1))
        np.testing.assert_allclose(share, expected, atol=0.02)


def test_symmetric_label_noise_rate_one_flips_every_label_and_keeps_the_dtype():
    y = jnp.arange(6, dtype=jnp.int16) % 3
    noisy = labels.symmetric_label_noise(jax.random.key(0), y, 1.0, 3)
    assert noisy.dtype == jnp.int16
    assert np.all(np.asarray(noisy) != np.asarray(y))
    for rate in (1.0001, -0.1):
        with pytest.raises(ValueError, match=r"^rate must lie in \[0.0, 1.0\]"):
            labels.symmetric_label_noise(jax.random.key(0), y, rate, 3)


def test_one_hot_passes_soft_labels_of_any_rank_and_names_a_wrong_width():
    soft = jnp.full((2, 5, 3), 1 / 3)
    assert labels.one_hot(soft, 3) is soft or np.array_equal(labels.one_hot(soft, 3), soft)
    with pytest.raises(ValueError, match=r"last axis 4, got shape \(2, 5, 3\)"):
        labels.one_hot(soft, 4)


def test_smooth_names_eps_and_asymmetric_noise_names_the_transition():
    with pytest.raises(ValueError, match=r"^eps must lie in \[0.0, 1.0\)"):
        labels.smooth(jnp.array([0]), 3, 1.0)
    key, y = jax.random.key(0), jnp.array([0, 1])
    for bad in (np.ones((2, 3)) / 3, np.ones((2, 2, 2)) / 2, np.ones(2) / 2):
        with pytest.raises(ValueError, match=r"^transition must be a square \(K, K\) matrix"):
            labels.asymmetric_label_noise(key, y, bad)
    # Rows summing to 1 with a negative entry are not probabilities.
    with pytest.raises(ValueError, match=r"^transition rows must be probabilities"):
        labels.asymmetric_label_noise(key, y, [[1.5, -0.5], [0.0, 1.0]])


def test_asymmetric_label_noise_accepts_a_traced_transition():
    flip = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    noisy = jax.jit(labels.asymmetric_label_noise)(jax.random.key(0), jnp.array([0, 1, 1]), flip)
    assert noisy.tolist() == [1, 0, 0]


def test_num_classes_must_be_an_int():
    for bad in (2.5, True, 1):
        with pytest.raises(ValueError, match=r"^num_classes must be an int >= 2"):
            labels.smooth(jnp.array([0]), bad, 0.1)
