from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn.linear_model import Lasso

from jaxreg import fit, masks, penalties, transforms
from jaxreg.nn import MLP, functional


def _quadratic_problem():
    x = jax.random.normal(jax.random.key(0), (64, 5))
    y = x @ jnp.array([1.0, -2.0, 0.0, 0.5, 0.0]) + 0.1 * jax.random.normal(
        jax.random.key(1), (64,)
    )
    params = {"w": jnp.zeros(5), "b": jnp.zeros(())}

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2) / 2

    return params, loss


def _run(tx, params, loss, steps=50):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params


def test_proximal_l1_transform_is_ista_and_reaches_sklearn_lasso(x64, diabetes):
    x, y = diabetes
    alpha, lr = 2.0, 0.05
    reference = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(x, y).coef_
    tx = optax.chain(optax.sgd(lr), transforms.proximal_l1(alpha, lr))

    def loss(p):
        return jnp.mean((jnp.asarray(x) @ p["w"] - y) ** 2) / 2

    w = _run(tx, {"w": jnp.zeros(x.shape[1])}, loss, steps=20000)["w"]
    np.testing.assert_array_equal(w == 0.0, reference == 0.0)
    np.testing.assert_allclose(w, reference, rtol=1e-5, atol=1e-8 * np.abs(reference).max())


def test_decoupled_weight_decay_equals_l2_under_sgd_and_differs_under_adam():
    params, loss = _quadratic_problem()
    lr, lam = 0.1, 0.3

    def penalized(p):
        return loss(p) + lam * penalties.l2(p)

    sgd_decoupled = _run(
        optax.chain(optax.sgd(lr), transforms.decoupled_weight_decay(lr * lam)), params, loss
    )
    sgd_penalty = _run(optax.sgd(lr), params, penalized)
    chex.assert_trees_all_close(sgd_decoupled, sgd_penalty, rtol=1e-5, atol=1e-6)

    adam_decoupled = _run(
        optax.chain(optax.adam(lr), transforms.decoupled_weight_decay(lr * lam)), params, loss
    )
    adam_penalty = _run(optax.adam(lr), params, penalized)
    gap = float(jnp.max(jnp.abs(adam_decoupled["w"] - adam_penalty["w"])))
    print(f"max |decoupled - L2| under Adam: {gap:.4f}")
    assert gap > 1e-2


def test_decoupled_weight_decay_closed_form_with_schedule_and_not_lr():
    params = {"w": jnp.array([2.0])}
    schedule = optax.linear_schedule(1.0, 0.0, 4)
    for lr in (0.1, 1.0):  # the decay must not depend on the optimizer's learning rate
        tx = optax.chain(optax.sgd(lr), transforms.decoupled_weight_decay(0.1, schedule=schedule))
        state = tx.init(params)
        p = params
        for t in range(4):
            updates, state = tx.update({"w": jnp.zeros(1)}, state, p)
            np.testing.assert_allclose(updates["w"], -0.1 * (1 - t / 4) * p["w"], rtol=1e-6)
            p = optax.apply_updates(p, updates)


def test_proximal_zero_stays_zero_unless_the_gradient_pushes_past_the_threshold():
    lr, strength = 0.1, 1.0  # threshold 0.1
    tx = optax.chain(optax.sgd(lr), transforms.proximal_l1(strength, lr))
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([0.5, -0.9, 3.0])}  # sgd step: -0.05, 0.09, -0.3
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)["w"]
    np.testing.assert_array_equal(new[:2], 0.0)
    np.testing.assert_allclose(new[2], -0.2, rtol=1e-6)


def test_proximal_transforms_follow_a_schedule():
    schedule = optax.piecewise_constant_schedule(1.0, {1: 0.1})
    tx = optax.chain(optax.sgd(schedule), transforms.proximal_l1(0.5, schedule))
    params = {"w": jnp.array([2.0])}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.zeros(1)}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], [1.5])
    updates, state = tx.update({"w": jnp.zeros(1)}, state, params)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], [1.45], rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: transforms.decoupled_weight_decay(s, mask=masks.weights_only),
        lambda s: transforms.proximal_l1(s, 0.1, mask=masks.weights_only),
        lambda s: transforms.proximal_elastic_net(s, 0.5, 0.1, mask=masks.weights_only),
        lambda s: transforms.proximal_group_lasso(s, 0.1, mask=masks.weights_only),
        lambda s: transforms.masked_gradient_noise(
            s, 0.55, key=jax.random.key(0), mask=masks.weights_only
        ),
    ],
)
def test_transforms_jit_vmap_once_and_leave_masked_leaves_bitwise(make):
    params = {
        "kernel": jax.random.normal(jax.random.key(0), (4, 3)),
        "bias": jax.random.normal(jax.random.key(1), (3,)),
    }
    grads = jax.tree.map(lambda a: 0.1 * jnp.cos(a), params)
    chex.clear_trace_counter()  # counts are per code object, shared across parametrizations

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(strength):
        tx = optax.chain(optax.sgd(0.1), make(strength))
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    strengths = jnp.array([0.0, 0.5, 2.0])
    swept = jax.vmap(step)(strengths)
    sgd_only = optax.apply_updates(params, jax.tree.map(lambda g: -0.1 * g, grads))
    for i in range(3):
        # Masked (bias) leaf: exactly the plain SGD step, bit for bit.
        np.testing.assert_array_equal(swept["bias"][i], sgd_only["bias"])
        single = step(strengths[i])
        np.testing.assert_allclose(swept["kernel"][i], single["kernel"], rtol=1e-6, atol=1e-7)
    assert not np.array_equal(swept["kernel"][2], sgd_only["kernel"])


def test_adam_with_proximal_l1_gives_exact_zeros_and_the_subgradient_penalty_none(mnist1d_data):
    x_train, y_train, x_test, y_test = mnist1d_data
    apply, params = functional(MLP((40, 100, 100, 10), rngs=nnx.Rngs(0)))
    lr, strength = 1e-3, 0.3
    common = dict(key=jax.random.key(0), num_epochs=30, batch_size=100, eval_data=(x_test, y_test))
    prox_run = fit(
        apply,
        params,
        optax.chain(optax.adam(lr), transforms.proximal_l1(strength, lr, mask=masks.weights_only)),
        (x_train, y_train),
        **common,
    )
    sub_run = fit(
        apply,
        params,
        optax.adam(lr),
        (x_train, y_train),
        penalty=lambda p: penalties.l1(p, masks.weights_only),
        penalty_strength=strength,
        **common,
    )

    def zeros(p):
        kernels = [p["layers"][i]["kernel"] for i in range(3)]
        return sum(int(jnp.sum(k == 0.0)) for k in kernels), sum(k.size for k in kernels)

    prox_zeros, total = zeros(prox_run.params)
    sub_zeros, _ = zeros(sub_run.params)
    print(
        f"exact zeros: proximal {prox_zeros}/{total}, subgradient {sub_zeros}/{total}; "
        f"proximal test acc {float(prox_run.history['eval_accuracy'][-1]):.3f}"
    )
    assert prox_zeros / total > 0.5
    assert sub_zeros == 0
    assert float(prox_run.history["eval_accuracy"][-1]) > 0.3  # still a working classifier


def test_bad_input():
    with pytest.raises(ValueError, match="rate"):
        transforms.decoupled_weight_decay(-1.0)
    with pytest.raises(ValueError, match="strength"):
        transforms.proximal_l1(-0.1, 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        transforms.proximal_l1(0.1, -0.1)
    with pytest.raises(ValueError, match="l1_ratio"):
        transforms.proximal_elastic_net(0.1, -0.5, 0.1)
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    tx = transforms.proximal_l1(0.1, 0.1, mask={"w": True})
    with pytest.raises(ValueError, match="mask"):
        tx.init(params)
    with pytest.raises(ValueError, match="params"):
        plain = transforms.proximal_l1(0.1, 0.1)
        plain.update(params, plain.init(params))


def _ista_through_optax(x, y, transform, num_iters=20000):
    """ISTA on (1/2n)||y - Xw||² as ``optax.chain(optax.sgd(step), transform(step))``."""
    n = x.shape[0]
    step = 1.0 / np.linalg.eigvalsh(x.T @ x / n).max()
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    tx = optax.chain(optax.sgd(step), transform(step))
    grad = jax.grad(lambda w: jnp.sum((xj @ w["w"] - yj) ** 2) / (2 * n))

    def body(_, carry):
        params, state = carry
        updates, state = tx.update(grad(params), state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.zeros(x.shape[1])}
    return jax.lax.fori_loop(0, num_iters, body, (params, tx.init(params)))[0]["w"], grad


def test_proximal_elastic_net_transform_reaches_sklearn_elastic_net(x64, diabetes):
    from sklearn.linear_model import ElasticNet

    x, y = diabetes
    alpha, l1_ratio = 4.0, 0.9
    reference = (
        ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, tol=1e-14, max_iter=10**6)
        .fit(x, y)
        .coef_
    )
    ours, _ = _ista_through_optax(
        x, y, lambda lr: transforms.proximal_elastic_net(alpha, l1_ratio, lr)
    )
    assert np.sum(reference == 0.0) >= 1
    np.testing.assert_array_equal(np.asarray(ours) == 0.0, reference == 0.0)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-7 * np.abs(reference).max())


def test_proximal_group_lasso_transform_satisfies_the_optimality_conditions(x64, diabetes):
    """At the group-lasso optimum: ∇_g L = -λ w_g/‖w_g‖ on non-zero groups, ‖∇_g L‖ ≤ λ on
    zero groups (checked independently of the prox)."""
    x, y = diabetes  # 10 features as 5 groups of 2 (rows of a (5, 2) weight)
    strength = 6.0

    def transform(lr):
        grouped = transforms.proximal_group_lasso(strength, lr, group_axis=0)

        def update(updates, state, params):
            as_groups = lambda t: {"w": t["w"].reshape(5, 2)}  # noqa: E731
            new, state = grouped.update(as_groups(updates), state, as_groups(params))
            return {"w": new["w"].reshape(-1)}, state

        return optax.GradientTransformation(grouped.init, update)

    ours, grad = _ista_through_optax(x, y, transform, num_iters=40000)
    g = np.asarray(grad({"w": ours})["w"]).reshape(5, 2)
    w = np.asarray(ours).reshape(5, 2)
    norms = np.linalg.norm(w, axis=1)
    zero = norms == 0.0
    assert zero.any() and (~zero).any()
    np.testing.assert_array_equal(w[zero], 0.0)
    np.testing.assert_allclose(
        g[~zero], -strength * w[~zero] / norms[~zero, None], rtol=1e-4, atol=1e-6
    )
    assert np.all(np.linalg.norm(g[zero], axis=1) <= strength + 1e-8)


def test_masked_gradient_noise_follows_its_variance_schedule_and_mask():
    eta, gamma = 0.5, 0.55
    tx = transforms.masked_gradient_noise(eta, gamma, key=0, mask=masks.weights_only)
    params = {"kernel": jnp.zeros((400, 500)), "bias": jnp.zeros(500)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)
    stds = []
    for _ in range(10):
        updates, state = tx.update(zeros, state, params)
        np.testing.assert_array_equal(updates["bias"], 0.0)
        stds.append(float(jnp.std(updates["kernel"])))
    # Variance eta / (1 + t)**gamma at steps t = 0, 1, ... (the docstring's schedule).
    expected = [np.sqrt(eta / (1 + t) ** gamma) for t in range(10)]
    np.testing.assert_allclose(stds, expected, rtol=0.01)


# --- proximal steps in the optimizer's metric (optimizer=...) -------------------------------


def _random_steps(tx, params, grads_list):
    state = tx.init(params)
    for grads in grads_list:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _tree_and_grads(seed=0, steps=5):
    rng = np.random.default_rng(seed)
    params = {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)},
        "bias": jnp.asarray(rng.normal(size=3), jnp.float32),
    }
    grads = [jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)]
    for _ in range(steps - 1):
        grads.append(jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params))
    return params, grads


@pytest.mark.parametrize(
    "inner", [lambda: optax.sgd(0.1), lambda: optax.sgd(0.1, momentum=0.9)], ids=["sgd", "momentum"]
)
def test_prox_given_an_optimizer_without_adam_state_is_the_plain_chain(inner):
    params, grads = _tree_and_grads()
    mask = masks.weights_only
    for ours, plain in (
        (
            transforms.proximal_l1(0.7, 0.1, mask, optimizer=inner()),
            optax.chain(inner(), transforms.proximal_l1(0.7, 0.1, mask)),
        ),
        (
            transforms.proximal_elastic_net(0.7, 0.4, 0.1, mask, optimizer=inner()),
            optax.chain(inner(), transforms.proximal_elastic_net(0.7, 0.4, 0.1, mask)),
        ),
    ):
        chex.assert_trees_all_close(
            _random_steps(ours, params, grads), _random_steps(plain, params, grads), atol=1e-7
        )


def _numpy_adam_prox(params, grads, lr, alpha, l1_ratio, b1=0.9, b2=0.999, eps=1e-8):
    """Adam by hand, then the prox of ``lr·α·(ρ|w| + (1-ρ)/2·w²)`` in the metric
    ``D = sqrt(v̂) + eps``: per coordinate, threshold ``lr·α/D``."""
    p = np.asarray(params, np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        metric = np.sqrt(v_hat) + eps
        z = p - lr * m_hat / metric
        threshold = lr * alpha / metric
        p = np.sign(z) * np.maximum(np.abs(z) - threshold * l1_ratio, 0)
        p = p / (1 + threshold * (1 - l1_ratio))
    return p


@pytest.mark.parametrize("l1_ratio", [1.0, 0.3])
def test_adam_prox_matches_adam_and_the_scaled_prox_by_hand(l1_ratio):
    rng = np.random.default_rng(3)
    params = jnp.asarray(rng.normal(size=12) * 0.05, jnp.float32)
    grads = [jnp.asarray(rng.normal(size=12) * s, jnp.float32) for s in (1, 0.1, 3, 0.5, 1)]
    lr, alpha = 0.01, 0.8 / l1_ratio  # the same L1 part, so both cases produce zeros
    if l1_ratio == 1.0:
        tx = transforms.proximal_l1(alpha, lr, optimizer=optax.adam(lr))
    else:
        tx = transforms.proximal_elastic_net(alpha, l1_ratio, lr, optimizer=optax.adam(lr))
    ours = _random_steps(tx, params, grads)
    expected = _numpy_adam_prox(params, grads, lr, alpha, l1_ratio)
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=1e-7)
    assert np.sum(np.asarray(ours) == 0) == np.sum(expected == 0) > 0  # exact zeros


def test_adam_prox_step_is_the_argmin_in_adams_metric():
    """One step, checked against a brute-force minimization of each coordinate's
    ``D/(2·lr)·(w − z)² + α|w|`` on a fine grid (z: Adam's step, D: its metric)."""
    params = jnp.array([0.3, -0.02, 0.001, -1.0])
    grads = jnp.array([0.5, -4.0, 0.01, 2.0])
    lr, alpha = 0.1, 0.3
    tx = transforms.proximal_l1(alpha, lr, optimizer=optax.adam(lr))
    moved = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    adam_only = optax.adam(lr)
    z = optax.apply_updates(params, adam_only.update(grads, adam_only.init(params), params)[0])
    metric = np.abs(np.asarray(grads, np.float64)) + 1e-8  # step 1: sqrt(v̂) = |g|
    grid = np.linspace(-2, 2, 400_001)
    for i in range(4):
        objective = metric[i] / (2 * lr) * (grid - float(z[i])) ** 2 + alpha * np.abs(grid)
        assert abs(float(moved[i]) - grid[np.argmin(objective)]) <= 2e-5, i


def test_adam_prox_solves_the_lasso_of_the_same_strength_and_the_plain_chain_does_not():
    """Full-batch least squares: Adam with the prox in its metric converges to
    scikit-learn's Lasso at the same α (as ISTA does); the plain prox after Adam
    solves a reweighted problem instead."""

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)) * np.array([0.2, 0.5, 1, 2, 4, 1, 0.3, 3])
    y = x @ np.array([1.5, 0, -2, 0.5, 0, 0.3, 0, -0.2]) + 0.3 * rng.normal(size=200)
    alpha, lr = 0.1, 3e-3
    lasso = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(x, y).coef_
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def train(tx, steps=5000):
        def body(carry, _):
            w, state = carry
            grads = jax.grad(lambda w: 0.5 * jnp.mean((xj @ w - yj) ** 2))(w)
            updates, state = tx.update(grads, state, w)
            return (optax.apply_updates(w, updates), state), None

        w = jnp.zeros(8)
        return np.asarray(
            jax.jit(lambda: jax.lax.scan(body, (w, tx.init(w)), length=steps)[0][0])()
        )

    adaptive = train(transforms.proximal_l1(alpha, lr, optimizer=optax.adam(lr)))
    np.testing.assert_allclose(adaptive, lasso, atol=1e-4)
    np.testing.assert_array_equal(adaptive == 0, lasso == 0)  # the same support, exact zeros
    plain = train(optax.chain(optax.adam(lr), transforms.proximal_l1(alpha, lr)))
    assert np.abs(plain - lasso).max() > 0.5


def test_adam_prox_strength_is_traced_and_masks_only_the_prox():
    params, grads = _tree_and_grads(seed=1, steps=3)

    def run(alpha):
        tx = transforms.proximal_l1(alpha, 0.05, masks.weights_only, optimizer=optax.adam(0.05))
        return _random_steps(tx, params, grads)

    alphas = jnp.array([0.0, 2.0])
    swept = jax.jit(jax.vmap(run))(alphas)
    for i in range(2):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], swept), run(float(alphas[i])), rtol=1e-6
        )
    adam_alone = _random_steps(optax.adam(0.05), params, grads)
    # Strength 0 is plain Adam; at strength 2 the bias (masked out) is still plain Adam.
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], swept), adam_alone, rtol=1e-6)
    chex.assert_trees_all_close(swept["bias"][1], adam_alone["bias"], rtol=1e-6)
    assert np.mean(np.asarray(swept["dense"]["kernel"][1]) == 0) > 0.5


def test_adam_prox_rejects_bad_arguments():
    with pytest.raises(ValueError, match="strength"):
        transforms.proximal_l1(-1.0, 0.1, optimizer=optax.adam(0.1))
    with pytest.raises(ValueError, match="l1_ratio"):
        transforms.proximal_elastic_net(1.0, 1.5, 0.1, optimizer=optax.adam(0.1))
    twice = optax.chain(optax.adam(0.1), optax.adam(0.1))
    tx = transforms.proximal_l1(1.0, 0.1, optimizer=twice)
    with pytest.raises(ValueError, match="Adam-family states"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))


def test_adam_prox_runs_inside_fit():
    """fit hands every update extra arguments (grad_fn); the wrapped optax.adam takes none."""
    x = jax.random.normal(jax.random.key(0), (64, 6))
    y = (x[:, 0] > 0).astype(jnp.int32)
    params = {"w": jnp.zeros((6, 2)), "b": jnp.zeros(2)}
    tx = transforms.proximal_l1(0.05, 0.05, masks.weights_only, optimizer=optax.adam(0.05))
    result = fit(
        lambda p, x, **kw: x @ p["w"] + p["b"],
        params,
        tx,
        (x, y),
        key=jax.random.key(1),
        num_epochs=30,
        batch_size=16,
    )
    assert float(result.history["train_accuracy"][-1]) > 0.9
    w = np.asarray(result.params["w"])
    assert np.all(w[1:] == 0) and np.all(w[0] != 0)  # only the informative input survives


# Tests below pin behaviour that the mutation run (tools/mutation.py transforms) showed
# no other test checking: exact argument names in errors, boundary values, dtypes, masks.


def _needs_params(tx, params):
    return lambda: tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: transforms.decoupled_weight_decay(-1.0), "rate must be non-negative"),
        (lambda: transforms.proximal_l1(0.1, -0.1, optimizer=optax.sgd(0.1)), "learning_rate must"),
        (lambda: transforms.proximal_l1(-0.1, 0.1, optimizer=optax.sgd(0.1)), "strength must"),
        (
            lambda: transforms.proximal_elastic_net(0.1, 1.5, 0.1),
            r"l1_ratio must lie in \[0.0, 1.0\]",
        ),
        (lambda: transforms.max_norm(-1.0), "radius must be non-negative"),
        (lambda: transforms.masked_gradient_noise(-0.1, 0.55, key=0), "eta must be non-negative"),
        (lambda: transforms.spectral_norm_penalty(-1.0, key=jax.random.key(0)), "strength must"),
        (lambda: transforms.proximal_l1(-0.1, 0.1), "strength must be non-negative"),
        (lambda: transforms.proximal_l1(0.1, -0.1), "learning_rate must be non-negative"),
        (lambda: transforms.sam(optax.sgd(0.1), -0.1), "rho must be non-negative"),
    ],
)
def test_bad_arguments_are_named_exactly(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("proximal_l1", lambda: transforms.proximal_l1(0.1, 0.1)),
        ("proximal_elastic_net", lambda: transforms.proximal_elastic_net(0.1, 0.5, 0.1)),
        ("proximal_group_lasso", lambda: transforms.proximal_group_lasso(0.1, 0.1)),
        ("proximal step", lambda: transforms.proximal_l1(0.1, 0.1, optimizer=optax.sgd(0.1))),
        ("max_norm", lambda: transforms.max_norm(1.0)),
        (
            "spectral_norm_penalty",
            lambda: transforms.spectral_norm_penalty(1.0, key=jax.random.key(0)),
        ),
    ],
)
def test_a_missing_params_names_the_transform(name, make):
    with pytest.raises(ValueError, match=f"^{name} needs params"):
        _needs_params(make(), {"w": jnp.ones((2, 2))})()


@pytest.mark.parametrize("optimizer", [None, optax.sgd(0.1)])
def test_elastic_net_at_l1_ratio_one_is_the_l1_step(optimizer):
    params = {"w": jnp.array([0.05, -1.0, 2.0, -0.01])}
    grads = {"w": jnp.array([0.3, -0.2, 0.1, 0.0])}
    chained = lambda tx: tx if optimizer else optax.chain(optax.sgd(0.1), tx)  # noqa: E731
    net = chained(transforms.proximal_elastic_net(0.5, 1.0, 0.1, optimizer=optimizer))
    lasso = chained(transforms.proximal_l1(0.5, 0.1, optimizer=optimizer))
    got = net.update(grads, net.init(params), params)[0]["w"]
    np.testing.assert_allclose(got, lasso.update(grads, lasso.init(params), params)[0]["w"])
    assert float(optax.apply_updates(params, {"w": got})["w"][0]) == 0.0


def test_the_adam_prox_finds_adams_count_in_a_nested_chain():
    inner = optax.chain(
        optax.clip_by_global_norm(10.0), optax.chain(optax.identity(), optax.adam(0.1))
    )
    nested = transforms.proximal_l1(0.5, 0.1, optimizer=inner)
    flat = transforms.proximal_l1(0.5, 0.1, optimizer=optax.adam(0.1))
    params, grads = {"w": jnp.array([1.0, -2.0, 0.01])}, {"w": jnp.array([0.5, 0.1, -0.3])}
    nested_state, flat_state = nested.init(params), flat.init(params)
    for _ in range(3):
        nested_updates, nested_state = nested.update(grads, nested_state, params)
        flat_updates, flat_state = flat.update(grads, flat_state, params)
        chex.assert_trees_all_close(nested_updates, flat_updates, rtol=1e-6)
    assert nested_state.count.dtype == jnp.int32 and int(nested_state.count) == 3


def test_an_adam_state_without_a_count_is_refused_by_name():
    class Moments(NamedTuple):
        nu: jax.Array

    no_count = optax.GradientTransformation(
        lambda p: Moments(jax.tree.map(jnp.zeros_like, p)), lambda u, s, p=None: (u, s)
    )
    tx = transforms.proximal_l1(0.5, 0.1, optimizer=no_count)
    params = {"w": jnp.ones(2)}
    with pytest.raises(
        ValueError, match=r"^the optimizer's Adam-family state has no step count beside nu$"
    ):
        tx.update(params, tx.init(params), params)


def test_gradient_noise_follows_its_key():
    params = {"w": jnp.zeros(8)}

    def noise(key):
        tx = transforms.masked_gradient_noise(1.0, 0.55, key=key)
        return tx.update(params, tx.init(params), params)[0]["w"]

    assert not np.allclose(noise(1), noise(2))
    np.testing.assert_array_equal(noise(1), noise(1))


def _spectral_step_by_hand(kernel, u, strength, iterations):
    w = kernel.reshape(-1, kernel.shape[-1]).T
    for _ in range(iterations):
        v = w.T @ u
        v = v / np.linalg.norm(v)
        u = w @ v
        u = u / np.linalg.norm(u)
    return (strength * (u @ w @ v) * np.outer(u, v)).T.reshape(kernel.shape)


@pytest.mark.parametrize(
    "shapes", [{"w": (4, 3)}, {"a": (3,), "b": (4, 3), "c": (2, 2, 3), "d": (3, 5)}]
)
def test_spectral_norm_penalty_takes_one_power_step_per_leaf_from_its_own_key(shapes, x64):
    rng = np.random.default_rng(0)
    params = {name: jnp.asarray(rng.normal(size=shape)) for name, shape in shapes.items()}
    grads = {name: jnp.asarray(rng.normal(size=shape)) for name, shape in shapes.items()}
    key = jax.random.key(7)
    tx = transforms.spectral_norm_penalty(0.5, key=key)  # the default: one iteration per step
    new, _ = tx.update(grads, tx.init(params), params)
    keys = jax.random.split(key, len(shapes))
    for index, (name, shape) in enumerate(sorted(shapes.items())):
        if len(shape) < 2:
            np.testing.assert_array_equal(new[name], grads[name])
            continue
        start = np.asarray(jax.random.normal(keys[index], (shape[-1],), jnp.float64))
        expected = np.asarray(grads[name]) + _spectral_step_by_hand(
            np.asarray(params[name]), start, 0.5, 1
        )
        np.testing.assert_allclose(new[name], expected, rtol=1e-10)


def test_spectral_norm_penalty_masks_and_takes_empty_params():
    params = {"b": jnp.eye(3), "w": 2 * jnp.eye(3)}
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = transforms.spectral_norm_penalty(1.0, key=jax.random.key(0), mask={"b": False, "w": True})
    new, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(new["b"], grads["b"])
    assert float(jnp.abs(new["w"]).sum()) > 0
    empty = transforms.spectral_norm_penalty(1.0, key=jax.random.key(0))
    assert empty.update({}, empty.init({}), {})[0] == {}


def test_max_norm_keeps_the_dtype_and_leaves_masked_leaves_alone():
    params = {"w": jnp.full((4, 3), 2.0, jnp.bfloat16), "b": jnp.full(3, 5.0)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = transforms.max_norm(1.0, mask=masks.weights_only)
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(optax.apply_updates(params, updates)["w"], np.float32), 0.5, rtol=1e-2
    )
    np.testing.assert_array_equal(updates["b"], zeros["b"])  # |5| > 1, but masked out


def test_asam_needs_params_by_name_and_uses_eta_001_by_default():
    loss = lambda w: jnp.sum(w**4) + w[0] * w[1]  # noqa: E731
    grad_fn = lambda p, _: jax.grad(loss)(p)  # noqa: E731
    w = jnp.array([1.0, -0.5, 0.0])
    tx = transforms.sam(optax.sgd(1.0), 0.3, adaptive=True)
    with pytest.raises(ValueError, match=r"^sam\(adaptive=True\) needs params"):
        tx.update(jax.grad(loss)(w), tx.init(w), None, grad_fn=grad_fn)
    updates, _ = tx.update(jax.grad(loss)(w), tx.init(w), w, grad_fn=grad_fn)
    g, scale = np.asarray(jax.grad(loss)(w), np.float64), np.abs(np.asarray(w)) + 0.01
    ascent = np.asarray(w) + 0.3 * scale**2 * g / np.linalg.norm(scale * g)
    expected = -np.asarray(jax.grad(loss)(jnp.asarray(ascent, jnp.float32)))
    np.testing.assert_allclose(updates, expected, rtol=1e-5)


@pytest.mark.parametrize("optimizer", [None, optax.adam(0.1)])
def test_proximal_steps_keep_the_dtype_and_count_in_int32(optimizer):
    params = {"w": jnp.array([0.01, -1.0, 2.0], jnp.bfloat16)}
    grads = {"w": jnp.array([0.5, 0.1, -0.3], jnp.bfloat16)}
    tx = transforms.proximal_l1(0.5, 0.1, optimizer=optimizer)
    if optimizer is None:
        tx = optax.chain(optax.sgd(0.1), tx)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    count = state.count if optimizer is not None else state[1].count
    assert count.dtype == jnp.int32 and int(count) == 1
    assert float(optax.apply_updates(params, updates)["w"][0]) == 0.0


def test_adam_prox_threshold_uses_adams_eps_and_the_schedule_at_each_step(x64):
    # One Adam step from a zero state: nu_hat = g², so D = |g| + eps and u = -lr·g/D.
    eps, strength = 0.5, 0.4
    schedule = optax.piecewise_constant_schedule(0.2, {1: 0.25})  # 0.2, then 0.05
    params = {"w": jnp.array([0.3, -1.0, 2.0, 0.05])}
    grads = {"w": jnp.array([0.5, 0.1, -0.3, 2.0])}
    tx = transforms.proximal_l1(
        strength, schedule, optimizer=optax.adam(schedule, eps=eps), eps=eps
    )
    state = tx.init(params)
    for lr in (0.2, 0.05):
        updates, state = tx.update(grads, state, params)
        inner, _ = optax.adam(lr, eps=eps).update(grads, optax.adam(lr, eps=eps).init(params))
        if lr == 0.05:  # the second step: Adam's moments after two identical gradients
            adam = optax.adam(schedule, eps=eps)
            adam_state = adam.init(params)
            _, adam_state = adam.update(grads, adam_state)
            inner, _ = adam.update(grads, adam_state)
        g = np.asarray(grads["w"])
        moved = np.asarray(params["w"]) + np.asarray(inner["w"])
        threshold = lr * strength / (np.abs(g) + eps)
        expected = np.sign(moved) * np.maximum(np.abs(moved) - threshold, 0) - params["w"]
        np.testing.assert_allclose(updates["w"], expected, rtol=1e-4)  # b2 in float32


def test_adam_prox_hands_params_to_an_optimizer_that_needs_them():
    params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.1, 0.2])}
    adamw = optax.adamw(0.1, weight_decay=0.1)
    tx = transforms.proximal_l1(0.0, 0.1, optimizer=adamw)  # strength 0: the prox is the identity
    updates, _ = tx.update(grads, tx.init(params), params)
    expected, _ = adamw.update(grads, adamw.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], atol=1e-6)  # (p + u) - p in float32
