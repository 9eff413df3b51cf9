"""Noise injection against closed forms: input noise on a linear model is L2 regularization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import masks, noise


@pytest.fixture(scope="module")
def linear_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    w_true = np.array([1.0, -2.0, 0.5, 0.0, 3.0], np.float32)
    y = (x @ w_true + 0.3 * rng.normal(size=200)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def test_expected_noisy_squared_error_is_mse_plus_sigma2_norm2(linear_problem):
    x, y = linear_problem
    w = jnp.array([0.8, -1.5, 0.3, 0.2, 2.5])
    sigma, draws = 0.7, 4000

    def noisy_mse(key):
        return jnp.mean((y - noise.gaussian_input_noise(key, x, sigma) @ w) ** 2)

    samples = np.asarray(jax.vmap(noisy_mse)(jax.random.split(jax.random.key(0), draws)))
    closed_form = float(jnp.mean((y - x @ w) ** 2) + sigma**2 * jnp.sum(w**2))
    standard_error = samples.std(ddof=1) / np.sqrt(draws)
    print(f"MC {samples.mean():.4f} ± {standard_error:.4f}, closed form {closed_form:.4f}")
    assert abs(samples.mean() - closed_form) < 3 * standard_error


def test_least_squares_on_noisy_inputs_converges_to_ridge(linear_problem):
    """min E(1/2n)||y-(X+E)w||² = (1/2n)||y-Xw||² + σ²·½||w||²: ridge with λ = σ²."""
    x, y = linear_problem
    n = x.shape[0]
    sigma, replicas, lr, steps = 1.0, 64, 0.05, 4000
    ridge = np.linalg.solve(np.asarray(x.T @ x) / n + sigma**2 * np.eye(5), np.asarray(x.T @ y) / n)

    def loss(w, key):
        noisy = noise.gaussian_input_noise(key, jnp.broadcast_to(x, (replicas, *x.shape)), sigma)
        return jnp.mean((noisy @ w - y) ** 2) / 2

    def step(w, key):
        w = w - lr * jax.grad(loss)(w, key)
        return w, w

    _, path = jax.lax.scan(step, jnp.zeros(5), jax.random.split(jax.random.key(1), steps))
    averaged = np.asarray(path[steps // 2 :].mean(0))  # Polyak averaging removes the SGD noise
    print("noisy training", averaged.round(4), "ridge", ridge.round(4))
    np.testing.assert_allclose(averaged, ridge, rtol=0.02, atol=0.01)
    ols = np.linalg.lstsq(np.asarray(x), np.asarray(y), rcond=None)[0]
    assert np.linalg.norm(averaged) < np.linalg.norm(ols)  # shrinkage, as ridge


def test_multiplicative_noise_moments():
    x = jnp.full((20000,), 2.0)
    out = noise.multiplicative_input_noise(jax.random.key(0), x, 0.5)
    assert abs(float(out.mean()) - 2.0) < 4 * 1.0 / np.sqrt(20000)
    assert abs(float(out.std()) - 1.0) < 0.03


def test_weight_noise_respects_mask_and_key():
    params = {"w": jnp.ones((50, 50)), "b": jnp.ones(50)}
    a = noise.weight_noise(jax.random.key(0), params, 0.1, masks.weights_only)
    b = noise.weight_noise(jax.random.key(0), params, 0.1, masks.weights_only)
    c = noise.weight_noise(jax.random.key(1), params, 0.1, masks.weights_only)
    np.testing.assert_array_equal(a["b"], params["b"])
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(a["w"], c["w"])
    assert abs(float((a["w"] - 1).std()) - 0.1) < 0.005
    # Multiplicative noise scales with each weight (w·(1 + σε)); additive would not.
    scales = jnp.linspace(-3.0, 3.0, 50)
    varied = {"w": jnp.ones((50, 50)) * scales[:, None], "b": scales}
    m = noise.weight_noise(jax.random.key(0), varied, 0.1, multiplicative=True)
    relative = np.asarray((m["w"] - varied["w"]) / varied["w"])
    assert abs(relative.std() - 0.1) < 0.005
    spread = np.asarray(m["w"] - varied["w"]).std(axis=1)
    np.testing.assert_allclose(spread, 0.1 * np.abs(np.asarray(scales)), rtol=0.5)


def test_traced_sigma_under_vmap():
    x = jnp.ones((3, 4))
    outs = jax.jit(jax.vmap(lambda s: noise.gaussian_input_noise(jax.random.key(0), x, s)))(
        jnp.array([0.0, 1.0])
    )
    np.testing.assert_array_equal(outs[0], x)
    assert not np.array_equal(outs[1], x)


def test_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        noise.gaussian_input_noise(jax.random.key(0), jnp.ones(3), -0.1)
    with pytest.raises(ValueError, match="sigma"):
        noise.weight_noise(jax.random.key(0), {"w": jnp.ones(2)}, -1.0)
