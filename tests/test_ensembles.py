"""Ensemble decompositions: exact identities, a synthetic estimator with known moments, mlxtend."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import ensembles, metrics
from jaxreg.nn import MLP


@pytest.mark.parametrize("shape", [(2, 2, 5), (30, 4, 17), (7, 9, 3)])
def test_decompose_identity_is_exact_on_random_predictions(x64, shape):
    preds = jax.random.normal(jax.random.key(0), shape, jnp.float64) * 2 + 0.3
    targets = jax.random.normal(jax.random.key(1), shape[2:], jnp.float64)
    d = ensembles.decompose(preds, targets)
    k = shape[1]
    np.testing.assert_allclose(
        d.ensemble_mse, d.bias2 + d.variance / k + (1 - 1 / k) * d.covariance, rtol=1e-12
    )
    # avg member error = bias² of each member's mean, averaged, + variance; with equal
    # member means that is bias2 + variance; in general ≥ it.
    assert float(d.avg_member_mse) >= float(d.bias2 + d.variance) - 1e-12


def test_decompose_recovers_a_synthetic_estimators_moments():
    replicates, k, n = 4000, 5, 8
    bias, sigma, rho = 0.4, 0.7, 0.3
    key_shared, key_own = jax.random.split(jax.random.key(0))
    shared = jax.random.normal(key_shared, (replicates, 1, n))
    own = jax.random.normal(key_own, (replicates, k, n))
    targets = jnp.linspace(-1, 1, n)
    preds = targets + bias + sigma * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)
    d = ensembles.decompose(preds, targets)
    assert float(d.bias2) == pytest.approx(bias**2, abs=0.02)
    assert float(d.variance) == pytest.approx(sigma**2, rel=0.03)
    assert float(d.covariance) == pytest.approx(rho * sigma**2, abs=0.02)


def test_ambiguity_identity_is_exact(x64):
    preds = jax.random.normal(jax.random.key(0), (6, 40), jnp.float64)
    targets = jax.random.normal(jax.random.key(1), (40,), jnp.float64)
    a = ensembles.ambiguity(preds, targets)
    np.testing.assert_allclose(a.ensemble_error, a.avg_member_error - a.ambiguity, rtol=1e-12)


def mlxtend_transcription(all_pred, y_test, loss):
    """The formulas of mlxtend.evaluate.bias_variance_decomp, transcribed line by line."""
    if loss == "0-1_loss":
        main_predictions = np.apply_along_axis(
            lambda x: np.argmax(np.bincount(x)), axis=0, arr=all_pred
        )
        avg_expected_loss = np.apply_along_axis(
            lambda x: (x != y_test).mean(), axis=1, arr=all_pred
        ).mean()
        avg_bias = np.sum(main_predictions != y_test) / y_test.size
        var = np.zeros(main_predictions.shape)
        for pred in all_pred:
            var += (pred != main_predictions).astype(np.int_)
        var /= all_pred.shape[0]
        avg_var = var.sum() / y_test.shape[0]
    else:
        avg_expected_loss = np.apply_along_axis(
            lambda x: ((x - y_test) ** 2).mean(), axis=1, arr=all_pred
        ).mean()
        main_predictions = np.mean(all_pred, axis=0)
        avg_bias = np.sum((main_predictions - y_test) ** 2) / y_test.size
        avg_var = np.sum((main_predictions - all_pred) ** 2) / all_pred.size
    return avg_expected_loss, avg_bias, avg_var


def test_bias_variance_equals_mlxtend_formulas():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(25, 60))
    y = rng.integers(0, 4, size=60)
    ours = metrics.bias_variance(jnp.asarray(labels), jnp.asarray(y), "0-1")
    np.testing.assert_allclose(ours, mlxtend_transcription(labels, y, "0-1_loss"), rtol=1e-6)
    values = rng.normal(size=(25, 60))
    targets = rng.normal(size=60)
    ours = metrics.bias_variance(jnp.asarray(values), jnp.asarray(targets), "mse")
    np.testing.assert_allclose(ours, mlxtend_transcription(values, targets, "mse"), rtol=1e-5)
    np.testing.assert_allclose(ours.expected_loss, ours.bias + ours.variance, rtol=1e-5)
    jitted = jax.jit(lambda p, t: metrics.bias_variance(p, t, "0-1", num_classes=4))
    np.testing.assert_allclose(
        jitted(jnp.asarray(labels), jnp.asarray(y)),
        mlxtend_transcription(labels, y, "0-1_loss"),
        rtol=1e-6,
    )


def test_bootstrap_and_subspaces():
    w = np.asarray(ensembles.bootstrap_weights(jax.random.key(0), 200, 50))
    np.testing.assert_array_equal(w.sum(1), 50)
    assert abs((w == 0).mean() - (1 - 1 / 50) ** 50) < 0.02  # ~36.8% left out
    p = np.asarray(ensembles.bootstrap_weights(jax.random.key(0), 200, 50, "poisson"))
    assert abs(p.mean() - 1) < 0.05
    masks = np.asarray(ensembles.subspace_masks(jax.random.key(0), 10, 40, 0.25))
    np.testing.assert_array_equal(masks.sum(1), 10)
    assert len({m.tobytes() for m in masks}) == 10


def test_predict_mean_and_vote():
    apply, params = ensembles.stack_members(
        lambda r: MLP((4, 8, 3), rngs=r), jax.random.split(jax.random.key(0), 5)
    )
    x = jax.random.normal(jax.random.key(1), (7, 4))
    mean = ensembles.predict(apply, params, x)
    np.testing.assert_allclose(mean.sum(1), 1.0, rtol=1e-6)
    member_probs = jax.vmap(lambda p: jax.nn.softmax(apply(p, x)))(params)
    np.testing.assert_allclose(mean, member_probs.mean(0), rtol=1e-6)
    votes = np.asarray(ensembles.predict(apply, params, x, "vote"))
    assert np.all(np.isin(np.round(votes * 5), np.arange(6)))


def test_bad_input():
    with pytest.raises(ValueError, match="replicates"):
        ensembles.decompose(jnp.ones((1, 3, 4)), jnp.ones(4))
    with pytest.raises(ValueError, match="replicates, members, n"):
        ensembles.decompose(jnp.ones((3, 4)), jnp.ones(4))
    with pytest.raises(ValueError, match="method"):
        ensembles.bootstrap_weights(jax.random.key(0), 2, 3, "jackknife")
    with pytest.raises(ValueError, match="fraction"):
        ensembles.subspace_masks(jax.random.key(0), 2, 3, 1.5)
