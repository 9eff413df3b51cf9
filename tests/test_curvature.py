"""Curvature operators against dense float64 references built independently.

References: the GGN as ``Jᵀ H J`` with ``J = jax.jacobian`` of all logits in
the flat parameters and ``H = jax.hessian`` of each example's loss in its
logits; the Fisher by enumerating every class label; the empirical Fisher from
``jax.grad`` per example. Padded and weighted examples are part of the data.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxreg import curvature, masks
from jaxreg.data import batches


def _mlp(params, x):
    hidden = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return hidden @ params["out"]["kernel"] + params["out"]["bias"]


def _params(dtype=jnp.float64, outputs=3):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return {
        "hidden": {
            "kernel": jax.random.normal(k1, (4, 5), dtype),
            "bias": 0.1 * jax.random.normal(k3, (5,), dtype),
        },
        "out": {
            "kernel": jax.random.normal(k2, (5, outputs), dtype),
            "bias": jnp.zeros(outputs, dtype),
        },
    }


def _data(dtype=jnp.float64, regression=False):
    x = jax.random.normal(jax.random.key(1), (11, 4), dtype)
    y = jax.random.normal(jax.random.key(2), (11, 2), dtype) if regression else jnp.arange(11) % 3
    weight = jnp.array([1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0], dtype)
    return x, y, weight, batches(x, y, 4, weight=weight)  # 3 batches, the last one padded


def _per_example_loss_hessians(logits, y, regression, sigma):
    if regression:
        loss = lambda f, t: 0.5 * jnp.sum((f - t) ** 2) / sigma**2  # noqa: E731
    else:
        loss = lambda f, t: -jax.nn.log_softmax(f)[t]  # noqa: E731
    return jax.vmap(jax.hessian(loss))(logits, y)


def _dense_ggn(params, x, y, weight, regression=False, sigma=1.0):
    flat, unravel = ravel_pytree(params)
    logits = _mlp(params, x)
    jac = jax.jacobian(lambda f: _mlp(unravel(f), x))(flat)  # (n, C, P)
    hess = _per_example_loss_hessians(logits, y, regression, sigma)
    per_example = jnp.einsum("ncp,ncd,ndq->npq", jac, hess, jac)
    return jnp.einsum("n,npq->pq", weight, per_example) / jnp.sum(weight)


@pytest.mark.parametrize("regression", [False, True])
def test_ggn_matrix_diagonal_and_product_equal_j_t_h_j(x64, regression):
    params = _params(outputs=2 if regression else 3)
    x, y, weight, data = _data(regression=regression)
    likelihood = "regression" if regression else "classification"
    reference = _dense_ggn(params, x, y, weight, regression, sigma=0.5)
    kw = dict(likelihood=likelihood, sigma_noise=0.5)
    matrix = curvature.ggn_matrix(_mlp, params, data, **kw)
    np.testing.assert_allclose(matrix, reference, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        curvature.ggn_diagonal(_mlp, params, data, **kw), np.diag(reference), rtol=1e-10, atol=1e-12
    )
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.key(3), flat.shape, flat.dtype)
    product = ravel_pytree(curvature.ggn_vp(_mlp, params, data, **kw)(unravel(v)))[0]
    np.testing.assert_allclose(product, reference @ v, rtol=1e-10, atol=1e-12)


def test_fisher_by_enumeration_equals_the_ggn_and_mc_fisher_converges_to_it(x64):
    params = _params()
    x, _, weight, data = _data()
    flat, unravel = ravel_pytree(params)

    def grad_at(label, xi):
        return jax.grad(lambda f: -jax.nn.log_softmax(_mlp(unravel(f), xi[None])[0])[label])(flat)

    probs = jax.nn.softmax(_mlp(params, x))
    grads = jax.vmap(lambda xi: jax.vmap(lambda c: grad_at(c, xi))(jnp.arange(3)))(x)
    fisher = jnp.einsum("n,nc,ncp,ncq->pq", weight, probs, grads, grads) / jnp.sum(weight)
    np.testing.assert_allclose(
        curvature.ggn_matrix(_mlp, params, data), fisher, rtol=1e-9, atol=1e-12
    )

    v = jax.random.normal(jax.random.key(4), flat.shape, flat.dtype)
    draws = jax.vmap(
        lambda k: ravel_pytree(
            curvature.mc_fisher_vp(_mlp, params, data, key=k, num_samples=4)(unravel(v))
        )[0]
    )(jax.random.split(jax.random.key(5), 200))
    mean, error = draws.mean(0), draws.std(0) / np.sqrt(len(draws))
    z = np.abs(mean - fisher @ v) / np.maximum(error, 1e-12)
    assert np.mean(z < 4) > 0.97, z  # unbiased: within 4 standard errors
    single = ravel_pytree(
        curvature.mc_fisher_vp(_mlp, params, data, key=jax.random.key(6))(unravel(v))
    )[0]
    assert np.linalg.norm(single - fisher @ v) > 1e-3  # and random: one draw is not the Fisher


def test_empirical_fisher_equals_mean_outer_product_of_per_example_gradients(x64):
    params = _params()
    x, y, weight, data = _data()
    flat, unravel = ravel_pytree(params)
    grads = jax.vmap(
        lambda xi, yi: jax.grad(lambda f: -jax.nn.log_softmax(_mlp(unravel(f), xi[None])[0])[yi])(
            flat
        )
    )(x, y)
    reference = jnp.einsum("n,np,nq->pq", weight, grads, grads) / jnp.sum(weight)
    np.testing.assert_allclose(
        curvature.empirical_fisher_matrix(_mlp, params, data), reference, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        curvature.empirical_fisher_diagonal(_mlp, params, data), np.diag(reference), rtol=1e-10
    )
    v = jax.random.normal(jax.random.key(7), flat.shape, flat.dtype)
    product = ravel_pytree(curvature.empirical_fisher_vp(_mlp, params, data)(unravel(v)))[0]
    np.testing.assert_allclose(product, reference @ v, rtol=1e-10, atol=1e-12)
    assert not np.allclose(reference, curvature.ggn_matrix(_mlp, params, data), rtol=0.1)


def test_last_layer_restriction_is_the_matching_block_of_the_full_matrix(x64):
    params = _params()
    _, _, _, data = _data()
    full = curvature.ggn_matrix(_mlp, params, data)
    last = curvature.ggn_matrix(_mlp, params, data, wrt=masks.by_path(r"^out/"))
    # ravel order: hidden/bias, hidden/kernel, out/bias, out/kernel -> the last 3 + 15 entries
    np.testing.assert_allclose(last, full[-18:, -18:], rtol=1e-12)
    chosen = curvature.subset(params, masks.by_path(r"^out/"))
    assert chosen.num_groups == 2 and chosen.sizes == (3, 15)


def test_hutchinson_diagonal_is_unbiased_with_an_honest_standard_error(x64):
    params = _params()
    _, _, _, data = _data()
    exact = ravel_pytree(curvature.ggn_diagonal(_mlp, params, data))[0]
    product = curvature.ggn_vp(_mlp, params, data)
    estimate = curvature.hutchinson_diagonal(
        product, params, key=jax.random.key(8), num_samples=400
    )
    mean = ravel_pytree(estimate.diagonal)[0]
    error = ravel_pytree(estimate.standard_error)[0]
    z = np.abs(mean - exact) / error
    assert np.mean(z < 3.5) > 0.95 and np.max(z) < 6
    assert np.all(error > 0)


def test_curvature_errors_name_the_argument():
    params = _params(jnp.float32)
    _, _, _, data = _data(jnp.float32)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        curvature.ggn_matrix(_mlp, params, data, likelihood="poisson")
    with pytest.raises(ValueError, match="num_samples"):
        curvature.mc_fisher_vp(_mlp, params, data, key=jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match="wrt selects no parameter"):
        curvature.ggn_diagonal(_mlp, params, data, wrt={"hidden": False, "out": False})


def test_curvature_runs_in_float32_under_jit_and_vmap_over_models():
    stack = jax.tree.map(lambda a: jnp.stack([a, 1.1 * a]), _params(jnp.float32))
    _, _, _, data = _data(jnp.float32)
    diag = jax.jit(jax.vmap(lambda p: curvature.ggn_diagonal(_mlp, p, data)))(stack)
    for i in range(2):
        one = curvature.ggn_diagonal(_mlp, jax.tree.map(lambda a, i=i: a[i], stack), data)
        chex.assert_trees_all_close(diag[i], one, rtol=1e-5, atol=1e-7)


def _numpy_angles(exact_vectors, vectors):
    cosines = np.clip(np.linalg.svd(exact_vectors.T @ vectors, compute_uv=False), -1, 1)
    return np.sort(np.arccos(cosines))


def test_audit_against_numpy_eigendecompositions_of_the_dense_ggn(x64):
    params = _params()
    x, y, weight, data = _data()
    reference = np.asarray(_dense_ggn(params, x, y, weight))
    values, vectors = np.linalg.eigh(reference)
    values, vectors = values[::-1][:3], vectors[:, ::-1][:, :3]
    audit = curvature.audit_curvature(
        _mlp,
        params,
        data,
        key=jax.random.key(9),
        k=3,
        last_layer=masks.by_path(r"^out/"),
        num_iters=43,
        tol=1e-12,
    )
    np.testing.assert_allclose(audit.exact_eigenvalues, values, rtol=1e-6)

    diagonal = np.diag(reference)
    top = np.argsort(diagonal)[::-1][:3]
    diag = audit.approximations["diag"]
    np.testing.assert_allclose(diag.eigenvalues, diagonal[top], rtol=1e-10)
    np.testing.assert_allclose(
        diag.relative_error, np.abs(diagonal[top] - values) / values, rtol=1e-6
    )
    axes = np.eye(len(diagonal))[:, top]
    np.testing.assert_allclose(diag.principal_angles, _numpy_angles(vectors, axes), atol=1e-5)

    block_values, block_vectors = np.linalg.eigh(reference[-18:, -18:])
    embedded = np.zeros((len(diagonal), 3))
    embedded[-18:] = block_vectors[:, ::-1][:, :3]
    last = audit.approximations["last_layer"]
    np.testing.assert_allclose(last.eigenvalues, block_values[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(last.principal_angles, _numpy_angles(vectors, embedded), atol=1e-5)
    assert np.all(last.principal_angles < np.pi / 2 + 1e-9)


def test_audit_of_a_sweep_is_one_vmapped_call():
    stack = jax.tree.map(lambda a: jnp.stack([a, 0.7 * a]), _params(jnp.float32))
    _, _, _, data = _data(jnp.float32)

    def run(p):
        return (
            curvature.audit_curvature(_mlp, p, data, key=jax.random.key(9), k=2)
            .approximations["diag"]
            .relative_error
        )

    errors = jax.jit(jax.vmap(run))(stack)
    for i in range(2):
        one = run(jax.tree.map(lambda a, i=i: a[i], stack))
        chex.assert_trees_all_close(errors[i], one, rtol=1e-3, atol=1e-5)
