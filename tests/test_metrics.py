"""Calibration metrics against a plain NumPy implementation written independently here."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxreg import metrics


def numpy_ece(probs, labels, num_bins, norm, binning):
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    n = len(labels)
    if binning == "width":
        edges = np.linspace(0, 1, num_bins + 1)
        bins = [(confidence > lo) & (confidence <= hi) for lo, hi in itertools.pairwise(edges)]
        bins[0] |= confidence == 0
    else:
        order = np.argsort(confidence, kind="stable")
        bins = []
        for b in range(num_bins):
            members = np.zeros(n, bool)
            members[order[[i for i in range(n) if i * num_bins // n == b]]] = True
            bins.append(members)
    gaps, weights = [], []
    for members in bins:
        if members.sum() == 0:
            continue
        gaps.append(abs(correct[members].mean() - confidence[members].mean()))
        weights.append(members.sum() / n)
    gaps, weights = np.array(gaps), np.array(weights)
    if norm == "l1":
        return float((weights * gaps).sum())
    if norm == "l2":
        return float(np.sqrt((weights * gaps**2).sum()))
    return float(gaps.max())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    # A few shapes and bin counts, so most examples reuse compiled kernels (values vary freely).
    n=st.sampled_from([1, 2, 37, 300]),
    k=st.sampled_from([2, 3, 6]),
    num_bins=st.sampled_from([1, 7, 15, 20]),
    norm=st.sampled_from(["l1", "l2", "max"]),
    binning=st.sampled_from(["width", "mass"]),
)
def test_ece_matches_numpy(seed, n, k, num_bins, norm, binning):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.1, 5)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, k, size=n)
    ours = float(
        metrics.ece(jnp.asarray(probs, jnp.float32), jnp.asarray(labels), num_bins, norm, binning)
    )
    reference = numpy_ece(
        np.asarray(jnp.asarray(probs, jnp.float32), np.float64), labels, num_bins, norm, binning
    )
    assert ours == pytest.approx(reference, abs=2e-5)


def test_calibrated_predictor_has_near_zero_ece():
    key_conf, key_label = jax.random.split(jax.random.key(0))
    n = 200_000
    confidence = jax.random.uniform(key_conf, (n,), minval=0.5, maxval=1.0)
    probs = jnp.stack([confidence, 1 - confidence], axis=1)
    labels = jnp.where(jax.random.uniform(key_label, (n,)) < confidence, 0, 1)
    assert float(metrics.ece(probs, labels)) < 0.01
    overconfident = jnp.stack([jnp.full(n, 0.99), jnp.full(n, 0.01)], axis=1)
    assert float(metrics.ece(overconfident, labels)) > 0.2


def test_reliability_bins_counts_and_jit():
    probs = jnp.array([[0.95, 0.05], [0.55, 0.45], [0.6, 0.4], [0.2, 0.8]])
    labels = jnp.array([0, 1, 0, 1])
    bins = jax.jit(metrics.reliability_bins, static_argnums=(2, 3))(probs, labels, 5, "width")
    np.testing.assert_array_equal(bins["count"], [0, 0, 2, 1, 1])
    np.testing.assert_allclose(bins["accuracy"][2], 0.5)
    np.testing.assert_allclose(bins["confidence"][2], 0.575, rtol=1e-6)


def test_accuracy_nll_brier():
    probs = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = jnp.array([0, 1])
    assert float(metrics.accuracy(probs, labels)) == 0.5
    np.testing.assert_allclose(
        metrics.nll(probs, labels), -(np.log(0.7) + np.log(0.1)) / 2, rtol=1e-6
    )
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2
    np.testing.assert_allclose(metrics.brier(probs, labels), brier, rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.ece(jnp.array([[0.5, 0.6]]), jnp.array([0]))
    with pytest.raises(ValueError, match="logits"):
        metrics.ece(jnp.array([[3.0, -2.0]]), jnp.array([0]))
    with pytest.raises(ValueError, match="norm"):
        metrics.ece(jnp.array([[0.5, 0.5]]), jnp.array([0]), norm="l3")
    with pytest.raises(ValueError, match="binning"):
        metrics.ece(jnp.array([[0.5, 0.5]]), jnp.array([0]), binning="log")
    with pytest.raises(ValueError, match="num_bins"):
        metrics.reliability_bins(jnp.array([[0.5, 0.5]]), jnp.array([0]), 0)
    with pytest.raises(ValueError, match="labels"):
        metrics.ece(jnp.array([[0.5, 0.5]]), jnp.array([0, 1]))


def test_gradient_noise_scale_matches_the_analytic_value_for_linear_regression():
    """x ~ N(0, I_d), y = ε ~ N(0, s²), loss ½(xᵀw - y)²: at w = Δ the per-example gradient
    g = x(xᵀΔ - ε) has mean G = Δ and tr(Σ) = (d+1)|Δ|² + d·s² (Gaussian fourth moments)."""
    from jaxreg.data import batches

    d, n, s = 5, 20000, 0.5
    x = jax.random.normal(jax.random.key(0), (n, d))
    y = s * jax.random.normal(jax.random.key(1), (n,))
    delta = jnp.ones(d) / jnp.sqrt(d)

    def loss_fn(w, b):
        return jnp.sum(b["weight"] * (b["x"] @ w - b["y"]) ** 2) / (2 * jnp.sum(b["weight"]))

    trace_exact = (d + 1) * 1.0 + d * s**2
    per_example = np.asarray(x) * (np.asarray(x) @ np.asarray(delta) - np.asarray(y))[:, None]
    sq_dev = ((per_example - per_example.mean(0)) ** 2).sum(1)
    standard_error = sq_dev.std() / np.sqrt(n)
    data = batches(x, y, 128)  # ragged: 20000 = 156·128 + 32, the padding must not count
    ours = metrics.gradient_noise_scale(loss_fn, delta, data)
    assert abs(float(ours.trace_covariance) - trace_exact) < 4 * standard_error
    np.testing.assert_allclose(float(ours.trace_covariance), sq_dev.sum() / (n - 1), rtol=1e-4)
    assert abs(float(ours.gradient_sq_norm) - 1.0) < 0.02
    assert float(ours.simple_noise_scale) == pytest.approx(trace_exact, rel=0.04)
    batched = metrics.gradient_noise_scale(loss_fn, delta, data, method="batches")
    assert float(batched.simple_noise_scale) == pytest.approx(trace_exact, rel=0.1)
    with pytest.raises(ValueError, match="method"):
        metrics.gradient_noise_scale(loss_fn, delta, data, method="exact")
