"""Tasks beyond classification through fit, evaluate and the Hessian analysis.

References: NumPy least squares and scikit-learn's ``r2_score`` for regression,
closed-form Hessians, and a NumPy masked per-token cross-entropy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import r2_score

from jaxreg import data, evaluate, fit, sharpness, tasks
from jaxreg.losses import classification_loss


def _linear(params, x, **_):
    return x @ params["w"] + params["b"]


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=80)).astype(np.float32)
    return x, y


def test_regression_through_fit_evaluate_and_top_eigenvalues(regression_data):
    x, y = regression_data
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    result = fit(
        _linear,
        params,
        optax.sgd(0.1),
        (x, y),
        key=jax.random.key(0),
        num_epochs=300,
        batch_size=len(y),
        eval_data=(x[:20], y[:20]),
        task=tasks.regression(),
    )
    assert {"train_loss", "train_rmse", "train_r2", "eval_rmse", "eval_r2"} <= set(result.history)
    design = np.hstack([x, np.ones((len(y), 1))]).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(result.params["w"], solution[:3], atol=1e-3)
    np.testing.assert_allclose(result.params["b"], solution[3], atol=1e-3)

    measured = evaluate(_linear, result.params, x, y, task=tasks.regression(), batch_size=32)
    predictions = np.asarray(_linear(result.params, x))
    mse = np.mean((predictions - y) ** 2)
    np.testing.assert_allclose(measured["loss"], mse, rtol=1e-4)
    np.testing.assert_allclose(measured["rmse"], np.sqrt(mse), rtol=1e-4)
    np.testing.assert_allclose(measured["r2"], r2_score(y, predictions), rtol=1e-4)

    # Hessian of mean squared error of a linear model: 2·DᵀD/n, exactly.
    loss_fn = classification_loss(_linear, tasks.regression().loss)
    top, _, _ = sharpness.top_eigenvalues(
        loss_fn, result.params, data.batches(x, y, 32), key=jax.random.key(1), k=2, num_iters=4
    )
    exact = np.sort(np.linalg.eigvalsh(2 * design.T @ design / len(y)))[::-1][:2]
    np.testing.assert_allclose(top, exact, rtol=1e-4)


def _tagger(params, x, **_):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]  # (n, T, F) -> (n, T, K)


def _numpy_masked_token_loss(logits, labels, ignore=-1):
    logits = np.asarray(logits, np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    losses, hits = [], []
    for row_logp, row_logits, row_labels in zip(log_probs, logits, labels, strict=True):
        valid = row_labels != ignore
        if not valid.any():
            losses.append(0.0)
            hits.append(0.0)
            continue
        picked = row_logp[valid, row_labels[valid]]
        losses.append(-picked.mean())
        hits.append((row_logits[valid].argmax(-1) == row_labels[valid]).mean())
    return np.mean(losses), np.mean(hits)


def test_masked_sequence_classification_through_fit_evaluate_and_top_eigenvalues():
    key = jax.random.key(0)
    x = jax.random.normal(key, (48, 7, 5))
    labels = np.asarray(jnp.argmax(x[..., :4], axis=-1))
    lengths = np.random.default_rng(0).integers(2, 8, size=48)
    labels = np.where(np.arange(7)[None, :] < lengths[:, None], labels, -1)  # padded tokens
    params = {
        "w1": jax.random.normal(jax.random.key(1), (5, 16)) * 0.3,
        "w2": jax.random.normal(jax.random.key(2), (16, 4)) * 0.3,
    }
    task = tasks.sequence_classification()
    before = evaluate(_tagger, params, x, labels, task=task)
    expected_loss, expected_accuracy = _numpy_masked_token_loss(_tagger(params, x), labels)
    np.testing.assert_allclose(before["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(before["accuracy"], expected_accuracy, rtol=1e-6)

    result = fit(
        _tagger,
        params,
        optax.adam(0.05),
        (x, labels),
        key=key,
        num_epochs=30,
        batch_size=16,
        task=task,
    )
    assert float(result.history["train_accuracy"][-1]) > 0.9
    assert float(result.history["train_loss"][-1]) < float(before["loss"]) / 3

    loss_fn = classification_loss(_tagger, task.loss)
    batches = data.batches(x, jnp.asarray(labels), 16)
    flat, unravel = jax.flatten_util.ravel_pytree(result.params)
    dense = jax.jit(jax.hessian(lambda v: loss_fn(unravel(v), {"x": x, "y": jnp.asarray(labels)})))(
        flat
    )
    exact = np.sort(np.linalg.eigvalsh(np.asarray(dense, np.float64)))[::-1][:1]
    top, _, _ = sharpness.top_eigenvalues(
        loss_fn, result.params, batches, key=jax.random.key(3), k=1, num_iters=40
    )
    np.testing.assert_allclose(top, exact, rtol=1e-3)
    with pytest.raises(ValueError, match="labels outside"):
        fit(
            _tagger,
            params,
            optax.adam(0.05),
            (x, np.where(labels == 3, 9, labels)),
            key=key,
            num_epochs=1,
            batch_size=16,
            task=task,
        )


def test_regression_targets_are_checked_against_the_output_shape(regression_data):
    x, y = regression_data
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    with pytest.raises(ValueError, match="train labels"):
        fit(
            _linear,
            params,
            optax.sgd(0.1),
            (x, np.stack([y, y], 1)),
            key=jax.random.key(0),
            num_epochs=1,
            batch_size=20,
            task=tasks.regression(),
        )
