"""Laplace, the evidence and the predictive against closed forms (float64).

For a linear model with Gaussian noise the Laplace approximation is exact: the
evidence is ``log N(y; 0, σ²I + Σ_g X_g X_gᵀ/δ_g)`` (scipy), the posterior
predictive is Gaussian with ``xᵀΣx + σ²``, and the evidence's maximizer can be
found by a scalar optimizer on that closed form.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize, stats

from jaxreg import laplace, masks, penalties, sweeps
from jaxreg.data import batches


def _linear(params, x):
    return x @ params["w"] + params["b"]


def _regression_problem(n=30):
    x = np.asarray(jax.random.normal(jax.random.key(0), (n, 3), jnp.float64))
    y = (
        x @ np.array([1.0, -2.0, 0.5])
        + 0.3
        + 0.4 * np.asarray(jax.random.normal(jax.random.key(1), (n,), jnp.float64))
    )
    return x, y


def _map(x, y, delta_w, delta_b, sigma):
    design = np.hstack([np.ones((len(x), 1)), x])  # ravel order: b then w
    prior = np.diag([delta_b] + [delta_w] * 3)
    theta = np.linalg.solve(design.T @ design / sigma**2 + prior, design.T @ y / sigma**2)
    return {"b": jnp.asarray(theta[:1]), "w": jnp.asarray(theta[1:])}, design, prior


def _closed_form_evidence(x, y, delta_w, delta_b, sigma):
    cov = sigma**2 * np.eye(len(x)) + x @ x.T / delta_w + np.ones((len(x), len(x))) / delta_b
    return stats.multivariate_normal(np.zeros(len(x)), cov).logpdf(y)


@pytest.mark.parametrize("per_group", [False, True])
def test_evidence_of_a_linear_gaussian_model_is_the_closed_form(x64, per_group):
    x, y = _regression_problem()
    delta_w, delta_b, sigma = 2.0, (0.5 if per_group else 2.0), 0.7
    params, _, _ = _map(x, y, delta_w, delta_b, sigma)
    data = batches(jnp.asarray(x), jnp.asarray(y), 8)  # padded last batch
    la = laplace.fit_laplace(_linear, params, data, likelihood="regression")
    prior = jnp.array([delta_b, delta_w]) if per_group else delta_w
    got = laplace.log_marginal_likelihood(la, prior, sigma_noise=sigma)
    np.testing.assert_allclose(
        got, _closed_form_evidence(x, y, delta_w, delta_b, sigma), rtol=1e-10
    )


def test_diag_laplace_equals_full_when_the_curvature_is_diagonal(x64):
    x = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(2), (20, 3), jnp.float64)))[0] * 3
    y = x @ np.array([1.0, 2.0, -1.0])
    data = batches(jnp.asarray(x), jnp.asarray(y), 20)
    w = jnp.asarray(np.linalg.solve(x.T @ x + np.eye(3), x.T @ y))
    apply = lambda w, x: x @ w  # noqa: E731
    full = laplace.fit_laplace(apply, w, data, likelihood="regression")
    diag = laplace.fit_laplace(apply, w, data, likelihood="regression", structure="diag")
    for prior in (0.3, 3.0):
        np.testing.assert_allclose(
            laplace.log_marginal_likelihood(diag, prior),
            laplace.log_marginal_likelihood(full, prior),
            rtol=1e-10,
        )
    # A correlated design: the diagonal drops the off-diagonal curvature, and the evidence moves.
    x2 = x + x[:, :1]
    data2 = batches(jnp.asarray(x2), jnp.asarray(y), 20)
    full2 = laplace.fit_laplace(apply, w, data2, likelihood="regression")
    diag2 = laplace.fit_laplace(apply, w, data2, likelihood="regression", structure="diag")
    assert (
        abs(
            float(
                laplace.log_marginal_likelihood(diag2, 1.0)
                - laplace.log_marginal_likelihood(full2, 1.0)
            )
        )
        > 0.1
    )


def test_glm_predictive_of_a_linear_model_is_the_exact_posterior_predictive(x64):
    x, y = _regression_problem()
    sigma, delta = 0.5, 1.5
    params, design, prior = _map(x, y, delta, delta, sigma)
    la = laplace.fit_laplace(
        _linear, params, batches(jnp.asarray(x), jnp.asarray(y), 7), likelihood="regression"
    )
    covariance = np.linalg.inv(design.T @ design / sigma**2 + prior)
    x_new = np.asarray(jax.random.normal(jax.random.key(3), (5, 3), jnp.float64))
    design_new = np.hstack([np.ones((5, 1)), x_new])
    mean = design_new @ np.concatenate([params["b"], params["w"]])
    variance = np.einsum("np,pq,nq->n", design_new, covariance, design_new) + sigma**2
    for prior_precision in (delta, jnp.array([delta, delta])):
        pred = laplace.glm_predictive(
            la, _linear, x_new, prior_precision=prior_precision, sigma_noise=sigma
        )
        np.testing.assert_allclose(pred.mean[:, 0], mean, rtol=1e-10)
        np.testing.assert_allclose(pred.variance[:, 0], variance, rtol=1e-10)
    sampled = laplace.sample_predictive(
        la,
        _linear,
        x_new,
        prior_precision=delta,
        sigma_noise=sigma,
        key=jax.random.key(4),
        num_samples=4000,
    )
    np.testing.assert_allclose(sampled.mean[:, 0], mean, atol=4 * np.sqrt(variance.max() / 4000))
    np.testing.assert_allclose(sampled.variance[:, 0], variance, rtol=0.1)


@functools.cache
def _classifier():
    """A 3-class linear softmax model at its L2-regularized optimum (L-BFGS, compiled)."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(5), (60, 2), jnp.float64)
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32) + (x[:, 1] > 1).astype(jnp.int32)
        params = {"w": jnp.zeros((2, 3), jnp.float64), "b": jnp.zeros(3, jnp.float64)}

        def objective(p):
            loss = optax.softmax_cross_entropy_with_integer_labels(_linear(p, x), y)
            return jnp.mean(loss) + 0.02 * penalties.l2(p)

        solver = optax.lbfgs()

        def step(carry, _):
            params, state = carry
            value, grads = optax.value_and_grad_from_state(objective)(params, state=state)
            updates, state = solver.update(
                grads, state, params, value=value, grad=grads, value_fn=objective
            )
            return (optax.apply_updates(params, updates), state), None

        run = jax.jit(lambda p: jax.lax.scan(step, (p, solver.init(p)), None, length=60)[0][0])
        return x, y, run(params)


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_probit_predictive_uses_the_dense_posterior_covariance(x64, structure):
    x, y, params = _classifier()
    la = laplace.fit_laplace(_linear, params, batches(x, y, 16), structure=structure)
    delta = 1.2
    precision = laplace.posterior_precision_matrix(la, delta)
    covariance = np.linalg.inv(precision) if structure == "full" else np.diag(1 / precision)
    x_new = x[:4]
    # Jacobian of the logits in (b, w) ravel order: ∂f_c/∂b_c = 1, ∂f_c/∂w_{ic} = x_i.
    jac = np.zeros((4, 3, 9))
    for c in range(3):
        jac[:, c, c] = 1.0
        jac[:, c, 3 + np.arange(2) * 3 + c] = x_new
    f_var = np.einsum("ncp,pq,ndq->ncd", jac, covariance, jac)
    kappa = 1 / np.sqrt(1 + np.pi / 8 * np.diagonal(f_var, axis1=1, axis2=2))
    expected = jax.nn.softmax(kappa * _linear(params, x_new))
    pred = laplace.glm_predictive(la, _linear, x_new, prior_precision=delta)
    np.testing.assert_allclose(pred.mean, expected, rtol=1e-10)
    mc = laplace.glm_predictive(
        la,
        _linear,
        x_new,
        prior_precision=delta,
        link="mc",
        key=jax.random.key(6),
        num_samples=20000,
    )
    rng = np.random.default_rng(0)
    logits = np.asarray(_linear(params, x_new))
    reference = np.stack(
        [
            jax.nn.softmax(rng.multivariate_normal(logits[n], f_var[n], size=20000)).mean(0)
            for n in range(4)
        ]
    )
    np.testing.assert_allclose(mc.mean, reference, atol=0.01)  # two Monte-Carlo integrals
    assert np.max(np.abs(pred.mean - reference)) > 0.01  # probit is an approximation of it


def test_mackay_and_gradient_ascent_find_the_closed_form_maximum(x64):
    x, y = _regression_problem()
    sigma = 0.4
    delta_true = optimize.minimize_scalar(
        lambda log_d: -_closed_form_evidence(x, y, np.exp(log_d), np.exp(log_d), sigma),
        bounds=(-8, 8),
        method="bounded",
        options={"xatol": 1e-10},
    ).x
    # The Laplace evidence is exact at the MAP of each δ; at a fixed MAP, its maximizer is
    # a fixed point of refitting, so iterate fit → optimize a few times.
    data = batches(jnp.asarray(x), jnp.asarray(y), 10)

    @jax.jit
    def refit(params, delta):
        la = laplace.fit_laplace(_linear, params, data, likelihood="regression")
        return la, laplace.optimize_prior_precision(
            la, method="mackay", num_steps=50, init=delta, sigma_noise=sigma
        )

    delta = 1.0
    for _ in range(30):
        la, delta = refit(_map(x, y, delta, delta, sigma)[0], delta)
        delta = float(delta)
    np.testing.assert_allclose(np.log(delta), delta_true, atol=1e-6)
    gradient = laplace.optimize_prior_precision(
        la, method="gradient", num_steps=400, init=0.5, sigma_noise=sigma
    )
    np.testing.assert_allclose(gradient, delta, rtol=1e-3)
    per_group = laplace.optimize_prior_precision(
        la, method="mackay", per_group=True, num_steps=200, sigma_noise=sigma
    )
    by_gradient = laplace.optimize_prior_precision(
        la, method="gradient", per_group=True, num_steps=1500, sigma_noise=sigma
    )
    np.testing.assert_allclose(per_group, by_gradient, rtol=2e-2)
    ascent = jax.grad(lambda d: laplace.log_marginal_likelihood(la, d, sigma))(per_group)
    np.testing.assert_allclose(ascent * per_group, 0.0, atol=1e-6)  # a stationary point


def test_last_layer_laplace_of_an_mlp_matches_its_block(x64):
    def mlp(p, x):
        return jnp.tanh(x @ p["hidden"]) @ p["out"]["w"] + p["out"]["b"]

    x, y, _ = _classifier()
    params = {
        "hidden": jax.random.normal(jax.random.key(7), (2, 4), jnp.float64),
        "out": {"w": jax.random.normal(jax.random.key(8), (4, 3), jnp.float64), "b": jnp.zeros(3)},
    }
    data = batches(x, y, 16)
    last = laplace.fit_laplace(mlp, params, data, wrt=masks.by_path(r"^out/"))
    full = laplace.fit_laplace(mlp, params, data)
    assert last.group_names == ("out/b", "out/w") and last.num_params == 15
    np.testing.assert_allclose(last.curvature, full.curvature[-15:, -15:], rtol=1e-12)
    np.testing.assert_allclose(last.mean, full.mean[-15:])


def test_weight_decay_conventions_train_to_the_map_of_the_mapped_prior(x64):
    x, y, _ = _classifier()
    n, decay, lr = x.shape[0], 0.05, 0.5
    data = batches(x, y, n)

    def train(tx, steps, penalty=0.0):
        def loss(p):
            logits = _linear(p, x)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)) + (
                penalty * penalties.l2(p)
            )

        def step(carry, _):
            params, state = carry
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return (optax.apply_updates(params, updates), state), None

        params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
        return jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[0][0])(
            params
        )

    def log_joint_gradient(params, delta):
        la = laplace.fit_laplace(_linear, params, data)
        grad = jax.grad(
            lambda p: (
                -jnp.sum(optax.softmax_cross_entropy_with_integer_labels(_linear(p, x), y))
                - 0.5 * delta * 2 * penalties.l2(p)
            )
        )(params)
        return np.max(np.abs(jax.flatten_util.ravel_pytree(grad)[0])), la

    from jaxreg.transforms import decoupled_weight_decay

    runs = {
        "penalty": (train(optax.sgd(lr), 3000, penalty=decay), {}),
        "coupled": (
            train(optax.chain(optax.add_decayed_weights(decay), optax.adam(0.05)), 3000),
            {},
        ),
        "decoupled": (
            train(optax.chain(optax.sgd(lr), decoupled_weight_decay(decay * lr)), 3000),
            {"learning_rate": lr},
        ),
    }
    for convention, (params, extra) in runs.items():
        delta = laplace.prior_precision_from_weight_decay(
            decay * lr if convention == "decoupled" else decay, n, convention=convention, **extra
        )
        np.testing.assert_allclose(delta, n * decay, rtol=1e-12)
        residual, _ = log_joint_gradient(params, delta)
        assert residual < 1e-5, (convention, residual)
        wrong, _ = log_joint_gradient(params, 2 * delta)
        assert wrong > 100 * residual
        back = laplace.weight_decay_from_prior_precision(delta, n, convention=convention, **extra)
        np.testing.assert_allclose(
            back, decay * lr if convention == "decoupled" else decay, rtol=1e-12
        )
    with pytest.raises(ValueError, match="AdamW"):
        laplace.prior_precision_from_weight_decay(0.1, n, convention="adamw")
    with pytest.raises(ValueError, match="learning_rate"):
        laplace.prior_precision_from_weight_decay(0.1, n, convention="decoupled")


def test_evidence_tuning_of_a_weight_decay_grid_runs_as_one_sweep():
    x = jax.random.normal(jax.random.key(9), (64, 4))
    y = (x[:, 0] - x[:, 1] > 0).astype(jnp.int32)
    data = batches(x, y, 32)

    def mlp(p, x):
        return jnp.tanh(x @ p["hidden"]) @ p["out"]

    def train_fn(config, key):
        params = {"hidden": 0.5 * jax.random.normal(key, (4, 8)), "out": jnp.zeros((8, 2))}
        tx = optax.sgd(0.3)

        def objective(p):
            loss = optax.softmax_cross_entropy_with_integer_labels(mlp(p, x), y)
            return jnp.mean(loss) + config["weight_decay"] * penalties.l2(p)

        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(objective)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        params = jax.lax.scan(step, (params, tx.init(params)), None, length=200)[0][0]
        la = laplace.fit_laplace(mlp, params, data, structure="diag")
        delta = laplace.prior_precision_from_weight_decay(config["weight_decay"], 64)
        return {
            "evidence": laplace.log_marginal_likelihood(la, delta),
            "tuned": laplace.optimize_prior_precision(la, method="mackay", num_steps=30),
        }

    counted = chex.assert_max_traces(train_fn, n=1)
    configs = sweeps.grid(weight_decay=[1e-3, 1e-2, 1e-1])
    result = sweeps.run(counted, configs, key=jax.random.key(10), seeds=2, progress=False)
    assert result.metrics["evidence"].shape == (6,) and not result.failed.any()
    one = jax.jit(train_fn)(
        {"weight_decay": jnp.float32(1e-2)}, jax.random.split(jax.random.key(10), 2)[1]
    )
    np.testing.assert_allclose(result.metrics["evidence"][3], one["evidence"], rtol=1e-4)
    np.testing.assert_allclose(result.metrics["tuned"][3], one["tuned"], rtol=1e-4)


def test_laplace_errors_name_the_argument():
    x = jnp.ones((4, 2))
    data = batches(x, jnp.zeros(4, jnp.int32), 2)
    apply = lambda w, x: x @ w  # noqa: E731
    with pytest.raises(ValueError, match="structure must be one of"):
        laplace.fit_laplace(apply, jnp.zeros((2, 2)), data, structure="kfac")
    with pytest.raises(ValueError, match="params has no dense layer"):
        laplace.fit_laplace(apply, jnp.zeros((2, 2)), data, structure="kron")
    la = laplace.fit_laplace(apply, jnp.zeros((2, 2)), data)
    with pytest.raises(ValueError, match="one value per group"):
        laplace.log_marginal_likelihood(la, jnp.ones(3))
    with pytest.raises(ValueError, match="method must be"):
        laplace.optimize_prior_precision(la, method="grid")
    with pytest.raises(ValueError, match="link must be"):
        laplace.glm_predictive(la, apply, x, prior_precision=1.0, link="logit")
    with pytest.raises(ValueError, match="needs key"):
        laplace.glm_predictive(la, apply, x, prior_precision=1.0, link="mc")


def test_online_marglik_reaches_a_fixed_point_of_training_and_evidence_and_vmaps():
    x = jax.random.normal(jax.random.key(11), (96, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * jax.random.normal(jax.random.key(12), (96,)) > 0).astype(
        jnp.int32
    )

    def apply(w, x, **_):
        return x @ w

    def run(init):
        return laplace.online_marglik(
            apply,
            jnp.zeros((3, 2)),
            optax.adam(0.05),
            (x, y),
            key=jax.random.key(13),
            num_rounds=6,
            epochs_per_round=20,
            batch_size=96,
            init_prior_precision=init,
            structure="full",
            hyper_steps=200,
        )

    result = jax.jit(run)(1.0)
    history = np.asarray(result.precision_history)
    assert abs(np.log(history[-1]) - np.log(history[-2])) < 0.05, history  # converged
    # The learned prior maximizes the evidence at the parameters it trained...
    best = laplace.optimize_prior_precision(result.laplace, method="mackay", num_steps=100)
    np.testing.assert_allclose(result.prior_precision, best, rtol=1e-2)
    # ... and the parameters are (nearly) the MAP under it.
    delta = float(history[-2])

    def neg_log_joint(w):
        loss = optax.softmax_cross_entropy_with_integer_labels(apply(w, x), y)
        return jnp.sum(loss) + 0.5 * delta * jnp.sum(w**2)

    at_start = jnp.linalg.norm(jax.grad(neg_log_joint)(jnp.zeros((3, 2))))
    assert float(jnp.linalg.norm(jax.grad(neg_log_joint)(result.params)) / at_start) < 0.01
    both = jax.jit(jax.vmap(run))(jnp.array([1.0, 30.0]))
    np.testing.assert_allclose(both.precision_history[0], history, rtol=1e-4)
    # From a 30× different start it learns (nearly) the same prior.
    np.testing.assert_allclose(both.prior_precision[1], result.prior_precision, rtol=0.05)


@pytest.mark.parametrize("per_group", [False, True])
def test_noise_and_prior_maximize_the_regression_evidence_like_scipy(x64, per_group):
    x, y = _regression_problem(n=60)
    params, _, _ = _map(x, y, 1.0, 1.0, 0.4)
    la = laplace.fit_laplace(_linear, params, batches(jnp.asarray(x), jnp.asarray(y), 16),
                             likelihood="regression")  # fmt: skip
    groups = 2 if per_group else 1

    def negative(logs):
        delta = np.exp(logs[:groups]) if per_group else np.exp(logs[0])
        return -float(laplace.log_marginal_likelihood(la, delta, np.exp(logs[-1])))

    tolerances = {"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}
    best = optimize.minimize(negative, np.zeros(groups + 1), method="Nelder-Mead",
                             options=tolerances)  # fmt: skip
    for method, steps in (("mackay", 500), ("gradient", 3000)):
        tuned = laplace.optimize_noise_and_prior(la, method=method, per_group=per_group,
                                                 num_steps=steps)  # fmt: skip
        got = np.log(np.append(np.atleast_1d(tuned.prior_precision), tuned.sigma_noise))
        np.testing.assert_allclose(got, best.x, atol=2e-3)
    with pytest.raises(ValueError, match="likelihood='regression'"):
        classifier = laplace.fit_laplace(
            _linear, params, batches(jnp.asarray(x), jnp.zeros(60, int), 16)
        )
        laplace.optimize_noise_and_prior(classifier)
