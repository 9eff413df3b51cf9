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


def test_accuracy_counts_hits_with_integer_or_one_hot_labels():
    probs = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]])
    labels = jnp.array([0, 2, 1, 2])  # three hits out of four
    assert float(metrics.accuracy(probs, labels)) == 0.75
    assert float(metrics.accuracy(probs, jax.nn.one_hot(labels, 3))) == 0.75
    with pytest.raises(ValueError, match=r"^labels must have shape \(4,\), got \(3,\)"):
        metrics.accuracy(probs, labels[:3])


def test_nll_and_brier_match_numpy_and_clip_a_zero_probability():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=9).astype(np.float32)
    labels = rng.integers(0, 4, size=9)
    picked = probs[np.arange(9), labels].astype(np.float64)
    np.testing.assert_allclose(metrics.nll(probs, labels), -np.log(picked).mean(), rtol=1e-5)
    brier = ((probs - np.eye(4)[labels]) ** 2).sum(1).mean()
    np.testing.assert_allclose(metrics.brier(probs, labels), brier, rtol=1e-5)
    certain_and_wrong = jnp.array([[1.0, 0.0]])
    np.testing.assert_allclose(metrics.nll(certain_and_wrong, jnp.array([1])), -np.log(1e-12))


def test_metrics_keep_float32_under_x64(x64):
    probs = jnp.array([[0.7, 0.3], [0.2, 0.8]], jnp.float32)
    labels = jnp.array([0, 0])
    assert metrics.accuracy(probs, labels).dtype == jnp.float32
    assert metrics.brier(probs, labels).dtype == jnp.float32
    assert metrics.reliability_bins(probs, labels)["accuracy"].dtype == jnp.float32


def test_reliability_bins_default_and_the_lowest_bin():
    probs = jnp.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])  # confidences 0.4 and 0.9
    bins = metrics.reliability_bins(probs, jnp.array([0, 1]), num_bins=2)
    np.testing.assert_array_equal(bins["count"], [1, 1])  # 0.4 lies in (0, 0.5]
    assert metrics.reliability_bins(probs, jnp.array([0, 1]))["count"].shape == (15,)
    rng = np.random.default_rng(3)
    many = jnp.asarray(rng.dirichlet(np.ones(3) * 0.5, size=200), jnp.float32)
    many_labels = jnp.asarray(rng.integers(0, 3, 200))
    assert float(metrics.ece(many, many_labels)) == float(metrics.ece(many, many_labels, 15))
    assert float(metrics.ece(many, many_labels, 15)) != float(metrics.ece(many, many_labels, 16))
    for bad in (True, 2.0):
        with pytest.raises(ValueError, match=r"^num_bins must be a positive int"):
            metrics.reliability_bins(probs, jnp.array([0, 1]), bad)


def test_probability_checks_name_the_problem():
    with pytest.raises(ValueError, match=r"^probs is empty"):
        metrics.nll(jnp.zeros((0, 3)), jnp.zeros(0, int))
    with pytest.raises(ValueError, match=r"^probs must have shape \(n, num_classes\)"):
        metrics.nll(jnp.ones(3) / 3, jnp.array([0]))
    for outside in ([[-0.5, 0.75, 0.75]], [[1.5, 0.2]]):
        with pytest.raises(ValueError, match=r"^probs must lie in \[0, 1\]; pass softmax"):
            metrics.nll(jnp.array(outside), jnp.array([0]))
    unnormalized = {
        "0.4000": [[0.5, 0.5], [0.2, 0.2]],
        "1.5000": [[1, 0], [0.75, 0.75], [0.4, 0.4]],
    }
    for worst, rows in unnormalized.items():
        with pytest.raises(
            ValueError, match=rf"^probs rows must sum to 1 \(a row sums to {worst}\)"
        ):
            metrics.nll(jnp.array(rows), jnp.zeros(len(rows), int))
    # float32 softmax rows sum to 1 only up to rounding: within 1e-3 they are accepted.
    assert np.isfinite(float(metrics.nll(jnp.array([[0.5, 0.5005]]), jnp.array([0]))))


def test_gradient_noise_scale_without_a_weight_key_counts_every_example():
    from jaxreg.data import batches

    x = jax.random.normal(jax.random.key(0), (64, 3))
    y = x @ jnp.array([1.0, -1.0, 0.5])
    weighted = batches(x, y, 16)
    plain = {"x": weighted["x"], "y": weighted["y"]}

    def loss_fn(w, b):
        return jnp.mean((b["x"] @ w - b["y"]) ** 2) / 2

    for method in ("per_example", "batches"):
        ours = metrics.gradient_noise_scale(loss_fn, jnp.zeros(3), plain, method=method)
        reference = metrics.gradient_noise_scale(loss_fn, jnp.zeros(3), weighted, method=method)
        assert float(reference.trace_covariance) > 0
        np.testing.assert_allclose(ours.trace_covariance, reference.trace_covariance, rtol=1e-5)
        np.testing.assert_allclose(ours.gradient_sq_norm, reference.gradient_sq_norm, rtol=1e-5)


def test_bias_variance_matches_numpy_for_both_losses():
    rng = np.random.default_rng(0)
    preds, targets = rng.normal(size=(6, 11)), rng.normal(size=11)
    main = preds.mean(0)
    ours = metrics.bias_variance(jnp.asarray(preds), jnp.asarray(targets))
    np.testing.assert_allclose(
        [float(v) for v in ours],
        [
            ((preds - targets) ** 2).mean(),
            ((main - targets) ** 2).mean(),
            ((preds - main) ** 2).mean(),
        ],
        rtol=1e-5,
    )
    labels, truth = rng.integers(0, 4, size=(7, 13)), rng.integers(0, 3, size=13)
    labels[0, 0] = 3  # the largest class appears in the predictions only
    mode = np.array([np.bincount(column, minlength=4).argmax() for column in labels.T])
    expected = [(labels != truth).mean(), (mode != truth).mean(), (labels != mode).mean()]
    inferred = metrics.bias_variance(jnp.asarray(labels), jnp.asarray(truth), loss="0-1")
    np.testing.assert_allclose([float(v) for v in inferred], expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^preds must be \(rounds, n\) with n = \(13,\)"):
        metrics.bias_variance(jnp.asarray(labels[0]), jnp.asarray(truth))
    with pytest.raises(ValueError, match=r"^loss must be 'mse' or '0-1'"):
        metrics.bias_variance(jnp.asarray(labels), jnp.asarray(truth), loss="hinge")


def _regression_gradients(n=48, batch=16):
    """Per-example gradients of ½(xᵀw − y)² at w = 0 (−x·y), computed in NumPy."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=n) + 0.5 * rng.normal(size=(n, 3)) @ [1, 2, 0]
    return x, y, -x * y[:, None], batch


def test_gradient_noise_scale_equals_its_formulas_in_numpy():
    from jaxreg.data import batches

    x, y, per_example, size = _regression_gradients()
    n = len(y)

    def loss_fn(w, b):
        return jnp.sum(b["weight"] * (b["x"] @ w - b["y"]) ** 2) / (2 * jnp.sum(b["weight"]))

    data = batches(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), size)
    mean = per_example.mean(0)
    trace = ((per_example - mean) ** 2).sum() / (n - 1)
    ours = metrics.gradient_noise_scale(loss_fn, jnp.zeros(3), data)
    np.testing.assert_allclose(ours.trace_covariance, trace, rtol=1e-4)
    np.testing.assert_allclose(ours.gradient_sq_norm, mean @ mean - trace / n, rtol=1e-4)
    batch_grads = per_example.reshape(n // size, size, 3).mean(1)
    small_sq, big_sq = (batch_grads**2).sum(1).mean(), mean @ mean
    signal = (n * big_sq - size * small_sq) / (n - size)
    noise = (small_sq - big_sq) / (1 / size - 1 / n)
    by_batches = metrics.gradient_noise_scale(loss_fn, jnp.zeros(3), data, method="batches")
    np.testing.assert_allclose(by_batches.gradient_sq_norm, signal, rtol=1e-4)
    np.testing.assert_allclose(by_batches.trace_covariance, noise, rtol=1e-4)
    np.testing.assert_allclose(by_batches.simple_noise_scale, noise / signal, rtol=1e-4)


def test_labels_outside_the_classes_and_predictions_of_the_wrong_length_are_named():
    probs = jnp.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 3\) for 3 classes"):
        metrics.accuracy(probs, jnp.array([0, 7]))
    with pytest.raises(ValueError, match=r"^preds must be \(rounds, n\) with n = \(13,\)"):
        metrics.bias_variance(jnp.zeros((7, 12)), jnp.zeros(13))
