"""Max-norm, orthogonality, Jacobian penalties and R-Drop against closed forms, dense
computations and plain loops."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree
from scipy import stats

from jaxreg import fit, jacobian, losses, masks, penalties, transforms
from jaxreg.nn import MLP, functional


def _project_by_hand(kernel: np.ndarray, radius: float) -> np.ndarray:
    units = kernel.reshape(-1, kernel.shape[-1])
    norms = np.linalg.norm(units, axis=0)
    scale = np.where(norms > radius, radius / np.maximum(norms, 1e-30), 1.0)
    return (units * scale).reshape(kernel.shape)


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 6)])
def test_max_norm_is_the_closed_form_projection_and_keeps_short_units_bit_for_bit(shape):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=shape), jnp.float32), "b": jnp.ones(shape[-1])}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    stepped = np.asarray(params["w"]) - 0.3 * np.asarray(grads["w"], np.float64)
    radius = float(np.median(np.linalg.norm(stepped.reshape(-1, shape[-1]), axis=0)))
    opt = optax.chain(optax.sgd(0.3), transforms.max_norm(radius, mask=masks.weights_only))
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["w"], _project_by_hand(stepped, radius), rtol=1e-5, atol=1e-6)
    norms = np.linalg.norm(np.asarray(new["w"]).reshape(-1, shape[-1]), axis=0)
    assert np.all(norms <= radius * (1 + 1e-5))
    inside = np.linalg.norm(stepped.reshape(-1, shape[-1]), axis=0) <= radius
    assert inside.any() and not inside.all()  # both cases occur
    sgd_only, _ = optax.sgd(0.3).update(grads, optax.sgd(0.3).init(params), params)
    np.testing.assert_array_equal(
        np.asarray(updates["w"]).reshape(-1, shape[-1])[:, inside],
        np.asarray(sgd_only["w"]).reshape(-1, shape[-1])[:, inside],
    )
    np.testing.assert_array_equal(updates["b"], sgd_only["b"])  # masked out


def test_max_norm_radius_is_traceable_and_checked():
    params = {"w": jnp.array([[3.0, 0.0], [4.0, 1.0]])}
    zeros = jax.tree.map(jnp.zeros_like, params)

    def projected(radius):
        opt = transforms.max_norm(radius)
        updates, _ = opt.update(zeros, opt.init(params), params)
        return optax.apply_updates(params, updates)["w"]

    radii = jnp.array([0.5, 2.0, 10.0])
    batched = jax.jit(jax.vmap(projected))(radii)
    for index, radius in enumerate([0.5, 2.0, 10.0]):
        np.testing.assert_allclose(
            batched[index], _project_by_hand(np.asarray(params["w"]), radius), rtol=1e-6
        )
    with pytest.raises(ValueError, match="radius"):
        transforms.max_norm(-1.0)
    with pytest.raises(ValueError, match="params"):
        transforms.max_norm(1.0).update(zeros, optax.EmptyState())


def _orthogonality_by_hand(leaves, double):
    total = 0.0
    for leaf in leaves:
        w = np.asarray(leaf, np.float64).reshape(-1, leaf.shape[-1])
        total += np.sum((w.T @ w - np.eye(w.shape[1])) ** 2)
        if double:
            total += np.sum((w @ w.T - np.eye(w.shape[0])) ** 2)
    return total


@pytest.mark.parametrize("double", [False, True])
def test_orthogonality_matches_the_dense_formula_and_its_gradient(double):
    rng = np.random.default_rng(1)
    params = {
        "dense": jnp.asarray(rng.normal(size=(6, 4)) / 2, jnp.float32),
        "conv": jnp.asarray(rng.normal(size=(3, 2, 5)) / 2, jnp.float32),
        "bias": jnp.ones(4),
    }
    value = penalties.orthogonality(params, double=double)
    expected = _orthogonality_by_hand([params["dense"], params["conv"]], double)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # ∇_W ‖WᵀW − I‖² = 4W(WᵀW − I), and ∇_W ‖WWᵀ − I‖² = 4(WWᵀ − I)W.
    w = np.asarray(params["dense"], np.float64)
    by_hand = 4 * w @ (w.T @ w - np.eye(4))
    if double:
        by_hand += 4 * (w @ w.T - np.eye(6)) @ w
    grad = jax.grad(lambda p: penalties.orthogonality(p, double=double))(params)
    np.testing.assert_allclose(grad["dense"], by_hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(grad["bias"], 0.0)
    only_conv = penalties.orthogonality(params, mask={"dense": False, "conv": True, "bias": True})
    np.testing.assert_allclose(
        only_conv, _orthogonality_by_hand([params["conv"]], False), rtol=1e-5
    )
    q = np.linalg.qr(rng.normal(size=(6, 4)))[0]
    assert float(penalties.orthogonality({"w": jnp.asarray(q)})) < 1e-10


def test_input_gradient_norm_is_softmax_regressions_closed_form_and_a_loop(x64):
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(5, 3)))
    x = jnp.asarray(rng.normal(size=(7, 5)))
    y = jnp.asarray(rng.integers(0, 3, size=7))

    def apply(params, inputs):
        return inputs @ params

    value = jax.jit(jacobian.input_gradient_norm, static_argnums=0)(apply, w, x, y)
    logits = np.asarray(x) @ np.asarray(w)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    residual = probs - np.eye(3)[np.asarray(y)]
    closed = np.mean(np.sum((residual @ np.asarray(w).T) ** 2, axis=1))
    np.testing.assert_allclose(value, closed, rtol=1e-10)
    # A nonlinear model against a plain loop of per-example gradients.
    apply_mlp, params = functional(MLP((5, 8, 3), activation="tanh", rngs=nnx.Rngs(0)))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    loop = np.mean(
        [
            np.sum(
                np.asarray(
                    jax.grad(
                        lambda xi, i=i: losses.softmax_cross_entropy(
                            apply_mlp(params, xi[None]), y[i : i + 1]
                        )[0]
                    )(x[i])
                )
                ** 2
            )
            for i in range(7)
        ]
    )
    np.testing.assert_allclose(
        jacobian.input_gradient_norm(apply_mlp, params, x, y), loop, rtol=1e-10
    )
    # A padded batch: rows of weight 0 (zeros, label 0) leave the weighted mean unchanged.
    padded_x = jnp.concatenate([x, jnp.zeros((3, 5))])
    padded_y = jnp.concatenate([y, jnp.zeros(3, y.dtype)])
    weight = jnp.concatenate([jnp.ones(7), jnp.zeros(3)])
    np.testing.assert_allclose(
        jacobian.input_gradient_norm(apply_mlp, params, padded_x, padded_y, weight=weight),
        loop,
        rtol=1e-10,
    )
    assert not np.isclose(jacobian.input_gradient_norm(apply_mlp, params, padded_x, padded_y), loop)


def test_jacobian_frobenius_is_unbiased_for_the_exact_jacobian(x64):
    apply, params = functional(MLP((4, 8, 3), activation="tanh", rngs=nnx.Rngs(1)))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(jax.random.key(3), (5, 4), jnp.float64)
    jacobians = [np.asarray(jax.jacrev(lambda xi: apply(params, xi[None])[0])(xi)) for xi in x]
    exact = np.mean([np.sum(j**2) for j in jacobians])
    keys = jax.random.split(jax.random.key(4), 4000)
    single = jax.jit(jax.vmap(lambda k: jacobian.jacobian_frobenius(apply, params, x, key=k)))(keys)
    mean, error = float(np.mean(single)), float(np.std(single) / np.sqrt(len(keys)))
    assert abs(mean - exact) < 4 * error, (mean, exact, error)
    # Eight projections, by hand from the exact Jacobians: C·‖vᵀJ_i‖² with v on the sphere.
    many = jacobian.jacobian_frobenius(apply, params, x, key=jax.random.key(5), num_projections=8)
    by_hand = []
    for k in jax.random.split(jax.random.key(5), 8):
        v = np.array(jax.random.normal(k, (5, 3), jnp.float64))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        by_hand.append(
            np.mean([3 * np.sum((vi @ j) ** 2) for vi, j in zip(v, jacobians, strict=True)])
        )
    np.testing.assert_allclose(many, np.mean(by_hand), rtol=1e-10)
    # Linear model: J = Wᵀ for every example, so the estimate's gradient averages to 2W.
    w = jax.random.normal(jax.random.key(6), (4, 3), jnp.float64)
    grads = jax.vmap(
        jax.grad(lambda w, k: jacobian.jacobian_frobenius(lambda p, z: z @ p, w, x, key=k)),
        in_axes=(None, 0),
    )(w, keys)
    np.testing.assert_allclose(
        np.mean(grads, axis=0), 2 * w, atol=6 * float(np.max(np.std(grads, 0))) / np.sqrt(4000)
    )
    with pytest.raises(ValueError, match="num_projections"):
        jacobian.jacobian_frobenius(apply, params, x, key=keys[0], num_projections=0)


def test_symmetric_kl_matches_scipy_and_r_drop_is_two_dropout_passes():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    pa = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    pb = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    expected = 0.5 * (stats.entropy(pa, pb, axis=1) + stats.entropy(pb, pa, axis=1))
    np.testing.assert_allclose(
        losses.symmetric_kl(jnp.asarray(a), jnp.asarray(b)), expected, rtol=1e-5
    )
    np.testing.assert_allclose(losses.symmetric_kl(jnp.asarray(a), jnp.asarray(a)), 0.0)

    apply, params = functional(MLP((4, 16, 3), dropout_rate=0.3, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(7), (9, 4))
    key = jax.random.key(8)
    value = losses.r_drop(apply, params, x, key=key)
    key_a, key_b = jax.random.split(key)
    first = apply(params, x, key=key_a, train=True)
    second = apply(params, x, key=key_b, train=True)
    np.testing.assert_allclose(value, np.mean(losses.symmetric_kl(first, second)), rtol=1e-6)
    assert float(value) > 0
    off = losses.r_drop(apply, params, x, key=key, hparams={"dropout_rate": 0.0})
    assert float(off) == 0.0
    weight = jnp.array([1.0] * 5 + [0.0] * 4)
    chex.assert_trees_all_close(
        losses.r_drop(apply, params, x, key=key, weight=weight),
        jnp.mean(losses.symmetric_kl(first, second)[:5]),
        rtol=1e-6,
    )


def _quartic_loss(params, batch=None):
    return jnp.sum(params["a"] ** 4) + jnp.sum(jnp.sin(params["b"]) * params["b"] ** 2)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_update_is_the_hand_written_sam_and_asam_step(adaptive, x64):
    params = {"a": jnp.array([1.0, -0.5, 0.0]), "b": jnp.array([[0.3, 2.0]])}
    grad = jax.grad(_quartic_loss)
    rho, eta = 0.2, 0.01
    opt = transforms.sam(optax.adam(0.1), rho, adaptive=adaptive, eta=eta)
    state = opt.init(params)
    reference = optax.adam(0.1)
    ref_state = reference.init(params)
    for _ in range(3):
        g = np.concatenate([np.ravel(grad(params)["a"]), np.ravel(grad(params)["b"])])
        w = np.concatenate([np.ravel(params["a"]), np.ravel(params["b"])])
        t = np.abs(w) + eta if adaptive else np.ones_like(w)
        epsilon = rho * t**2 * g / np.linalg.norm(t * g)
        ascent = {"a": params["a"] + epsilon[:3], "b": params["b"] + epsilon[3:].reshape(1, 2)}
        ref_updates, ref_state = reference.update(grad(ascent), ref_state, params)
        updates, state = opt.update(grad(params), state, params, grad_fn=lambda p, _: grad(p))
        chex.assert_trees_all_close(updates, ref_updates, rtol=1e-10, atol=1e-12)
        params = optax.apply_updates(params, updates)


def test_fit_with_sam_takes_one_descent_step_per_minibatch_like_a_plain_loop():
    from jaxreg import fit

    x = jax.random.normal(jax.random.key(0), (32, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(jnp.int32)
    apply, params = functional(MLP((3, 8, 2), activation="tanh", rngs=nnx.Rngs(0)))
    rho, lr = 0.05, 0.1
    result = fit(
        apply,
        params,
        lambda h: transforms.sam(optax.sgd(lr), h["sam_rho"]),
        (x, y),
        key=jax.random.key(1),
        num_epochs=4,
        batch_size=32,  # one minibatch per epoch: the order inside it does not matter
        hparams={"sam_rho": rho},
    )
    loss_fn = losses.classification_loss(apply)
    batch = {"x": x, "y": y}
    manual = params
    for _ in range(4):
        g = jax.grad(loss_fn)(manual, batch)
        norm = np.sqrt(sum(float(jnp.sum(gi**2)) for gi in jax.tree.leaves(g)))
        ascent = jax.tree.map(lambda p, gi, n=norm: p + rho * gi / n, manual, g)
        manual = jax.tree.map(lambda p, gi: p - lr * gi, manual, jax.grad(loss_fn)(ascent, batch))
    chex.assert_trees_all_close(result.params, manual, rtol=2e-5, atol=2e-6)
    assert not np.allclose(
        ravel_pytree(result.params)[0],
        ravel_pytree(
            fit(
                apply,
                params,
                optax.sgd(lr),
                (x, y),
                key=jax.random.key(1),
                num_epochs=4,
                batch_size=32,
            ).params
        )[0],
    )
    with pytest.raises(ValueError, match="rho"):
        transforms.sam(optax.sgd(0.1), -0.1)


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 6)])
def test_spectral_norm_penalty_is_the_gradient_of_half_sigma_squared(shape, x64):
    rng = np.random.default_rng(4)
    params = {
        "w": jnp.asarray(rng.normal(size=shape)),
        "b": jnp.asarray(rng.normal(size=shape[-1])),
    }
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    strength = 0.3
    matrix = np.asarray(params["w"]).reshape(-1, shape[-1])  # (fan_in, units), as documented
    sigma = np.linalg.norm(matrix, 2)
    np.testing.assert_allclose(sigma, np.linalg.svd(matrix, compute_uv=False)[0])
    # Independent reference: autodiff of ½λσ² with σ from an SVD.
    exact = jax.grad(
        lambda w: (
            0.5 * strength * jnp.linalg.svd(w.reshape(-1, shape[-1]), compute_uv=False)[0] ** 2
        )
    )(params["w"])
    opt = transforms.spectral_norm_penalty(strength, key=jax.random.key(0), mask=masks.weights_only)
    state = opt.init(params)
    for _ in range(200):  # one power iteration per step, carried in the state
        out, state = opt.update(grads, state, params)
    np.testing.assert_allclose(
        out["w"], np.asarray(grads["w"]) + np.asarray(exact), rtol=1e-6, atol=1e-8
    )
    np.testing.assert_array_equal(out["b"], grads["b"])  # masked out, bit for bit
    at_once = transforms.spectral_norm_penalty(
        strength, key=jax.random.key(0), num_iterations=200, mask=masks.weights_only
    )
    once, _ = at_once.update(grads, at_once.init(params), params)
    np.testing.assert_allclose(once["w"], out["w"], rtol=1e-6, atol=1e-8)


def test_spectral_norm_penalty_strength_is_traceable_and_checked():
    params = {"w": jnp.diag(jnp.array([2.0, 1.0]))}
    zeros = {"w": jnp.zeros((2, 2))}

    def step(strength):
        opt = transforms.spectral_norm_penalty(strength, key=jax.random.key(1), num_iterations=30)
        return opt.update(zeros, opt.init(params), params)[0]["w"]

    batched = jax.jit(jax.vmap(step))(jnp.array([0.0, 1.0, 2.0]))
    for index, strength in enumerate([0.0, 1.0, 2.0]):
        np.testing.assert_allclose(batched[index], [[2.0 * strength, 0.0], [0.0, 0.0]], atol=1e-5)
    with pytest.raises(ValueError, match="strength"):
        transforms.spectral_norm_penalty(-1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_iterations"):
        transforms.spectral_norm_penalty(1.0, key=jax.random.key(0), num_iterations=0)


# --- spectral normalization as a model option ------------------------------------------------


def _converged_state(model, x, calls=60):
    """Train-mode calls carry the power iteration forward (its vector is model state)."""
    step = jax.jit(lambda s: model.apply(model.params, s, x, train=True)[1])
    state = model.state
    for _ in range(calls):
        state = step(state)
    return state


def test_spectral_normalized_mlp_is_the_forward_pass_with_w_over_its_top_singular_value():
    from jaxreg.nn import from_nnx

    model = from_nnx(MLP((5, 8, 6, 3), spectral_norm=True, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    state = _converged_state(model, x)
    out, same = model.apply(model.params, state, x, train=False)
    chex.assert_trees_all_equal(same, state)  # eval mode leaves the power iteration alone
    h = np.asarray(x, np.float64)
    layers = model.params["layers"]
    for i in range(3):
        kernel = np.asarray(layers[i]["inner"]["layer_instance"]["kernel"], np.float64)
        bias = np.asarray(layers[i]["inner"]["layer_instance"]["bias"], np.float64)
        h = h @ (kernel / np.linalg.norm(kernel, 2)) + bias
        if i < 2:
            h = np.maximum(h, 0)
    np.testing.assert_allclose(out, h, rtol=2e-4, atol=1e-5)


def test_spectral_normalized_models_are_invariant_to_weight_scale():
    """W/σ(W) does not change when W is scaled (σ scales with it, u is normalized)."""
    from jaxreg.nn import CNN1D, from_nnx

    for module in (
        MLP((5, 8, 3), spectral_norm=True, rngs=nnx.Rngs(0)),
        CNN1D(channels=4, spectral_norm=True, rngs=nnx.Rngs(0)),
    ):
        model = from_nnx(module)
        x = jax.random.normal(jax.random.key(2), (3, 40 if isinstance(module, CNN1D) else 5))
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, a: a * 3.0 if path[-1].key == "kernel" else a, model.params
        )
        base, _ = model.apply(model.params, model.state, x, train=True)
        moved, _ = model.apply(scaled, model.state, x, train=True)
        np.testing.assert_allclose(moved, base, rtol=1e-4, atol=1e-5)


def test_spectral_normalized_conv_uses_the_documented_reshape():
    from jaxreg.nn import CNN1D, from_nnx

    model = from_nnx(CNN1D(channels=4, spectral_norm=True, rngs=nnx.Rngs(0)))
    state = _converged_state(model, jax.random.normal(jax.random.key(3), (2, 40)), calls=100)
    for i in range(3):
        kernel = np.asarray(model.params["convs"][i]["inner"]["layer_instance"]["kernel"])
        sigma = state["convs"][i]["inner"]["batch_stats"][("kernel", "sigma")]
        expected = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2)
        np.testing.assert_allclose(sigma, expected, rtol=1e-3)


def test_spectral_norm_trains_in_fit_and_rejects_dropconnect():
    from jaxreg.nn import from_nnx

    x = jax.random.normal(jax.random.key(0), (64, 5))
    y = (x[:, 0] > 0).astype(jnp.int32)
    model = from_nnx(MLP((5, 16, 2), spectral_norm=True, rngs=nnx.Rngs(0)))
    result = fit(
        model,
        model.params,
        optax.adam(0.05),
        (x, y),
        key=jax.random.key(1),
        num_epochs=20,
        batch_size=16,
    )
    assert float(result.history["train_accuracy"][-1]) > 0.9
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, result.model_state, model.state))
    with pytest.raises(ValueError, match="dropconnect"):
        MLP((5, 4, 2), dropconnect_rate=0.3, spectral_norm=True, rngs=nnx.Rngs(0))
