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
