"""Hessian analysis against dense references: jax.hessian + numpy.linalg.eigh on a small MLP."""

import re

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxreg import landscape, sharpness
from jaxreg.data import batches, example_weights
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, functional


def _problem(dtype=jnp.float32):
    model = MLP((8, 24, 24, 4), activation="tanh", rngs=nnx.Rngs(0))
    apply, params = functional(model)
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    x = jax.random.normal(jax.random.key(1), (90, 8), dtype)
    y = jax.random.randint(jax.random.key(2), (90,), 0, 4)
    data = batches(x, y, 32)  # ragged: 90 = 2·32 + 26
    loss_fn = classification_loss(apply)
    return apply, params, data, loss_fn, x, y


def _dense_hessian(loss_fn, params, x, y):
    flat, unravel = ravel_pytree(params)
    full = {"x": x, "y": y}
    hessian = jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), full)))(flat)
    return np.asarray(hessian, np.float64)


@pytest.mark.parametrize("batch_size", [32, 90])  # 3 ragged batches; one batch
@pytest.mark.parametrize("linearize", [None, True, False])
def test_hvp_matches_the_dense_hessian_with_padded_batches(batch_size, linearize, x64):
    _apply, params, _, loss_fn, x, y = _problem(jnp.float64)
    data = batches(x, y, batch_size)
    dense = _dense_hessian(loss_fn, params, x, y)
    assert dense.shape[0] <= 2000
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.key(3), flat.shape, flat.dtype)
    product = sharpness.hvp(loss_fn, params, data, linearize=linearize)
    ours = ravel_pytree(jax.jit(product)(unravel(v)))[0]
    np.testing.assert_allclose(ours, dense @ np.asarray(v), rtol=1e-9, atol=1e-12)


def test_a_linearized_hvp_skips_the_forward_and_backward_passes():
    _apply, params, _, loss_fn, x, y = _problem()
    data = batches(x, y, 90)

    def flops(linearize):
        product = sharpness.hvp(loss_fn, params, data, linearize=linearize)
        cost = jax.jit(product).lower(params).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    assert flops(None) == flops(True) < 0.8 * flops(False)  # one batch: linearized
    empty = batches(x, y, 90)
    empty["weight"] = jnp.zeros_like(empty["weight"])
    zero = sharpness.hvp(loss_fn, params, empty)(params)
    assert all(bool(jnp.all(leaf == 0)) for leaf in jax.tree.leaves(zero))


def test_gauss_newton_product_matches_dense_jacobian_form(x64):
    apply, params, data, _, x, _ = _problem(jnp.float64)
    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacobian(lambda f: apply(unravel(f), x))(flat))  # (n, K, P)
    probs = np.asarray(jax.nn.softmax(apply(params, x)))
    ggn = sum(
        jac[i].T @ (np.diag(probs[i]) - np.outer(probs[i], probs[i])) @ jac[i]
        for i in range(len(x))
    ) / len(x)
    v = jax.random.normal(jax.random.key(4), flat.shape, flat.dtype)
    ours = ravel_pytree(sharpness.gauss_newton_vp(apply, params, data)(unravel(v)))[0]
    np.testing.assert_allclose(ours, ggn @ np.asarray(v), rtol=1e-8, atol=1e-12)


def test_top5_and_min_eigenvalues_match_eigh_in_float64(x64):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    reference = np.linalg.eigvalsh(_dense_hessian(loss_fn, params, x, y))
    values, vectors, info = sharpness.top_eigenvalues(
        loss_fn, params, data, key=jax.random.key(0), k=5, num_iters=120, explicit_residuals=True
    )
    np.testing.assert_allclose(values, reference[::-1][:5], rtol=1e-4)
    # The stop uses the gap-aware bound, so residuals can exceed 1e-4 while the values
    # are far closer; the Lanczos bound must still equal the explicit residual.
    np.testing.assert_allclose(info["residual_norm"], info["residual_bound"], rtol=1e-2, atol=1e-9)
    relative = np.abs(np.asarray(values) - reference[::-1][:5]) / reference[::-1][:5]
    assert np.all(relative <= np.asarray(info["residual_bound"]) / reference[::-1][:5] + 1e-12)
    assert jax.tree.leaves(vectors)[0].shape[0] == 5
    smallest, _, _ = sharpness.min_eigenvalue(
        loss_fn, params, data, key=jax.random.key(1), num_iters=120
    )
    assert reference[0] < 0  # a tanh MLP away from a minimum has negative curvature
    np.testing.assert_allclose(smallest, reference[0], rtol=1e-4)


def test_top_eigenvalues_in_float32():
    _apply, params, data, loss_fn, x, y = _problem(jnp.float32)
    reference = np.linalg.eigvalsh(_dense_hessian(loss_fn, params, x, y))[::-1][:5]
    values, _, _ = sharpness.top_eigenvalues(
        loss_fn, params, data, key=jax.random.key(0), k=5, num_iters=120
    )
    rel = np.abs(np.asarray(values) - reference) / np.abs(reference)
    print(f"float32 top-5 relative errors: {rel}")
    assert rel.max() < 1e-3


def test_power_iteration_with_deflation_and_its_hvp_count(x64):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    reference = np.linalg.eigvalsh(_dense_hessian(loss_fn, params, x, y))[::-1]
    out = sharpness.power_iteration(loss_fn, params, data, key=jax.random.key(0), k=2)
    # Both the top eigenvalue and the deflated second one.
    np.testing.assert_allclose(np.asarray(out.eigenvalues), reference[:2], rtol=1e-2)
    assert 2 <= int(out.num_hvps) <= 200


def test_block_eigenvalues_match_dense_diagonal_blocks(x64):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    dense = _dense_hessian(loss_fn, params, x, y)
    blocks = sharpness.block_top_eigenvalues(
        loss_fn, params, data, key=jax.random.key(0), k=2, num_iters=60
    )
    assert set(blocks) == {"layers/0", "layers/1", "layers/2"}
    for layer in range(3):
        flat_mask = ravel_pytree(
            jax.tree_util.tree_map_with_path(
                lambda path, leaf, layer=layer: jnp.full(leaf.shape, path[1].key == layer), params
            )
        )[0]
        idx = np.flatnonzero(np.asarray(flat_mask))
        block = np.linalg.eigvalsh(dense[np.ix_(idx, idx)])[::-1][:2]
        np.testing.assert_allclose(blocks[f"layers/{layer}"], block, rtol=1e-4)


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_hessian_trace_within_three_standard_errors(method):
    _apply, params, data, loss_fn, x, y = _problem()
    exact = np.trace(_dense_hessian(loss_fn, params, x, y))
    estimate, error = sharpness.hessian_trace(
        loss_fn, params, data, key=jax.random.key(0), num_samples=90, method=method
    )
    print(f"{method}: {float(estimate):.4f} ± {float(error):.4f} (exact {exact:.4f})")
    assert abs(float(estimate) - exact) < 3 * float(error) + 1e-4 * abs(exact)


def test_spectral_density_integrates_to_one_and_matches_moments(x64):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    dense = _dense_hessian(loss_fn, params, x, y)
    n = dense.shape[0]
    out = sharpness.spectral_density(
        loss_fn, params, data, key=jax.random.key(0), num_iters=40, num_runs=12
    )
    grid, density = np.asarray(out.grid), np.asarray(out.density)
    assert abs(np.sum(density) * (grid[1] - grid[0]) - 1) < 1e-3
    np.testing.assert_allclose(np.asarray(out.weights).sum(1), 1.0, rtol=1e-10)
    # Gauss quadrature is exact for low moments: Σ τθ^p = vᵀH^p v for each run's unit v.
    starts = [
        np.asarray(jax.random.normal(k, (n,), jnp.float64))
        for k in jax.random.split(jax.random.key(0), 12)
    ]
    for run, v in enumerate(starts):
        v = v / np.linalg.norm(v)
        for power in (1, 2):
            quad = np.sum(np.asarray(out.weights[run]) * np.asarray(out.nodes[run]) ** power)
            np.testing.assert_allclose(
                quad, v @ np.linalg.matrix_power(dense, power) @ v, rtol=1e-6, atol=1e-12
            )
    for power, exact in ((1, np.trace(dense) / n), (2, np.trace(dense @ dense) / n)):
        per_run = np.sum(np.asarray(out.weights) * np.asarray(out.nodes) ** power, axis=1)
        assert abs(per_run.mean() - exact) < 3 * per_run.std(ddof=1) / np.sqrt(12)


A = np.diag(np.array([5.0, 2.0, 1.0, 0.5], np.float32))  # NumPy at import: see test_augment


def _quadratic():
    data = batches(jnp.zeros((4, 1)), jnp.zeros(4), 2)

    def loss_fn(w, batch):
        return 0.5 * w @ A @ w

    return loss_fn, data


def test_sam_sharpness_on_a_quadratic_is_rho2_lambda_max_over_2():
    loss_fn, data = _quadratic()
    rho = 0.3
    value = sharpness.sam_sharpness(
        loss_fn, jnp.zeros(4), data, rho, num_steps=60, key=jax.random.key(0)
    )
    np.testing.assert_allclose(value, rho**2 * 5.0 / 2, rtol=1e-4)
    # A zero gradient without a random start: zero sharpness, not NaN.
    at_minimum = sharpness.sam_sharpness(loss_fn, jnp.zeros(4), data, rho)
    assert float(at_minimum) == 0.0
    assert not np.any(np.isnan(sharpness.safe_normalize(jnp.zeros(3))))
    # Away from the minimum one step is SAM's perturbation ε = ρ g/‖g‖.
    w = jnp.array([1.0, 1.0, 0.0, 0.0])
    g = A @ w
    eps = rho * g / jnp.linalg.norm(g)
    expected = 0.5 * (w + eps) @ A @ (w + eps) - 0.5 * w @ A @ w
    np.testing.assert_allclose(sharpness.sam_sharpness(loss_fn, w, data, rho), expected, rtol=1e-5)
    # ASAM (Kwon et al. 2021): ε = ρ T² g / ‖T g‖ with T = |w| + η.
    eta = 0.01
    t = jnp.abs(w) + eta
    asam_eps = rho * t**2 * g / jnp.linalg.norm(t * g)
    expected = 0.5 * (w + asam_eps) @ A @ (w + asam_eps) - 0.5 * w @ A @ w
    adaptive = sharpness.sam_sharpness(loss_fn, w, data, rho, adaptive=True, eta=eta)
    np.testing.assert_allclose(adaptive, expected, rtol=1e-5)
    assert abs(float(adaptive) - float(sharpness.sam_sharpness(loss_fn, w, data, rho))) > 1e-3


def test_epsilon_average_and_pac_bayes_on_a_quadratic():
    loss_fn, data = _quadratic()
    w = jnp.array([0.5, -0.2, 0.0, 1.0])
    eps = 0.1
    bound = eps * (np.abs(np.asarray(w)) + 1)
    worst = 0.5 * np.sum(np.diag(A) * (np.abs(np.asarray(w)) + bound) ** 2)
    base = float(0.5 * w @ A @ w)
    ours = sharpness.epsilon_sharpness(loss_fn, w, data, eps, num_steps=8)
    np.testing.assert_allclose(ours, 100 * (worst - base) / (1 + base), rtol=1e-5)
    sigma = 0.05
    minimum = jnp.zeros(4)  # no linear term: E[L(δ)] = σ²·tr(A)/2 with small MC error
    avg = sharpness.average_sharpness(
        loss_fn, minimum, data, key=jax.random.key(0), sigma=sigma, num_samples=4000
    )
    np.testing.assert_allclose(avg, sigma**2 / 2 * np.trace(A), rtol=0.1)
    target = 0.01
    flat_sigma = sharpness.pac_bayes_flatness(
        loss_fn, minimum, data, key=jax.random.key(0), target=target, num_samples=512
    )
    np.testing.assert_allclose(flat_sigma, np.sqrt(2 * target / np.trace(A)), rtol=0.1)


def test_two_d_slice_is_exactly_the_quadratic_form():
    loss_fn, data = _quadratic()
    d1, d2 = jnp.array([1.0, 0.0, 1.0, 0.0]), jnp.array([0.0, 1.0, 0.0, -1.0])
    alphas, betas, losses = landscape.slice_2d(
        loss_fn,
        jnp.zeros(4),
        data,
        key=jax.random.key(0),
        span=2.0,
        resolution=5,
        directions=(d1, d2),
    )
    for i, a in enumerate(np.asarray(alphas)):
        for j, b in enumerate(np.asarray(betas)):
            point = a * np.asarray(d1) + b * np.asarray(d2)
            np.testing.assert_allclose(losses[i, j], 0.5 * point @ np.asarray(A) @ point, rtol=1e-6)
    _ts, points = landscape.interpolate(jnp.zeros(4), jnp.ones(4), 5)
    np.testing.assert_allclose(points[2], 0.5 * np.ones(4))


def test_one_d_slice_matches_hand_evaluated_losses_on_padded_batches():
    _apply, params, data, loss_fn, x, y = _problem()
    key = jax.random.key(5)
    direction = landscape.random_direction(key, params)
    alphas, losses = landscape.slice_1d(
        loss_fn, params, data, key=key, span=0.5, resolution=7, chunk_size=3
    )
    np.testing.assert_allclose(alphas, np.linspace(-0.5, 0.5, 7), atol=1e-7)
    full = {"x": x, "y": y}  # the 90 examples in one batch: the exact mean loss
    for alpha, loss in zip(np.asarray(alphas), np.asarray(losses), strict=True):
        moved = jax.tree.map(lambda p, d, a=alpha: p + a * d, params, direction)
        np.testing.assert_allclose(loss, loss_fn(moved, full), rtol=1e-5)
    assert int(np.argmin(np.abs(np.asarray(alphas)))) == 3
    np.testing.assert_allclose(losses[3], loss_fn(params, full), rtol=1e-5)


def test_filter_normalization():
    params = {"kernel": jax.random.normal(jax.random.key(0), (3, 4, 6)), "bias": jnp.ones(6)}
    d = landscape.random_direction(jax.random.key(1), params)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(d["kernel"]).reshape(12, 6), axis=0),
        np.linalg.norm(np.asarray(params["kernel"]).reshape(12, 6), axis=0),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(d["bias"], 0.0)
    kept = landscape.random_direction(jax.random.key(1), params, ignore_bias=False)
    np.testing.assert_allclose(
        jnp.linalg.norm(kept["bias"]), jnp.linalg.norm(params["bias"]), rtol=1e-5
    )
    with pytest.raises(ValueError, match="normalization"):
        landscape.random_direction(jax.random.key(1), params, "unit")


def test_vmap_over_four_param_sets_equals_a_loop_with_one_compile():
    _apply, params, data, loss_fn, _, _ = _problem()
    stacked = jax.tree.map(lambda a: jnp.stack([a * s for s in (0.5, 1.0, 1.5, 2.0)]), params)

    def measures(p):
        top, _, _ = sharpness.top_eigenvalues(
            loss_fn, p, data, key=jax.random.key(0), k=2, num_iters=30
        )
        trace, _ = sharpness.hessian_trace(loss_fn, p, data, key=jax.random.key(1), num_samples=12)
        sam = sharpness.sam_sharpness(loss_fn, p, data, 0.05)
        return top, trace, sam

    chex.clear_trace_counter()
    swept = jax.jit(jax.vmap(chex.assert_max_traces(measures, n=1)))(stacked)
    for i in range(4):
        single = jax.jit(measures)(jax.tree.map(lambda a, i=i: a[i], stacked))
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], swept), single, rtol=2e-3, atol=1e-5
        )


def test_bad_input():
    loss_fn, data = _quadratic()
    with pytest.raises(ValueError, match="rho"):
        sharpness.sam_sharpness(loss_fn, jnp.zeros(4), data, -0.1)
    with pytest.raises(ValueError, match="num_iters"):
        sharpness.lanczos(lambda v: v, jnp.ones(3), 5)
    with pytest.raises(ValueError, match="method"):
        sharpness.hessian_trace(loss_fn, jnp.zeros(4), data, key=jax.random.key(0), method="exact")
    with pytest.raises(ValueError, match="m="):
        sharpness.sam_sharpness(loss_fn, jnp.zeros(4), data, 0.1, m=3)


@pytest.mark.parametrize("tol", [1e-3, 1e-4, 1e-6])
def test_adaptive_lanczos_stops_early_within_its_tolerance(x64, tol):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    reference = np.linalg.eigvalsh(_dense_hessian(loss_fn, params, x, y))[::-1][:5]
    values, _, info = sharpness.top_eigenvalues(
        loss_fn, params, data, key=jax.random.key(0), k=5, tol=tol, explicit_residuals=True
    )
    # The guarantee: each Ritz value lies within its residual bound of an eigenvalue.
    relative = np.abs(np.asarray(values) - reference) / np.abs(reference)
    assert relative.max() <= tol, relative
    bound = np.asarray(info["residual_bound"])
    error = np.asarray(info["error_bound"])
    assert np.all(error <= tol * np.abs(np.asarray(values)))
    assert np.all(error <= bound * (1 + 1e-12))
    # The guaranteed bound: each value lies within its residual bound of an eigenvalue.
    assert np.all(relative <= bound / np.abs(reference) + 1e-12)
    # The bound is Lanczos's cheap estimate of the explicit residual ‖Hy − θy‖.
    np.testing.assert_allclose(info["residual_norm"], bound, rtol=1e-2, atol=1e-9)
    cap = 50  # the default cap, max(2k + 20, 50), for k = 5
    assert int(info["num_iters"]) < cap and int(info["num_hvps"]) == int(info["num_iters"]) + 5
    # Checking every step stops no later than checking every fifth step.
    coarse = sharpness.top_eigenvalues(
        loss_fn, params, data, key=jax.random.key(0), k=5, tol=tol, check_every=5
    )[2]
    assert int(info["num_iters"]) <= int(coarse["num_iters"])
    if tol == 1e-3:  # the same run for every tol: once is enough
        full = sharpness.top_eigenvalues(loss_fn, params, data, key=jax.random.key(0), k=5, tol=0.0)
        assert int(full[2]["num_iters"]) == cap  # tol = 0: every step up to the cap


def test_adaptive_stopping_is_per_member_under_vmap(x64):
    _apply, params, data, loss_fn, _x, _y = _problem(jnp.float64)
    scales = jnp.array([1.0, 3.0])

    def top(scale):
        scaled = jax.tree.map(lambda a: a * scale, params)
        values, _, info = sharpness.top_eigenvalues(
            loss_fn, scaled, data, key=jax.random.key(0), k=2
        )
        return values, info["num_iters"]

    values, iters = jax.jit(jax.vmap(top))(scales)
    single = jax.jit(top)  # one compile for the unbatched references
    for i, scale in enumerate(scales.tolist()):
        single_values, single_iters = single(scale)
        np.testing.assert_allclose(values[i], single_values, rtol=1e-8)
        assert int(iters[i]) == int(single_iters)


@pytest.mark.parametrize(("method", "relative"), [("hutch++", 0.02), ("hutchinson", 0.06)])
def test_trace_at_a_requested_standard_error(x64, method, relative):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    exact = float(np.trace(_dense_hessian(loss_fn, params, x, y)))
    target = relative * abs(exact)  # plain Hutchinson is noisier: a looser target in 600 HVPs
    estimate, se = sharpness.hessian_trace(
        loss_fn,
        params,
        data,
        key=jax.random.key(5),
        method=method,
        num_samples=600,
        target_se=target,
    )
    assert 0 < float(se) <= target
    assert abs(float(estimate) - exact) <= 4 * float(se) + 1e-9

    def traced(key):
        return sharpness.hessian_trace(
            loss_fn, params, data, key=key, method=method, num_samples=600, target_se=target
        )

    keys = jax.random.split(jax.random.key(6), 2)
    swept = jax.jit(jax.vmap(traced))(keys)
    single = jax.jit(traced)  # one compile for the unbatched references
    for i in range(2):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], swept), single(keys[i]), rtol=1e-8
        )


def _largest_intermediate(fn, *args) -> int:
    """Elements of the largest array any equation of ``fn``'s jaxpr produces (loops included)."""
    largest = 0

    def visit(jaxpr):
        nonlocal largest
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return largest


@pytest.mark.parametrize("k", [1, 3])
def test_thick_restart_matches_eigh_and_the_full_basis_in_bounded_memory(x64, k):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    spectrum = np.linalg.eigvalsh(_dense_hessian(loss_fn, params, x, y))
    reference = spectrum[::-1][:k]
    n = spectrum.size
    max_basis = 2 * k + 4

    def bounded(p):
        return sharpness.top_eigenvalues(
            loss_fn,
            p,
            data,
            key=jax.random.key(0),
            k=k,
            tol=1e-6,
            max_basis=max_basis,
            explicit_residuals=True,
        )

    values, vectors, info = jax.jit(bounded)(params)
    np.testing.assert_allclose(values, reference, rtol=1e-6)
    full_values, full_vectors, _ = sharpness.top_eigenvalues(
        loss_fn, params, data, key=jax.random.key(0), k=k, tol=1e-6
    )
    np.testing.assert_allclose(values, full_values, rtol=1e-6)
    rows = jax.vmap(lambda tree: ravel_pytree(tree)[0])
    overlap = np.abs(np.sum(rows(vectors) * rows(full_vectors), axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)  # same eigenvectors, up to sign
    np.testing.assert_allclose(info["residual_norm"], info["residual_bound"], rtol=1e-3, atol=1e-9)
    assert np.all(np.asarray(info["error_bound"]) <= 1e-6 * np.abs(np.asarray(values)))
    assert int(info["num_hvps"]) > max_basis  # it had to restart
    # Memory: no intermediate holds more than max_basis + 1 parameter-sized vectors; the
    # full basis holds num_iters of them.
    assert _largest_intermediate(bounded, params) <= (max_basis + 1) * n
    full_iters = 50
    assert (
        _largest_intermediate(
            lambda p: sharpness.top_eigenvalues(loss_fn, p, data, key=jax.random.key(0), k=k),
            params,
        )
        >= full_iters * n
    )


def test_thick_restart_min_eigenvalue_and_vmap(x64):
    _apply, params, data, loss_fn, x, y = _problem(jnp.float64)
    smallest = np.linalg.eigvalsh(_dense_hessian(loss_fn, params, x, y))[0]
    value, _, info = sharpness.min_eigenvalue(
        loss_fn, params, data, key=jax.random.key(1), max_basis=8, num_iters=800
    )
    assert float(info["error_bound"][0]) <= 1e-4 * abs(float(value))
    np.testing.assert_allclose(value, smallest, rtol=1e-4)

    def top(scale):
        scaled = jax.tree.map(lambda a: a * scale, params)
        values, _, info = sharpness.top_eigenvalues(
            loss_fn, scaled, data, key=jax.random.key(0), k=2, max_basis=6
        )
        return values, info["num_hvps"]

    scales = jnp.array([1.0, 2.0])
    values, hvps = jax.jit(jax.vmap(top))(scales)
    single = jax.jit(top)  # one compile for the unbatched references
    for i, scale in enumerate(scales.tolist()):
        single_values, single_hvps = single(scale)
        np.testing.assert_allclose(values[i], single_values, rtol=1e-8)
        assert int(hvps[i]) == int(single_hvps)


def test_thick_restart_rejects_a_basis_too_small():
    loss_fn, data = _quadratic()
    with pytest.raises(ValueError, match="max_basis"):
        sharpness.top_eigenvalues(
            loss_fn, jnp.zeros(4), data, key=jax.random.key(0), k=2, max_basis=3
        )


def test_blocked_basis_writes_only_inside_its_block():
    """A row index before a block's start is negative for that block: it must not wrap around
    (NumPy-style) and overwrite the block's last rows."""
    import importlib

    lanczos = importlib.import_module("jaxreg.sharpness.lanczos")
    block = jnp.zeros((4, 3))
    for row in (-1, -4, -5, 4, 7):
        np.testing.assert_array_equal(lanczos._set_row(block, jnp.int32(row), jnp.ones(3)), 0.0)
    out = jax.jit(lanczos._set_row)(block, jnp.int32(2), jnp.ones(3))
    np.testing.assert_array_equal(out, np.eye(4)[2][:, None] * np.ones(3))


def _diagonal_quadratic(n=30):
    eigenvalues = jnp.linspace(-1.0, 6.0, n) ** 2 - 2.0  # indefinite, a spread spectrum

    def loss_fn(w, batch):
        return 0.5 * jnp.sum(batch * w**2)

    return loss_fn, jnp.ones(n), eigenvalues[None], np.asarray(eigenvalues, np.float64)


def _first_adequate_run(estimates, tol, min_runs):
    for count in range(min_runs, len(estimates) + 1):
        used = estimates[:count]
        if used.std(ddof=1) / np.sqrt(count) <= tol * abs(used.mean()):
            return count
    return len(estimates)


@pytest.mark.parametrize(("tol", "min_runs"), [(0.05, 2), (0.1, 3)])
def test_adaptive_slq_stops_where_the_trace_estimate_first_reaches_tol(tol, min_runs):
    loss_fn, params, data, eigenvalues = _diagonal_quadratic()
    key, num_runs, n = jax.random.key(4), 40, len(eigenvalues)
    full = sharpness.spectral_density(loss_fn, params, data, key=key, num_iters=8, num_runs=40)
    out = sharpness.spectral_density(
        loss_fn, params, data, key=key, num_iters=8, num_runs=num_runs, tol=tol, min_runs=min_runs
    )
    # The independent reference: each run's trace estimate n·vᵀHv/‖v‖² from its start vector.
    starts = [np.asarray(jax.random.normal(k, (n,))) for k in jax.random.split(key, num_runs)]
    estimates = np.array([n * np.sum(eigenvalues * v**2) / np.sum(v**2) for v in starts])
    runs = _first_adequate_run(estimates, tol, min_runs)
    assert 2 < runs < num_runs  # the rule decided, not a bound
    assert int(out.runs) == runs and int(full.runs) == num_runs
    np.testing.assert_allclose(out.nodes[:runs], full.nodes[:runs], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.weights[:runs], full.weights[:runs], rtol=1e-5, atol=1e-6)
    assert not np.any(out.nodes[runs:]) and not np.any(out.weights[runs:])
    np.testing.assert_allclose(
        n * np.sum(np.asarray(out.weights) * np.asarray(out.nodes), axis=1)[:runs],
        estimates[:runs],
        rtol=1e-4,
    )
    # The density of the used runs, by hand on the returned grid.
    nodes, weights = np.asarray(full.nodes[:runs]), np.asarray(full.weights[:runs])
    width = 0.01 * (nodes.max() - nodes.min())
    grid = np.asarray(out.grid)
    gauss = np.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / width) ** 2)
    by_hand = np.sum(gauss * weights[None], axis=(1, 2)) / (width * np.sqrt(2 * np.pi) * runs)
    np.testing.assert_allclose(out.density, by_hand, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(
        grid[0], nodes.min() - 0.05 * (nodes.max() - nodes.min()) - 3 * width, rtol=1e-5
    )


def test_adaptive_slq_with_zero_tol_is_the_fixed_run_and_is_per_member_under_jit_vmap():
    loss_fn, params, data, _ = _diagonal_quadratic()
    key = jax.random.key(5)
    fixed = sharpness.spectral_density(loss_fn, params, data, key=key, num_iters=8, num_runs=6)
    zero = sharpness.spectral_density(
        loss_fn, params, data, key=key, num_iters=8, num_runs=6, tol=0.0
    )
    chex.assert_trees_all_close(zero, fixed, rtol=1e-5, atol=1e-6)

    def measure(k):
        return sharpness.spectral_density(
            loss_fn, params, data, key=k, num_iters=8, num_runs=30, tol=0.05
        )

    keys = jax.random.split(jax.random.key(6), 3)
    batched = jax.jit(jax.vmap(measure))(keys)
    singles = [measure(k) for k in keys]
    assert len({int(s.runs) for s in singles}) > 1  # members stop at different runs
    for index, single in enumerate(singles):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=index: a[i], batched), single, rtol=1e-4, atol=1e-5
        )
    for bad in ({"tol": -1.0}, {"tol": 0.1, "min_runs": 1}, {"num_runs": 0}):
        with pytest.raises(ValueError, match=r"tol|min_runs|num_runs"):
            sharpness.spectral_density(loss_fn, params, data, key=key, **bad)


def _draws(key, params, num_samples):
    """The Gaussian directions the Monte Carlo measures draw: one per ``split(key, n)`` key."""
    import optax

    keys = jax.random.split(key, num_samples)
    return np.stack([np.asarray(optax.tree.random_like(k, params), np.float64) for k in keys])


@pytest.mark.parametrize("adaptive", [False, True])
def test_average_sharpness_is_the_monte_carlo_mean_of_its_draws(adaptive):
    """Given its draws z_s, average sharpness is exactly mean_s L(w + σ·s_w·z_s) − L(w)
    (s_w = |w| + η when adaptive, else 1), here in float64 NumPy on a quadratic away from
    its minimum (so the linear term σ·wᵀA z counts); the draws' expectation is ½σ²·tr(A S²)."""
    loss_fn, data = _quadratic()
    w = jnp.array([0.5, -0.2, 0.0, 1.0])
    sigma, eta, key, n = 0.05, 0.01, jax.random.key(3), 256
    ours = sharpness.average_sharpness(
        loss_fn, w, data, key=key, sigma=sigma, num_samples=n, adaptive=adaptive, eta=eta
    )
    a, w64 = np.asarray(A, np.float64), np.asarray(w, np.float64)
    scale = np.abs(w64) + eta if adaptive else np.ones(4)
    moved = w64 + sigma * scale * _draws(key, w, n)
    expected = np.mean(0.5 * np.einsum("si,ij,sj->s", moved, a, moved)) - 0.5 * w64 @ a @ w64
    # float32 loss differences: L(w) ≈ 0.9 cancels to ~1e-7 absolute.
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=5e-7)
    exact = 0.5 * sigma**2 * np.sum(np.diag(a) * scale**2)
    assert abs(float(ours) - exact) < 0.5 * exact  # and it estimates the expectation


def test_pac_bayes_flatness_solves_its_monte_carlo_curve_to_bisection_precision():
    """With its draws fixed, the curve m(σ) = σ·mean(wᵀA z) + ½σ²·mean(zᵀA z) is a quadratic
    in σ; the returned σ is its root m(σ) = target within 16 bisections of [0, 1]."""
    loss_fn, data = _quadratic()
    w = jnp.array([0.3, -0.1, 0.2, 0.4])
    key, n, target = jax.random.key(5), 64, 0.01
    ours = sharpness.pac_bayes_flatness(loss_fn, w, data, key=key, target=target, num_samples=n)
    a, w64, z = np.asarray(A, np.float64), np.asarray(w, np.float64), _draws(key, w, n)
    linear, quadratic = np.mean(z @ a @ w64), 0.5 * np.mean(np.einsum("si,ij,sj->s", z, a, z))
    root = (-linear + np.sqrt(linear**2 + 4 * quadratic * target)) / (2 * quadratic)
    assert abs(float(ours) - root) <= 2.0**-16 + 1e-6


def _quadratic_call(fn, *args, **kwargs):
    loss_fn, data = _quadratic()
    return fn(loss_fn, jnp.zeros(4), data, *args, **kwargs)


def _key():
    return jax.random.key(0)


_EXACT_ERRORS = {
    "tuple data": (
        TypeError,
        lambda: sharpness.hvp(lambda w, b: 0.0, jnp.zeros(2), (np.ones((4, 2)), np.zeros(4))),
        "data must be batches from jaxreg.data.batches(x, y, batch_size) (a dict with a "
        "leading batch-index axis), got a tuple",
    ),
    "flat weight": (
        ValueError,
        lambda: sharpness.hvp(lambda w, b: 0.0, jnp.zeros(2), {"weight": np.ones(4)}),
        "data has no batch-index axis: its 'weight' has shape (4,), expected "
        "(num_batches, batch_size); build it with jaxreg.data.batches(x, y, batch_size)",
    ),
    "lanczos iters": (
        ValueError,
        lambda: sharpness.lanczos(lambda v: v, jnp.ones(3), 4),
        "num_iters must lie in [1, 3] (the dimension), got 4",
    ),
    "lanczos no iters": (
        ValueError,
        lambda: sharpness.lanczos(lambda v: v, jnp.ones(3), 0),
        "num_iters must lie in [1, 3] (the dimension), got 0",
    ),
    "k too large": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), k=5),
        "k must be an int in [1, 4] (the number of parameters), got 5",
    ),
    "k zero": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), k=0),
        "k must be an int in [1, 4] (the number of parameters), got 0",
    ),
    "k bool": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), k=True),
        "k must be an int in [1, 4] (the number of parameters), got True",
    ),
    "k float": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), k=2.0),
        "k must be an int in [1, 4] (the number of parameters), got 2.0",
    ),
    "iters below k": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), k=3, num_iters=2),
        "num_iters=2 gives at most 2 eigenvalues; k=3",
    ),
    "tol": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), tol=-1.0),
        "tol must be >= 0 (0 runs every step up to num_iters), got -1.0",
    ),
    "tol nan": (
        ValueError,
        lambda: _quadratic_call(sharpness.min_eigenvalue, key=_key(), tol=float("nan")),
        "tol must be >= 0 (0 runs every step up to num_iters), got nan",
    ),
    "check_every": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), check_every=0),
        "check_every must be a positive int, got 0",
    ),
    "check_every bool": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), check_every=True),
        "check_every must be a positive int, got True",
    ),
    "max_basis": (
        ValueError,
        lambda: _quadratic_call(sharpness.top_eigenvalues, key=_key(), k=2, max_basis=3),
        "max_basis must be an int >= k + 2 = 4, got 3",
    ),
    "empty block": (
        ValueError,
        lambda: _quadratic_call(
            sharpness.block_top_eigenvalues, key=_key(), blocks={"none": lambda p: False}
        ),
        "block 'none' selects no parameters",
    ),
    "m": (
        ValueError,
        lambda: _quadratic_call(sharpness.sam_sharpness, 0.1, m=3),
        "m=3 must divide the batch size 2",
    ),
    "rho": (
        ValueError,
        lambda: _quadratic_call(sharpness.sam_sharpness, -0.1),
        "rho must be non-negative, got -0.1",
    ),
    "num_steps": (
        ValueError,
        lambda: _quadratic_call(sharpness.sam_sharpness, 0.1, num_steps=0),
        "num_steps must be >= 1, got 0",
    ),
    "epsilon": (
        ValueError,
        lambda: _quadratic_call(sharpness.epsilon_sharpness, -1e-3),
        "epsilon must be non-negative, got -0.001",
    ),
    "sigma": (
        ValueError,
        lambda: _quadratic_call(sharpness.average_sharpness, key=_key(), sigma=-0.5),
        "sigma must be non-negative, got -0.5",
    ),
    "target": (
        ValueError,
        lambda: _quadratic_call(sharpness.pac_bayes_flatness, key=_key(), target=-0.2),
        "target must be non-negative, got -0.2",
    ),
    "num_samples": (
        ValueError,
        lambda: _quadratic_call(sharpness.hessian_trace, key=_key(), num_samples=2),
        "num_samples must be >= 3, got 2",
    ),
    "method": (
        ValueError,
        lambda: _quadratic_call(sharpness.hessian_trace, key=_key(), method="exact"),
        "method must be 'hutch++' or 'hutchinson', got 'exact'",
    ),
    "target_se": (
        ValueError,
        lambda: _quadratic_call(sharpness.hessian_trace, key=_key(), target_se=0.0),
        "target_se must be positive, got 0.0",
    ),
    "num_runs": (
        ValueError,
        lambda: _quadratic_call(sharpness.spectral_density, key=_key(), num_runs=0),
        "num_runs must be at least 1, got 0",
    ),
    "density tol": (
        ValueError,
        lambda: _quadratic_call(sharpness.spectral_density, key=_key(), tol=-0.1),
        "tol must be non-negative, got -0.1",
    ),
    "min_runs": (
        ValueError,
        lambda: _quadratic_call(sharpness.spectral_density, key=_key(), tol=0.1, min_runs=1),
        "min_runs must lie in [2, num_runs=4], got 1",
    ),
    "min_runs above": (
        ValueError,
        lambda: _quadratic_call(sharpness.spectral_density, key=_key(), tol=0.1, min_runs=5),
        "min_runs must lie in [2, num_runs=4], got 5",
    ),
}


@pytest.mark.parametrize("case", list(_EXACT_ERRORS))
def test_bad_input_raises_the_exact_message(case):
    """The whole message, not a substring: a wrong name, bound or value in it fails."""
    error, call, message = _EXACT_ERRORS[case]
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


def _numpy_power_iteration(matrix, starts, num_iters, tol):
    """PyHessian's deflated power iteration, in float64 NumPy, from given start vectors."""
    found, values, total = np.zeros((0, matrix.shape[0])), [], 0
    for start in starts:
        v = start - found.T @ (found @ start)
        v, eig, prev, it = v / np.linalg.norm(v), 0.0, np.inf, 0
        while it < num_iters and not (it > 1 and abs(eig - prev) / (abs(prev) + 1e-6) < tol):
            hv = matrix @ v
            hv = hv - found.T @ (found @ hv)
            prev, eig, v, it = eig, hv @ v, hv / np.linalg.norm(hv), it + 1
        found, total = np.vstack([found, v]), total + it
        values.append(eig)
    return np.array(values), found, total


@pytest.mark.parametrize(("num_iters", "tol"), [(100, 1e-3), (7, 1e-12)])
def test_power_iteration_matches_a_numpy_reference_step_for_step(x64, num_iters, tol):
    """Close top eigenvalues (5, 4.5) make the iteration slow: the counts and values must
    agree exactly with the reference, also when the iteration cap stops it."""
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]
    matrix = rotation @ np.diag([5.0, 4.5, 1.0, -0.5]) @ rotation.T
    data = batches(jnp.zeros((4, 1)), jnp.zeros(4), 2)
    key = jax.random.key(2)
    out = sharpness.power_iteration(
        lambda w, b: 0.5 * w @ matrix @ w, jnp.zeros(4), data, key=key, k=2,
        num_iters=num_iters, tol=tol,
    )  # fmt: skip
    starts = [np.asarray(jax.random.normal(jax.random.fold_in(key, i), (4,))) for i in range(2)]
    values, vectors, total = _numpy_power_iteration(matrix, starts, num_iters, tol)
    assert int(out.num_hvps) == total
    np.testing.assert_allclose(out.eigenvalues, values, rtol=1e-10)
    np.testing.assert_allclose(out.eigenvectors, vectors, atol=1e-8)


def test_epsilon_sharpness_from_a_random_start_draws_it_uniformly_in_the_box():
    """With no ascent steps the value is the loss at the start δ ~ U(box): on ½ Σ aᵢwᵢ² at
    w = 0 it averages 100·½ Σ aᵢ ε²/3 and never passes the corner's 100·½ Σ aᵢ ε²."""
    loss_fn, data = _quadratic()
    eps, trace = 0.1, float(np.trace(A))

    def at_start(key):
        return sharpness.epsilon_sharpness(loss_fn, jnp.zeros(4), data, eps, 0, key=key)

    values = np.asarray(jax.vmap(at_start)(jax.random.split(jax.random.key(0), 2000)))
    corner = 100 * 0.5 * trace * eps**2
    assert values.max() <= corner * (1 + 1e-6) and values.min() >= 0
    assert abs(values.mean() - corner / 3) < 0.05 * corner / 3
    ascended = sharpness.epsilon_sharpness(loss_fn, jnp.zeros(4), data, eps, key=_key())
    np.testing.assert_allclose(ascended, corner, rtol=1e-5)  # the ascent reaches the corner


def test_adaptive_average_sharpness_default_eta_is_one_hundredth(x64):
    """At w = 0 the adaptive noise is σ·η·z: the same draws give a value ∝ η²."""
    loss_fn, data = _quadratic()
    kwargs = {"key": jax.random.key(1), "sigma": 0.5, "adaptive": True}
    default = sharpness.average_sharpness(loss_fn, jnp.zeros(4), data, **kwargs)
    doubled = sharpness.average_sharpness(loss_fn, jnp.zeros(4), data, eta=0.02, **kwargs)
    np.testing.assert_allclose(default / doubled, 0.25, rtol=1e-9)


def test_pac_bayes_flatness_defaults_bisect_sixteen_times_on_zero_to_one(x64):
    """A target no σ reaches keeps every bisection's lower half: σ = 1 − 2⁻¹⁷; a metric
    that never rises meets a zero target only with equality, which is not too sharp."""
    loss_fn, data = _quadratic()
    unreachable = sharpness.pac_bayes_flatness(loss_fn, jnp.zeros(4), data, key=_key(), target=1e6)
    assert float(unreachable) == 1 - 2.0**-17
    flat = sharpness.pac_bayes_flatness(
        loss_fn, jnp.zeros(4), data, key=_key(), target=0.0, metric_fn=lambda p, b: jnp.ones(())
    )
    assert float(flat) == 1 - 2.0**-17


def _regression_chunks(n=10, batch_size=4, dim=3):
    x = np.asarray(jax.random.normal(jax.random.key(7), (n, dim)), np.float64)
    y = np.asarray(jax.random.normal(jax.random.key(8), (n,)), np.float64)

    def loss_fn(w, batch):  # the batch's weighted mean: padding rows weigh 0
        return jnp.sum(example_weights(batch) * 0.5 * jnp.square(batch["x"] @ w - batch["y"]))

    return x, y, loss_fn, batches(jnp.asarray(x), jnp.asarray(y), batch_size)


def test_m_sharpness_averages_each_sub_batch_sam_step_and_skips_padding(x64):
    """m = 2 on 10 examples in batches of 4 (two padding rows): five real sub-batches, each
    with SAM's one step ε = ρ g_S/‖g_S‖ on its own loss, averaged (NumPy reference)."""
    x, y, loss_fn, data = _regression_chunks()
    w, rho = np.array([0.3, -0.2, 0.1]), 0.05

    def chunk_loss(v, xs, ys):
        return 0.5 * np.mean((xs @ v - ys) ** 2)

    expected = []
    for start in range(0, 10, 2):
        xs, ys = x[start : start + 2], y[start : start + 2]
        g = xs.T @ (xs @ w - ys) / 2
        expected.append(chunk_loss(w + rho * g / np.linalg.norm(g), xs, ys) - chunk_loss(w, xs, ys))
    ours = sharpness.sam_sharpness(loss_fn, jnp.asarray(w), data, rho, m=2)
    np.testing.assert_allclose(ours, np.mean(expected), rtol=1e-10)


def test_m_sharpness_from_random_starts_finds_each_sub_batch_top_eigenvalue(x64):
    """At a minimum of every sub-batch (y = 0, w = 0) the gradient is zero: only each
    sub-batch's own random start lets the ascent reach ρ²·λmax(H_S)/2."""
    x, _, loss_fn, _ = _regression_chunks()
    data = batches(jnp.asarray(x), jnp.zeros(10), 4)
    rho = 0.1
    tops = [np.linalg.eigvalsh(x[s : s + 2].T @ x[s : s + 2] / 2)[-1] for s in range(0, 10, 2)]
    ours = sharpness.sam_sharpness(
        loss_fn, jnp.zeros(3), data, rho, num_steps=200, m=2, key=jax.random.key(1)
    )
    np.testing.assert_allclose(ours, rho**2 * np.mean(tops) / 2, rtol=1e-6)
    assert float(sharpness.sam_sharpness(loss_fn, jnp.zeros(3), data, rho, m=2)) == 0.0


def test_adaptive_sam_default_eta_is_one_hundredth(x64):
    """At w = 0 ASAM's ball is η·ρ wide: from the same start the value scales as η²."""
    loss_fn, data = _quadratic()
    kwargs = {"adaptive": True, "num_steps": 5, "key": jax.random.key(2)}
    default = sharpness.sam_sharpness(loss_fn, jnp.zeros(4), data, 0.3, **kwargs)
    doubled = sharpness.sam_sharpness(loss_fn, jnp.zeros(4), data, 0.3, eta=0.02, **kwargs)
    np.testing.assert_allclose(default / doubled, 0.25, rtol=1e-9)


def test_adaptive_hutchinson_follows_its_stopping_rule_probe_block_by_block(x64):
    """Blocks of Rademacher probes (key fold_in(key, block)) until, after two blocks, the
    standard error sd(ddof=1)/√count falls to target_se: NumPy reference, same draws."""
    rotation = np.linalg.qr(np.random.default_rng(1).standard_normal((6, 6)))[0]
    matrix = rotation @ np.diag([6.0, 3.0, 2.0, 1.0, -1.0, 0.5]) @ rotation.T
    data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
    key, probe_batch, cap = jax.random.key(4), 3, 60
    for target in (0.9, 0.45, 1e-9):  # stops early, later, at the cap
        quads = []
        for block in range(cap // probe_batch):
            probes = np.asarray(
                jax.random.rademacher(jax.random.fold_in(key, block), (probe_batch, 6), float)
            )
            quads.extend(np.einsum("pi,ij,pj->p", probes, matrix, probes))
            se = np.std(quads, ddof=1) / np.sqrt(len(quads))
            if block >= 1 and se <= target:
                break
        estimate, ours_se = sharpness.hessian_trace(
            lambda w, b: 0.5 * w @ matrix @ w, jnp.zeros(6), data, key=key,
            method="hutchinson", num_samples=cap, probe_batch=probe_batch, target_se=target,
        )  # fmt: skip
        np.testing.assert_allclose([estimate, ours_se], [np.mean(quads), se], rtol=1e-10)


@pytest.mark.parametrize("min_runs", [2, 3])
def test_adaptive_slq_stops_at_min_runs_once_the_rule_holds(min_runs):
    """A loose tol holds from the first check: the runs stop at min_runs, not one later."""
    loss_fn, params, data, _ = _diagonal_quadratic()
    out = sharpness.spectral_density(
        loss_fn, params, data, key=_key(), num_iters=4, num_runs=6, tol=1e3, min_runs=min_runs
    )
    assert int(out.runs) == min_runs


@pytest.mark.parametrize("largest", [True, False])
def test_thick_restart_without_a_restart_stops_where_plain_lanczos_stops(x64, largest):
    """A basis big enough never to restart: the same steps, and the same stopping rule on
    the wanted end of the spectrum, as plain Lanczos."""
    loss_fn, params, data, _ = _diagonal_quadratic()
    kwargs = {"key": _key(), "tol": 1e-6 if largest else 1e-2, "num_iters": 30}
    if largest:
        plain = sharpness.top_eigenvalues(loss_fn, params, data, k=2, **kwargs)
        thick = sharpness.top_eigenvalues(loss_fn, params, data, k=2, max_basis=30, **kwargs)
    else:
        plain = sharpness.min_eigenvalue(loss_fn, params, data, **kwargs)
        thick = sharpness.min_eigenvalue(loss_fn, params, data, max_basis=30, **kwargs)
    assert 2 < int(plain[2]["num_hvps"]) < 30  # the tolerance decided
    assert int(thick[2]["num_hvps"]) == int(plain[2]["num_hvps"])
    np.testing.assert_allclose(thick[0], plain[0], rtol=1e-9)


def test_spectral_density_grid_width_and_defaults(x64):
    """The grid spans the nodes ± (5% of their span + 3σ), on 512 points by default; an
    explicit σ is the Gaussians' width; tol alone stops after the default 3 runs."""
    eigenvalues = np.linspace(1.0, 1.5, 6)  # a narrow spectrum: span 0.5

    def loss_fn(w, batch):
        return 0.5 * jnp.sum(batch * w**2)

    data = jnp.asarray(eigenvalues)[None]
    out = sharpness.spectral_density(loss_fn, jnp.ones(6), data, key=_key(), num_iters=6)
    nodes, weights = np.asarray(out.nodes), np.asarray(out.weights)
    span = nodes.max() - nodes.min()
    assert out.grid.shape == (512,) and 0.45 < span <= 0.5 + 1e-9
    np.testing.assert_allclose(
        [out.grid[0], out.grid[-1]],
        [nodes.min() - 0.05 * span - 0.03 * span, nodes.max() + 0.05 * span + 0.03 * span],
        rtol=1e-9,
    )
    sigma = 0.02
    wide = sharpness.spectral_density(
        loss_fn, jnp.ones(6), data, key=_key(), num_iters=6, num_points=64, sigma=sigma
    )
    grid = np.asarray(wide.grid)
    gauss = np.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2)
    by_hand = np.sum(gauss * weights[None], axis=(1, 2)) / (sigma * np.sqrt(2 * np.pi) * 4)
    np.testing.assert_allclose(wide.density, by_hand, rtol=1e-8)
    loose = sharpness.spectral_density(
        loss_fn, jnp.ones(6), data, key=_key(), num_iters=6, num_runs=6, tol=1e3
    )
    assert int(loose.runs) == 3 and out.runs.dtype == jnp.int32


def test_lanczos_of_one_step_and_float32_under_x64(x64):
    a = np.diag(np.array([3.0, 1.0, 0.5], np.float32))
    start = np.array([1.0, 2.0, 2.0], np.float32)
    out = sharpness.lanczos(lambda v: a @ v, start, 1)
    np.testing.assert_allclose(out.alphas, [start @ a @ start / (start @ start)], rtol=1e-6)
    assert out.alphas.dtype == out.betas.dtype == out.basis.dtype == jnp.float32


def test_trace_probes_one_at_a_time_give_the_same_estimate(x64):
    loss_fn, params, data, _ = _diagonal_quadratic(12)
    for method in ("hutch++", "hutchinson"):
        batched, one = (
            sharpness.hessian_trace(
                loss_fn, params, data, key=_key(), method=method, num_samples=9, probe_batch=b
            )
            for b in (4, 1)
        )
        np.testing.assert_allclose(one, batched, rtol=1e-10)


def test_top_eigenvalues_defaults_check_every_step_and_skip_explicit_residuals(x64):
    loss_fn, params, data, _ = _diagonal_quadratic()
    counts = {
        every: int(
            sharpness.top_eigenvalues(
                loss_fn, params, data, key=_key(), tol=1e-6, check_every=every
            )[2]["num_hvps"]
        )
        for every in (1, 2)
    }
    _, _, info = sharpness.top_eigenvalues(loss_fn, params, data, key=_key(), tol=1e-6)
    assert int(info["num_hvps"]) == counts[1] != counts[2] and "residual_norm" not in info
    _, _, fixed = sharpness.top_eigenvalues(loss_fn, params, data, key=_key(), num_iters=5, tol=0)
    assert int(fixed["num_hvps"]) == 5
