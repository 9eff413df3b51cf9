"""KFAC/EKFAC factors and the Kronecker-factored Laplace against dense float64 references.

References: the dense GGN ``Σₙ Jₙᵀ∇²ℓₙJₙ`` (:func:`jaxreg.curvature.ggn_matrix`, itself
checked against ``JᵀHJ`` in ``test_curvature.py``), the hidden activations computed
by hand, and the block-diagonal precision assembled with ``jnp.kron`` and inverted
or log-determined by numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxreg
from jaxreg import curvature, laplace, masks
from jaxreg.curvature import (
    dense_layers,
    ekfac_eigenvalues,
    ggn_matrix,
    kfac_factors,
    per_example_jacobians,
    subset,
)
from jaxreg.data import batches


def _params(key=0):
    k = jax.random.split(jax.random.key(key), 5)
    return {  # a Flax-style kernel (in, out), an Equinox/PyTorch-style weight (out, in)
        "hidden": {"kernel": jax.random.normal(k[0], (3, 4)),
                   "bias": 0.1 * jax.random.normal(k[1], (4,))},
        "out": {"weight": jax.random.normal(k[2], (3, 4)),
                "bias": 0.1 * jax.random.normal(k[3], (3,))},
        "scale": 1.0 + 0.1 * jax.random.normal(k[4], (4,)),  # not dense: kept diagonal
    }  # fmt: skip


def _hidden(params, x):
    return jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"]) * params["scale"]


def _apply(params, x):
    return _hidden(params, x) @ params["out"]["weight"].T + params["out"]["bias"]


def _data(n=11, batch=4):
    x = jax.random.normal(jax.random.key(7), (n, 3))
    return x, batches(x, jnp.arange(n) % 3, batch)  # a padded last batch


def _block(matrix, chosen, leaf):
    offsets = np.cumsum([0, *chosen.sizes])
    i = chosen.paths.index(leaf)
    return matrix[offsets[i] : offsets[i + 1], offsets[i] : offsets[i + 1]]


def _kron_block(f):
    a, g = f.inputs, f.output_grads
    return jnp.kron(a, g) if f.layer.layout == "in_out" else jnp.kron(g, a)


def test_dense_layers_pair_kernels_with_biases_by_name_and_layout():
    params = _params()
    found = {layer.path: layer.layout for layer in dense_layers(params)}
    assert found == {"hidden": "in_out", "out": "out_in"}
    odd = {"conv": {"kernel": jnp.zeros((3, 3, 1, 2)), "bias": jnp.zeros(2)},
           "no_bias": {"kernel": jnp.zeros((2, 2))},
           "wrong_size": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(2)}}  # fmt: skip
    assert dense_layers(odd) == ()
    with pytest.raises(ValueError, match="params has no dense layer"):
        kfac_factors(lambda p, x: x, odd, _data()[1])


def test_kfac_is_the_exact_ggn_block_for_one_example(x64):
    params = _params()
    x, _ = _data()
    data = batches(x[:1], jnp.zeros(1, int), 1)
    exact, chosen = ggn_matrix(_apply, params, data), subset(params)
    for f in kfac_factors(_apply, params, data):
        np.testing.assert_allclose(
            _kron_block(f), _block(exact, chosen, f.layer.kernel), atol=1e-12
        )
        np.testing.assert_allclose(f.output_grads, _block(exact, chosen, f.layer.bias), atol=1e-12)


def test_kfac_factors_are_the_layer_input_and_bias_moments_over_padded_batches(x64):
    params = _params()
    x, data = _data()
    hidden, out = kfac_factors(_apply, params, data)
    h = np.asarray(_hidden(params, x))
    np.testing.assert_allclose(hidden.inputs, np.asarray(x).T @ np.asarray(x) / len(x), rtol=1e-12)
    np.testing.assert_allclose(out.inputs, h.T @ h / len(x), rtol=1e-12)
    exact, chosen = ggn_matrix(_apply, params, data), subset(params)
    for f in (hidden, out):  # G is the bias's exact GGN block; A ⊗ G only approximates the kernel's
        np.testing.assert_allclose(f.output_grads, _block(exact, chosen, f.layer.bias), atol=1e-12)
        assert float(f.rank_one_error) < 1e-6
    error = jnp.linalg.norm(_kron_block(out) - _block(exact, chosen, out.layer.kernel))
    assert 1e-3 < float(error / jnp.linalg.norm(_block(exact, chosen, out.layer.kernel))) < 1.0


def test_ekfac_is_the_exact_ggn_diagonal_in_the_kfac_eigenbasis(x64):
    params = _params()
    _, data = _data()
    factors = kfac_factors(_apply, params, data)
    exact, chosen = ggn_matrix(_apply, params, data), subset(params)
    for f, (qa, qg, s, s_bias) in zip(
        factors, ekfac_eigenvalues(_apply, params, data, factors), strict=True
    ):
        np.testing.assert_allclose(
            qa @ jnp.diag(jnp.linalg.eigh(f.inputs)[0]) @ qa.T, f.inputs, atol=1e-12
        )
        basis = jnp.kron(qa, qg) if f.layer.layout == "in_out" else jnp.kron(qg, qa)
        diagonal = jnp.diag(basis.T @ _block(exact, chosen, f.layer.kernel) @ basis)
        values = s if f.layer.layout == "in_out" else s.T
        np.testing.assert_allclose(values.ravel(), diagonal, atol=1e-12)
        bias_diagonal = jnp.diag(qg.T @ _block(exact, chosen, f.layer.bias) @ qg)
        np.testing.assert_allclose(s_bias, bias_diagonal, atol=1e-12)  # fmt: skip


def _shared_kernel_apply(params, x):  # one kernel over 3 positions: not rank one per example
    h = jnp.tanh(x.reshape(x.shape[0], 3, 1) * params["dense"]["kernel"] + params["dense"]["bias"])
    return h.mean(axis=1)


def test_a_kernel_shared_over_positions_is_reported_not_silently_wrong():
    params = {"dense": {"kernel": jnp.ones((1, 2)), "bias": jnp.array([0.1, -0.2])}}
    data = batches(jax.random.normal(jax.random.key(0), (8, 3)), jnp.zeros(8, int), 4)
    (f,) = kfac_factors(_shared_kernel_apply, params, data)
    assert float(f.rank_one_error) > 0.1
    with pytest.raises(ValueError, match="layer 'dense' is not a dense layer applied once"):
        laplace.fit_laplace(_shared_kernel_apply, params, data, structure="kron")


def test_examples_whose_layer_output_is_dead_are_counted_and_refused():
    params = {"hidden": {"kernel": jnp.ones((2, 3)), "bias": -3.0 * jnp.ones(3)},
              "out": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}  # fmt: skip

    def relu_mlp(p, x):
        hidden = jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return hidden @ p["out"]["kernel"] + p["out"]["bias"]

    x = jnp.array([[2.0, 2.0], [3.0, 1.0], [2.5, 2.0], [0.0, 0.0]])  # the last: every ReLU off
    hidden, out = kfac_factors(relu_mlp, params, batches(x, jnp.zeros(4, int), 2))
    assert float(hidden.unrecovered) == 0.25 and float(out.unrecovered) == 0.0
    alive = np.asarray(x[:3])
    np.testing.assert_allclose(hidden.inputs, alive.T @ alive / 4, rtol=1e-6)
    with pytest.raises(ValueError, match=r"for 25\.0% of the data its outputs have no effect"):
        laplace.fit_laplace(relu_mlp, params, batches(x, jnp.zeros(4, int), 2), structure="kron")


def _dense_reference(la, factors, exact, chosen, structure, decomposed):
    """The block-diagonal curvature assembled densely (kernel, bias, diagonal blocks)."""
    blocks = {}
    for f, (qa, qg, s, s_bias) in zip(factors, decomposed, strict=True):
        if structure == "kron":
            blocks[f.layer.kernel], blocks[f.layer.bias] = _kron_block(f), f.output_grads
        else:
            values = s if f.layer.layout == "in_out" else s.T
            basis = jnp.kron(qa, qg) if f.layer.layout == "in_out" else jnp.kron(qg, qa)
            blocks[f.layer.kernel] = basis @ jnp.diag(values.ravel()) @ basis.T
            blocks[f.layer.bias] = qg @ jnp.diag(s_bias) @ qg.T
    for leaf in chosen.paths:
        if leaf not in blocks:
            blocks[leaf] = jnp.diag(jnp.diag(_block(exact, chosen, leaf)))
    return jax.scipy.linalg.block_diag(*[blocks[leaf] for leaf in chosen.paths])


@pytest.mark.parametrize("structure", ["kron", "ekfac"])
def test_kron_laplace_equals_its_dense_block_diagonal_reference(x64, structure):
    params = _params()
    x, data = _data()
    la = laplace.fit_laplace(_apply, params, data, structure=structure)
    factors = kfac_factors(_apply, params, data)
    decomposed = ekfac_eigenvalues(_apply, params, data, factors)
    exact, chosen = ggn_matrix(_apply, params, data), subset(params)
    curvature = _dense_reference(la, factors, exact, chosen, structure, decomposed)
    delta = jnp.array([0.5, 1.0, 2.0, 3.0, 4.0])  # per group: a layer-wise prior
    prior = laplace.prior_precision_vector(la, delta)
    precision = len(x) * curvature + jnp.diag(prior)
    covariance = np.linalg.inv(np.asarray(precision))
    np.testing.assert_allclose(laplace.posterior_precision_matrix(la, delta), precision, atol=1e-10)
    log_det = np.linalg.slogdet(np.asarray(precision))[1]
    evidence = -la.fit_term - 0.5 * (
        log_det - jnp.sum(jnp.log(prior)) + jnp.sum(prior * la.mean**2)
    )
    np.testing.assert_allclose(laplace.log_marginal_likelihood(la, delta), evidence, rtol=1e-12)
    np.testing.assert_allclose(
        laplace.posterior_variance(la, delta), np.diag(covariance), rtol=1e-10
    )
    root = laplace.posterior_scale(la, delta)
    np.testing.assert_allclose(root @ root.T, covariance, atol=1e-12)
    jac = per_example_jacobians(_apply, chosen, x[:4])
    logit_var = np.einsum("ncp,pq,ncq->nc", jac, covariance, jac)
    pred = laplace.glm_predictive(la, _apply, x[:4], prior_precision=delta)
    np.testing.assert_allclose(pred.variance, logit_var, rtol=1e-10)
    key = jax.random.key(3)
    noise = jax.random.normal(key, (6, la.mean.shape[0]), jnp.float64)
    samples = jnp.stack([_apply(chosen.combine(la.mean + root @ z), x[:4]) for z in noise])
    sampled = laplace.sample_predictive(
        la, _apply, x[:4], prior_precision=delta, key=key, num_samples=6
    )
    np.testing.assert_allclose(sampled.mean, jax.nn.softmax(samples, -1).mean(0), rtol=1e-10)


def test_a_last_layer_kron_laplace_is_its_two_blocks(x64):
    params = _params()
    x, data = _data()
    la = laplace.fit_laplace(_apply, params, data, structure="kron", wrt=masks.by_path(r"^out/"))
    out = next(f for f in kfac_factors(_apply, params, data) if f.layer.path == "out")
    curvature = jax.scipy.linalg.block_diag(out.output_grads, _kron_block(out))  # bias, weight
    precision = len(x) * curvature + 2.0 * jnp.eye(curvature.shape[0])
    log_det = np.linalg.slogdet(np.asarray(precision))[1]
    prior_terms = -curvature.shape[0] * np.log(2.0) + 2.0 * jnp.sum(la.mean**2)
    evidence = -la.fit_term - 0.5 * (log_det + prior_terms)
    assert la.group_names == ("out/bias", "out/weight")
    np.testing.assert_allclose(laplace.log_marginal_likelihood(la, 2.0), evidence, rtol=1e-12)


def test_kron_evidence_tuning_agrees_between_mackay_and_gradient(x64):
    params = _params()
    _, data = _data()
    la = laplace.fit_laplace(_apply, params, data, structure="kron")
    mackay = laplace.optimize_prior_precision(la, method="mackay", num_steps=200)
    gradient = laplace.optimize_prior_precision(la, method="gradient", num_steps=400)
    np.testing.assert_allclose(mackay, gradient, rtol=1e-3)
    grad = jax.grad(lambda d: laplace.log_marginal_likelihood(la, d))(mackay)
    assert abs(float(grad)) < 1e-6


def test_kron_laplace_runs_under_jit_and_vmap_over_a_stack_of_models():
    _, data = _data()
    stacked = jax.tree.map(lambda *a: jnp.stack(a), _params(0), _params(1))

    def evidence(params):
        la = laplace.fit_laplace(_apply, params, data, structure="kron")
        return laplace.log_marginal_likelihood(
            la, laplace.optimize_prior_precision(la, num_steps=20)
        )

    vmapped = jax.jit(jax.vmap(evidence))(stacked)
    one_by_one = [evidence(jax.tree.map(lambda a, i=i: a[i], stacked)) for i in range(2)]
    np.testing.assert_allclose(vmapped, one_by_one, rtol=1e-5)


@pytest.mark.parametrize("framework", ["nnx", "equinox"])
def test_kron_laplace_of_a_stock_model_equals_the_same_network_written_as_a_function(
    x64, framework
):
    if framework == "nnx":
        model = jaxreg.nn.from_nnx(jaxreg.nn.MLP((3, 5, 3), rngs=nnx.Rngs(0)))
    else:  # Equinox params are a (callable) module: masks over them are trees, not functions
        import equinox as eqx

        mlp = eqx.nn.MLP(3, 3, 5, 1, activation=jax.nn.relu, key=jax.random.key(0))
        model = jaxreg.nn.from_equinox(mlp)
    _, data = _data()
    layers = dense_layers(model.params)
    layout = "in_out" if framework == "nnx" else "out_in"
    assert [layer.layout for layer in layers] == [layout, layout]
    leaves = jax.tree.leaves(model.params)
    name = "kernel" if layout == "in_out" else "weight"
    plain = [{name: leaves[layer.kernel], "bias": leaves[layer.bias]} for layer in layers]

    def by_hand(params, x):
        kernels = [p["kernel"] if layout == "in_out" else p["weight"].T for p in params]
        hidden = jax.nn.relu(x @ kernels[0] + params[0]["bias"])
        return hidden @ kernels[1] + params[1]["bias"]

    ours = laplace.fit_laplace(model.bind(), model.params, data, structure="kron")
    reference = laplace.fit_laplace(by_hand, plain, data, structure="kron")
    for delta in (0.1, 3.0):
        np.testing.assert_allclose(
            laplace.log_marginal_likelihood(ours, delta),
            laplace.log_marginal_likelihood(reference, delta),
            rtol=1e-12,
        )


def test_diag_and_kron_laplace_memory_is_linear_in_the_parameters_full_is_not():
    """XLA's compile-time temporary memory: per parameter constant for diag and kron."""
    train = batches(jnp.zeros((256, 8)), jnp.zeros(256, int), 64)

    def mlp(p, x):
        return (
            jax.nn.relu(x @ p["h"]["kernel"] + p["h"]["bias"]) @ p["o"]["kernel"] + p["o"]["bias"]
        )

    def per_parameter(width, structure):
        params = {"h": {"kernel": jnp.ones((8, width)), "bias": jnp.ones(width)},
                  "o": {"kernel": jnp.ones((width, 4)), "bias": jnp.ones(4)}}  # fmt: skip

        def evidence(p):
            la = laplace.fit_laplace(mlp, p, train, structure=structure)
            return laplace.log_marginal_likelihood(la, 1.0)

        analysis = jax.jit(evidence).lower(params).compile().memory_analysis()
        return analysis.temp_size_in_bytes / sum(a.size for a in jax.tree.leaves(params))

    for structure in ("diag", "kron"):
        small, large = per_parameter(32, structure), per_parameter(128, structure)
        assert 0.7 < large / small < 1.3, (structure, small, large)
    assert per_parameter(128, "full") / per_parameter(32, "full") > 2.5


def test_audit_of_kfac_against_numpy_eigendecompositions(x64):
    params = _params()
    _, data = _data()
    factors = kfac_factors(_apply, params, data)
    exact, chosen = ggn_matrix(_apply, params, data), subset(params)
    decomposed = ekfac_eigenvalues(_apply, params, data, factors)
    exact_values, exact_vectors = np.linalg.eigh(np.asarray(exact))
    exact_top = exact_values[::-1][:3]
    audit = curvature.audit_curvature(_apply, params, data, key=jax.random.key(0), k=3, kfac=True,
                                      num_iters=exact.shape[0], tol=1e-12)  # fmt: skip
    for structure in ("kron", "ekfac"):
        approx = _dense_reference(None, factors, exact, chosen, structure, decomposed)
        values, vectors = np.linalg.eigh(np.asarray(approx))
        top, got = values[::-1][:3], audit.approximations[structure]
        np.testing.assert_allclose(got.eigenvalues, top, rtol=1e-8)
        np.testing.assert_allclose(
            got.relative_error, np.abs(top - exact_top) / exact_top, rtol=1e-6
        )
        overlap = exact_vectors[:, ::-1][:, :3].T @ vectors[:, ::-1][:, :3]
        angles = np.sort(np.arccos(np.clip(np.linalg.svd(overlap, compute_uv=False), -1, 1)))
        np.testing.assert_allclose(got.principal_angles, angles, atol=1e-5)
