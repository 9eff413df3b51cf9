"""Proximal operators against closed forms, their defining objective, and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize
from sklearn.linear_model import ElasticNet, Lasso, Ridge

from jaxreg import penalties, prox
from jaxreg.solvers import proximal_gradient


@settings(max_examples=20, deadline=None)
@given(
    w=arrays(np.float32, 6, elements=st.floats(-3, 3, width=32)),
    t=st.floats(0.0, 2.0),
    ratio=st.floats(0.0, 1.0),
)
def test_prox_minimizes_its_documented_objective(w, t, ratio):
    """prox_f(w, t) = argmin ½||z-w||² + t·f(z), with f exactly the penalty function."""
    # The objective is minimized in NumPy (hundreds of evaluations); each NumPy penalty is
    # checked against jaxreg's at the prox point, so f is the penalty the module defines.
    cases = [
        (prox.l1({"w": w}, t)["w"], lambda z: np.sum(np.abs(z)), lambda z: penalties.l1(z)),
        (prox.l2({"w": w}, t)["w"], lambda z: 0.5 * np.sum(z**2), lambda z: penalties.l2(z)),
        (
            prox.elastic_net({"w": w}, t, ratio)["w"],
            lambda z: ratio * np.sum(np.abs(z)) + (1 - ratio) * 0.5 * np.sum(z**2),
            lambda z: penalties.elastic_net(z, ratio),
        ),
        (
            prox.group_lasso({"w": w.reshape(3, 2)}, t)["w"].ravel(),
            lambda z: np.sum(np.linalg.norm(z.reshape(3, 2), axis=0)),
            lambda z: penalties.group_lasso(z.reshape(3, 2)),
        ),
    ]
    for z_star, f, jaxreg_f in cases:
        z_star = np.asarray(z_star, np.float64)
        np.testing.assert_allclose(
            float(jaxreg_f(jnp.asarray(z_star, jnp.float32))), f(z_star), rtol=1e-5, atol=1e-5
        )

        def objective(z, f=f):
            return 0.5 * np.sum((z - w) ** 2) + t * f(z)

        best = objective(z_star)
        # No random perturbation of the prox point does better.
        rng = np.random.default_rng(0)
        for _ in range(20):
            trial = z_star + rng.normal(scale=0.05, size=z_star.shape)
            assert best <= objective(trial) + 1e-4
        numeric = minimize(objective, w, method="Powell", options={"xtol": 1e-8, "ftol": 1e-12})
        assert best <= numeric.fun + 1e-4


def test_soft_threshold_closed_form_and_masks():
    params = {"w": jnp.array([-2.0, -0.3, 0.0, 0.3, 2.0]), "b": jnp.array([0.1, -5.0])}
    out = prox.l1(params, 0.5, mask={"w": True, "b": False})
    np.testing.assert_array_equal(out["w"], [-1.5, 0.0, 0.0, 0.0, 1.5])
    assert out["b"] is params["b"] or np.array_equal(out["b"], params["b"])
    with pytest.raises(ValueError, match="threshold"):
        prox.l1(params, -0.1)
    with pytest.raises(ValueError, match="l1_ratio"):
        prox.elastic_net(params, 0.1, 2.0)


def test_group_lasso_zeroes_whole_groups():
    w = jnp.array([[3.0, 0.1, 0.0], [4.0, 0.1, 0.0]])
    out = prox.group_lasso({"w": w}, 1.0)["w"]
    np.testing.assert_allclose(out[:, 0], np.array([3.0, 4.0]) * (1 - 1 / 5), rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1:], 0.0)


def _fista(x, y, prox_step, num_iters=20000):
    """FISTA on (1/2n)||y - Xw||² with step 1/L, float64 (L from an exact eigendecomposition)."""
    n = x.shape[0]
    step = 1.0 / np.linalg.eigvalsh(x.T @ x / n).max()
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def smooth_loss(w):
        return jnp.sum((xj @ w - yj) ** 2) / (2 * n)

    w = proximal_gradient(
        smooth_loss, prox_step, jnp.zeros(x.shape[1]), step_size=step, num_iters=num_iters
    )
    return np.asarray(w)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 8.0])
def test_proximal_gradient_with_prox_l1_reaches_sklearn_lasso(x64, diabetes, alpha):
    x, y = diabetes
    reference = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(x, y).coef_
    ours = _fista(x, y, lambda w, s: prox.l1(w, s * alpha))
    np.testing.assert_array_equal(ours == 0.0, reference == 0.0)
    assert np.sum(reference == 0.0) >= 1
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-8 * np.abs(reference).max())


@pytest.mark.parametrize(("alpha", "l1_ratio"), [(1.0, 0.5), (4.0, 0.9)])
def test_proximal_gradient_with_prox_elastic_net_reaches_sklearn(x64, diabetes, alpha, l1_ratio):
    x, y = diabetes
    reference = (
        ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, tol=1e-14, max_iter=10**6)
        .fit(x, y)
        .coef_
    )
    ours = _fista(x, y, lambda w, s: prox.elastic_net(w, s * alpha, l1_ratio))
    np.testing.assert_array_equal(ours == 0.0, reference == 0.0)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-8 * np.abs(reference).max())


def test_gradient_descent_on_l2_penalty_reaches_sklearn_ridge(x64, diabetes):
    """Ridge minimizes ||y-Xw||² + α||w||²  ⇔  (1/2n)||y-Xw||² + (α/n)·penalties.l2(w)."""
    x, y = diabetes
    alpha = 50.0
    n = x.shape[0]
    reference = Ridge(alpha=alpha, fit_intercept=False, solver="cholesky").fit(x, y).coef_

    def objective(w):
        return jnp.mean((jnp.asarray(x) @ w - y) ** 2) / 2 + alpha / n * penalties.l2({"w": w})

    grad = jax.jit(jax.grad(objective))
    step = 1.0 / (np.linalg.eigvalsh(x.T @ x / n).max() + alpha / n)
    w = jax.lax.fori_loop(0, 20000, lambda _, w: w - step * grad(w), jnp.zeros(x.shape[1]))
    np.testing.assert_allclose(w, reference, rtol=1e-5)
    assert not np.any(np.asarray(w) == 0.0)


def test_ista_and_fista_agree_on_a_quadratic_with_a_closed_form():
    """min ½||w - c||² + α||w||₁ is soft(c, α); both variants reach it."""
    c = jnp.array([3.0, -0.4, 0.0, -2.5])

    def loss(w):
        return 0.5 * jnp.sum((w - c) ** 2)

    for accelerated in (True, False):
        w = proximal_gradient(
            loss,
            lambda v, s: prox.l1(v, s * 0.5),
            jnp.zeros(4),
            step_size=0.5,
            num_iters=200,
            accelerated=accelerated,
        )
        np.testing.assert_allclose(w, [2.5, 0.0, 0.0, -2.0], atol=1e-6)
    with pytest.raises(ValueError, match="num_iters"):
        proximal_gradient(loss, lambda v, s: v, c, step_size=0.1, num_iters=-1)


def test_every_prox_leaves_unselected_leaves_alone():
    params = {"w": jnp.array([[3.0, 0.1], [4.0, 0.1]]), "b": jnp.array([0.1, -5.0])}
    only_w = {"w": True, "b": False}
    for out in (
        prox.l2(params, 1.0, mask=only_w),
        prox.elastic_net(params, 1.0, 0.5, mask=only_w),
        prox.group_lasso(params, 1.0, mask=only_w),
    ):
        np.testing.assert_array_equal(out["b"], params["b"])
        assert not np.array_equal(out["w"], params["w"])


def test_group_lasso_groups_along_the_given_axis_and_shrinks_small_groups_by_their_norm():
    w = jnp.array([[0.3, 0.0, 0.4], [0.0, 0.0, 0.0]])  # rows (group_axis=0): norms 0.5 and 0
    out = prox.group_lasso({"w": w}, 0.1, group_axis=0)["w"]
    np.testing.assert_allclose(out[0], np.array([0.3, 0.0, 0.4]) * (1 - 0.1 / 0.5), rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(prox.group_lasso({"s": jnp.array(-2.0)}, 0.5)["s"], -1.5)


def test_prox_keeps_each_leafs_dtype_for_a_float64_threshold(x64):
    params = {"w": jnp.array([[3.0, 0.1], [4.0, 0.1]], jnp.float32)}
    threshold = jnp.asarray(0.5, jnp.float64)
    outs = [
        prox.l1(params, threshold),
        prox.l2(params, threshold),
        prox.elastic_net(params, threshold, jnp.asarray(0.5, jnp.float64)),
        prox.group_lasso(params, threshold),
    ]
    assert [out["w"].dtype for out in outs] == [jnp.float32] * 4


def test_every_prox_names_a_negative_threshold():
    params = {"w": jnp.ones(2)}
    for call in (
        lambda: prox.l1(params, -0.1),
        lambda: prox.l2(params, -0.1),
        lambda: prox.elastic_net(params, -0.1, 0.5),
        lambda: prox.group_lasso(params, -0.1),
    ):
        with pytest.raises(ValueError, match=r"^threshold must be non-negative"):
            call()
    with pytest.raises(ValueError, match=r"^l1_ratio must lie in \[0.0, 1.0\]"):
        prox.elastic_net(params, 0.1, 2.0)
