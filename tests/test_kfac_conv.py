"""KFAC factors of convolutions against NumPy im2col and a hand-written per-position model.

References: input patches cut out of the padded image by NumPy loops; output
gradients per position from a hand-written model ``patches @ W + b + δ`` (the
gradient in ``δ``), never from the jaxpr interpreter under test; the softmax's
Hessian root in NumPy; and, for one output position and one example, the exact
GGN block (:func:`jaxreg.curvature.ggn_matrix`, itself checked against
``JᵀHJ`` in ``test_curvature.py``). The Kronecker-factored Laplace of a CNN
against its block-diagonal precision assembled with ``jnp.kron`` and
log-determined by NumPy.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from jaxreg import laplace
from jaxreg.curvature import (
    ConvLayer,
    audit_curvature,
    conv_ekfac_eigenvalues,
    conv_kfac_factors,
    conv_layers,
    ekfac_eigenvalues,
    ggn_matrix,
    kfac_factors,
    subset,
)
from jaxreg.data import batches
from jaxreg.nn import from_equinox, from_nnx, patch_conv

KERNEL, STRIDES, OUT, CLASSES = (3, 2), (2, 1), 4, 3
SHAPE = (7, 6, 2)  # height, width, in-channels
PADS = ((1, 1), (0, 1))  # "SAME" for a (3, 2) kernel at strides (2, 1) on 7 × 6


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Conv(OUT, KERNEL, STRIDES, padding="SAME", name="conv")(x)
        return nn.Dense(CLASSES, name="head")(jnp.tanh(h).mean(axis=(1, 2)))


def _setup(n=5, dtype=jnp.float64):
    x = np.asarray(jax.random.normal(jax.random.key(0), (n, *SHAPE)), dtype)
    params = _Net().init(jax.random.key(1), jnp.asarray(x[:1]))
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    return x, params


def _numpy_patches(image):
    """``(T, kh·kw·in)`` in (kh, kw, in) order, one row per output position."""
    padded = np.pad(image, (*PADS, (0, 0)))
    rows = []
    for i in range(0, padded.shape[0] - KERNEL[0] + 1, STRIDES[0]):
        for j in range(0, padded.shape[1] - KERNEL[1] + 1, STRIDES[1]):
            rows.append(padded[i : i + KERNEL[0], j : j + KERNEL[1]].ravel())
    return np.stack(rows)


def _reference(x, params, approximation):
    """``(A, G)`` from NumPy patches and a hand-written model with per-position ``δ``."""
    p = params["params"]
    kernel = p["conv"]["kernel"].reshape(-1, OUT)

    def logits(delta, patches):
        h = jnp.tanh(patches @ kernel + p["conv"]["bias"] + delta).mean(axis=0)
        return h @ p["head"]["kernel"] + p["head"]["bias"]

    a_sum, g_sum = 0.0, 0.0
    for image in x:
        patches = _numpy_patches(image)
        delta = np.zeros((patches.shape[0], OUT))
        jac = np.asarray(jax.jacrev(logits)(delta, patches))  # (C, T, out)
        z = np.asarray(logits(delta, patches))
        prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        root = np.diag(np.sqrt(prob)) - np.outer(prob, np.sqrt(prob))  # A Aᵀ = diag p − p pᵀ
        grads = np.einsum("ctl,ck->ktl", jac, root)  # (K, T, out)
        if approximation == "expand":
            a_sum = a_sum + patches.T @ patches / len(patches)
            g_sum = g_sum + np.einsum("kto,ktp->op", grads, grads)
        else:
            mean_patch, grad_sum = patches.mean(axis=0), grads.sum(axis=1)
            a_sum = a_sum + np.outer(mean_patch, mean_patch)
            g_sum = g_sum + grad_sum.T @ grad_sum
    return a_sum / len(x), g_sum / len(x)


@pytest.mark.parametrize("approximation", ["expand", "reduce"])
def test_conv_factors_equal_numpy_im2col_and_per_position_gradients(x64, approximation):
    x, params = _setup()
    data = batches(jnp.asarray(x), jnp.zeros(len(x), int), 2)  # a padded last batch
    (f,) = conv_kfac_factors(_Net().apply, params, data, approximation=approximation)
    a, g = _reference(x, params, approximation)
    assert f.layer == ConvLayer("params/conv", kernel=1, bias=0, out_axis=3)
    np.testing.assert_allclose(f.inputs, a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f.output_grads, g, rtol=1e-10, atol=1e-12)


def test_conv_factors_are_the_exact_ggn_block_for_one_position_and_one_example(x64):
    rng = np.random.default_rng(0)
    kernel = {"flax": rng.normal(size=(3, 2, 2, 4)), "torch": rng.normal(size=(4, 2, 3, 2))}
    head = rng.normal(size=(4, 3))
    specs = {"flax": ("NHWC", "HWIO", "NHWC"), "torch": ("NHWC", "OIHW", "NHWC")}

    for layout in ("flax", "torch"):

        def apply(p, x, layout=layout):  # the window covers the image: one output position
            y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID",
                                             dimension_numbers=specs[layout])  # fmt: skip
            return jnp.tanh(y.reshape(x.shape[0], -1)) @ head

        params = {"kernel": jnp.asarray(kernel[layout])}
        data = batches(jnp.asarray(rng.normal(size=(1, 3, 2, 2))), jnp.zeros(1, int), 1)
        exact = ggn_matrix(apply, params, data)
        for approximation in ("expand", "reduce"):
            (f,) = conv_kfac_factors(apply, params, data, approximation=approximation)
            a, g = f.inputs, f.output_grads
            kron = jnp.kron(a, g) if layout == "flax" else jnp.kron(g, a)
            np.testing.assert_allclose(kron, exact, rtol=1e-9, atol=1e-12)


def _eqx_net(params):
    """The Linen net's weights in an Equinox network (PyTorch layout ``(out, in, kh, kw)``)."""

    class Net(eqx.Module):
        conv: eqx.nn.Conv2d
        head: eqx.nn.Linear

        def __call__(self, x, *, key=None):
            h = self.conv(jnp.moveaxis(x, -1, 0))  # (out, h, w)
            return self.head(jnp.tanh(h).mean(axis=(1, 2)))

    k = jax.random.split(jax.random.key(0))
    conv = eqx.nn.Conv2d(SHAPE[2], OUT, KERNEL, STRIDES, padding=PADS, key=k[0])
    head = eqx.nn.Linear(OUT, CLASSES, key=k[1])
    p = params["params"]
    conv = eqx.tree_at(lambda c: (c.weight, c.bias), conv,
                       (jnp.transpose(p["conv"]["kernel"], (3, 2, 0, 1)),
                        p["conv"]["bias"].reshape(OUT, 1, 1)))  # fmt: skip
    head_weights = (p["head"]["kernel"].T, p["head"]["bias"])
    head = eqx.tree_at(lambda h: (h.weight, h.bias), head, head_weights)
    return Net(conv, head)


class _NNXNet(nnx.Module):  # jaxreg's im2col convolution, as its CNNs use it
    def __init__(self, params):
        p = params["params"]
        self.conv = nnx.Conv(SHAPE[2], OUT, KERNEL, STRIDES, padding="SAME",
                             conv_general_dilated=patch_conv, rngs=nnx.Rngs(0))  # fmt: skip
        self.conv.kernel = nnx.Param(p["conv"]["kernel"])
        self.conv.bias = nnx.Param(p["conv"]["bias"])
        self.head = nnx.Linear(OUT, CLASSES, rngs=nnx.Rngs(0))
        self.head.kernel = nnx.Param(p["head"]["kernel"])
        self.head.bias = nnx.Param(p["head"]["bias"])

    def __call__(self, x):
        return self.head(jnp.tanh(self.conv(x)).mean(axis=(1, 2)))


def test_equinox_and_nnx_im2col_models_give_the_linen_factors_in_their_own_layout(x64):
    x, params = _setup(n=4)
    data = batches(jnp.asarray(x), jnp.zeros(len(x), int), 4)
    (linen,) = conv_kfac_factors(_Net().apply, params, data)
    eqx_model, nnx_model = from_equinox(_eqx_net(params)), from_nnx(_NNXNet(params))
    (eqx_f,) = conv_kfac_factors(eqx_model.bind(), eqx_model.params, data)
    (nnx_f,) = conv_kfac_factors(nnx_model.bind(), nnx_model.params, data)
    assert eqx_f.layer.out_axis == 0 and nnx_f.layer.out_axis == 3
    assert jax.tree.leaves(eqx_model.params)[eqx_f.layer.kernel].shape == (OUT, 2, *KERNEL)
    # (kh, kw, in) → (in, kh, kw): Equinox's order of the weight's non-output axes.
    d = KERNEL[0] * KERNEL[1] * SHAPE[2]
    to_torch = np.arange(d).reshape(*KERNEL, SHAPE[2]).transpose(2, 0, 1).ravel()
    np.testing.assert_allclose(eqx_f.inputs, linen.inputs[np.ix_(to_torch, to_torch)], rtol=1e-10)
    np.testing.assert_allclose(eqx_f.output_grads, linen.output_grads, rtol=1e-10)
    np.testing.assert_allclose(nnx_f.inputs, linen.inputs, rtol=1e-10)
    np.testing.assert_allclose(nnx_f.output_grads, linen.output_grads, rtol=1e-10)


def test_weights_count_as_multiplicities_and_padding_never_counts(x64):
    x, params = _setup(n=5)
    y = jnp.zeros(5, int)
    (padded,) = conv_kfac_factors(_Net().apply, params, batches(jnp.asarray(x), y, 3))
    weighted = batches(jnp.asarray(x[:2]), y[:2], 2)
    weighted["weight"] = jnp.array([[2.0, 1.0]])
    (twice,) = conv_kfac_factors(_Net().apply, params, weighted)
    np.testing.assert_allclose(padded.inputs, _reference(x, params, "expand")[0], rtol=1e-10)
    a = _reference(x[[0, 0, 1]], params, "expand")[0]
    np.testing.assert_allclose(twice.inputs, a, rtol=1e-10)


def test_conv_factors_under_jit_and_vmap_equal_eager_member_by_member():
    x, params = _setup(n=4, dtype=jnp.float32)
    data = batches(jnp.asarray(x), jnp.zeros(4, int), 2)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
    vmapped = jax.jit(jax.vmap(lambda p: conv_kfac_factors(_Net().apply, p, data)))(stacked)
    for member in range(2):
        one = jax.tree.map(lambda a, m=member: a[m], stacked)
        (eager,) = conv_kfac_factors(_Net().apply, one, data)
        assert eager.inputs.dtype == jnp.float32
        np.testing.assert_allclose(vmapped[0].inputs[member], eager.inputs, rtol=1e-5)
        np.testing.assert_allclose(vmapped[0].output_grads[member], eager.output_grads, rtol=1e-4)
    assert not np.allclose(vmapped[0].output_grads[0], vmapped[0].output_grads[1])


def test_shared_grouped_and_missing_convolutions_are_left_out_with_a_clear_error():
    k = jnp.ones((3, 3, 2, 2))

    def conv(x, w, groups=1):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=groups,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip

    def shared(p, x):  # the same kernel twice: not one layer's factors
        return conv(conv(x, p["kernel"]), p["kernel"]).mean(axis=(1, 2))

    def grouped(p, x):
        return conv(x, p["kernel"][:, :, :1], groups=2).mean(axis=(1, 2))

    def both(p, x):
        return conv(x, jnp.tanh(p["w"])).mean(axis=(1, 2)) + shared({"kernel": p["kernel"]}, x)

    x = jnp.ones((1, 4, 4, 2))
    assert conv_layers(shared, {"kernel": k}, x) == ()
    assert conv_layers(grouped, {"kernel": k}, x) == ()
    assert conv_layers(both, {"kernel": k, "w": k}, x) == ()  # a computed kernel is no leaf
    data = batches(x, jnp.zeros(1, int), 1)
    with pytest.raises(ValueError, match="apply has no convolution whose kernel is a leaf"):
        conv_kfac_factors(shared, {"kernel": k}, data)
    with pytest.raises(ValueError, match=r"approximation must be one of \('expand', 'reduce'\)"):
        conv_kfac_factors(shared, {"kernel": k}, data, approximation="mean")


def test_a_convolution_inside_a_nested_jit_and_a_cast_is_found():
    inner = jax.jit(lambda x, w: jax.lax.conv(x, w.astype(x.dtype), (1,), "SAME"))
    params = {"block": {"weight": jnp.ones((2, 1, 3), jnp.bfloat16), "bias": jnp.zeros(2)}}

    def apply(p, x):
        return inner(x, p["block"]["weight"]).mean(axis=2) + p["block"]["bias"]

    assert conv_layers(apply, params, jnp.ones((1, 1, 5))) == (
        ConvLayer("block", kernel=1, bias=0, out_axis=0),
    )


def _ggn_block(exact, chosen, leaf):
    offsets = np.cumsum([0, *chosen.sizes])
    i = chosen.paths.index(leaf)
    return exact[offsets[i] : offsets[i + 1], offsets[i] : offsets[i + 1]]


def _cnn_reference_blocks(apply, params, data, exact, chosen, structure):
    """The conv kernel and head blocks, assembled densely from the factors."""
    (conv,) = conv_kfac_factors(apply, params, data)
    (head,) = kfac_factors(apply, params, data)
    if structure == "kron":
        return jnp.kron(conv.inputs, conv.output_grads), (
            head.output_grads, jnp.kron(head.inputs, head.output_grads))  # fmt: skip
    # EKFAC: KFAC's eigenbasis, the exact diagonal in it
    basis = jnp.kron(jnp.linalg.eigh(conv.inputs)[1], jnp.linalg.eigh(conv.output_grads)[1])
    values = jnp.diag(basis.T @ _ggn_block(exact, chosen, 1) @ basis)
    qa, qg, s, s_bias = ekfac_eigenvalues(apply, params, data, (head,))[0]
    head_kernel = jnp.kron(qa, qg) @ jnp.diag(s.ravel()) @ jnp.kron(qa, qg).T
    return basis @ jnp.diag(values) @ basis.T, (qg @ jnp.diag(s_bias) @ qg.T, head_kernel)


def test_kron_and_ekfac_laplace_of_a_cnn_equal_their_dense_block_diagonal_references(x64):
    x, params = _setup(n=6)
    apply = _Net().apply
    data = batches(jnp.asarray(x), jnp.arange(6) % CLASSES, 4)
    exact, chosen = ggn_matrix(apply, params, data), subset(params)
    for structure in ("kron", "ekfac"):
        la = laplace.fit_laplace(apply, params, data, structure=structure)
        kernel, head = _cnn_reference_blocks(apply, params, data, exact, chosen, structure)
        # leaves: conv/bias (its exact block), conv/kernel, head/bias, head/kernel
        curvature = jax.scipy.linalg.block_diag(_ggn_block(exact, chosen, 0), kernel, *head)
        delta = jnp.array([0.5, 1.0, 2.0, 3.0])
        prior = laplace.prior_precision_vector(la, delta)
        precision = len(x) * curvature + jnp.diag(prior)
        np.testing.assert_allclose(
            laplace.posterior_precision_matrix(la, delta), precision, atol=1e-9
        )
        log_det = np.linalg.slogdet(np.asarray(precision))[1]
        evidence = -la.fit_term - 0.5 * (
            log_det - jnp.sum(jnp.log(prior)) + jnp.sum(prior * la.mean**2)
        )
        np.testing.assert_allclose(laplace.log_marginal_likelihood(la, delta), evidence, rtol=1e-11)
        assert la.group_shapes == ((OUT,), (12, OUT), (CLASSES,), (OUT, CLASSES))


def test_kron_laplace_of_a_cnn_runs_under_jit_and_vmap():
    x, params = _setup(n=4, dtype=jnp.float32)
    data = batches(jnp.asarray(x), jnp.arange(4) % CLASSES, 2)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.7 * a]), params)

    def evidence(p):
        la = laplace.fit_laplace(_Net().apply, p, data, structure="kron")
        return laplace.log_marginal_likelihood(la, 1.0)

    vmapped = jax.jit(jax.vmap(evidence))(stacked)
    one_by_one = [evidence(jax.tree.map(lambda a, i=i: a[i], stacked)) for i in range(2)]
    np.testing.assert_allclose(vmapped, one_by_one, rtol=1e-5)


def test_the_audit_finds_kfac_exact_for_a_one_position_convolution(x64):
    head = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))

    def apply(p, x):  # the window covers the image: KFAC is the exact GGN for one example
        y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        return jnp.tanh(y.reshape(y.shape[0], OUT)) @ head

    params = {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 2, 4)))}
    image = jnp.asarray(np.random.default_rng(2).normal(size=(1, 3, 2, 2)))
    data = batches(image, jnp.zeros(1, int), 1)
    audit = audit_curvature(apply, params, data, key=jax.random.key(0), k=2, kfac=True)
    kron = audit.approximations["kron"]
    np.testing.assert_allclose(kron.eigenvalues, audit.exact_eigenvalues, rtol=1e-4)
    assert float(jnp.max(kron.principal_angles)) < 1e-2
    # the diagonal alone (what a convolution got before) is far from it
    assert float(jnp.max(audit.approximations["diag"].relative_error)) > 0.1


def test_conv_ekfac_is_the_exact_ggn_diagonal_in_the_kfac_eigenbasis_in_either_layout(x64):
    x, params = _setup(n=4)
    data = batches(jnp.asarray(x), jnp.zeros(4, int), 4)
    for model in (None, from_equinox(_eqx_net(params))):
        apply, p = (_Net().apply, params) if model is None else (model.bind(), model.params)
        factors = conv_kfac_factors(apply, p, data)
        ((qa, qg, s),) = conv_ekfac_eigenvalues(apply, p, data, factors)
        (layer,) = [f.layer for f in factors]
        chosen = subset(p)
        exact = _ggn_block(ggn_matrix(apply, p, data), chosen, layer.kernel)
        basis = jnp.kron(qa, qg) if layer.out_axis == 3 else jnp.kron(qg, qa)
        diagonal = jnp.diag(basis.T @ exact @ basis)
        values = s if layer.out_axis == 3 else s.T  # S is (D, out) in either layout
        np.testing.assert_allclose(values.ravel(), diagonal, rtol=1e-9, atol=1e-14)
        assert s.shape == (12, OUT)


@pytest.mark.parametrize(
    ("approximation", "inputs", "grads"),
    [("expand", 5.0, 0.5), ("reduce", 4.0, 1.0)],  # mean x² vs (mean x)²; Σ_t vs (Σ_t)²
)
def test_factors_by_hand_for_a_width_one_kernel_and_gaussian_noise(approximation, inputs, grads):
    params = {"kernel": jnp.ones((2, 1, 1))}  # (out, in, width): two outputs, each mean_t x_t

    def apply(p, x):
        return jax.lax.conv(x, p["kernel"], (1,), "VALID").mean(axis=2)

    data = batches(jnp.array([[[1.0, 3.0]]]), jnp.zeros((1, 2)), 1)
    for sigma in (1.0, 2.0):
        (f,) = conv_kfac_factors(apply, params, data, likelihood="regression",
                                 sigma_noise=sigma, approximation=approximation)  # fmt: skip
        np.testing.assert_allclose(f.inputs, [[inputs]], rtol=1e-6)
        np.testing.assert_allclose(f.output_grads, grads / sigma**2 * np.eye(2), rtol=1e-6)


class _SequenceNet(nn.Module):  # one Dense kernel at every position of a sequence
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(5, name="shared")(x)).mean(axis=1)
        return nn.Dense(CLASSES, name="head")(h)


def test_a_dense_layer_over_a_sequence_gets_expand_factors_and_a_kron_laplace(x64):
    x = np.asarray(jax.random.normal(jax.random.key(0), (5, 4, 3)), np.float64)  # (n, T, in)
    params = _SequenceNet().init(jax.random.key(1), jnp.asarray(x[:1]))
    apply = _SequenceNet().apply
    data = batches(jnp.asarray(x), jnp.arange(5) % CLASSES, 2)
    (f,) = conv_kfac_factors(apply, params, data)
    p = params["params"]

    def logits(delta, rows):  # the same network by hand, with a per-position δ
        h = jnp.tanh(rows @ p["shared"]["kernel"] + p["shared"]["bias"] + delta).mean(axis=0)
        return h @ p["head"]["kernel"] + p["head"]["bias"]

    a_ref, g_ref = 0.0, 0.0
    for rows in x:
        jac = np.asarray(jax.jacrev(logits)(np.zeros((4, 5)), rows))  # (C, T, out)
        z = np.asarray(logits(np.zeros((4, 5)), rows))
        prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        root = np.diag(np.sqrt(prob)) - np.outer(prob, np.sqrt(prob))
        grads = np.einsum("cto,ck->kto", jac, root)
        a_ref = a_ref + rows.T @ rows / len(rows) / len(x)
        g_ref = g_ref + np.einsum("kto,ktp->op", grads, grads) / len(x)
    assert f.layer == ConvLayer("params/shared", kernel=3, bias=2, out_axis=1)
    np.testing.assert_allclose(f.inputs, a_ref, rtol=1e-10)
    np.testing.assert_allclose(f.output_grads, g_ref, rtol=1e-10)
    # kron no longer refuses the shared kernel: it gets A ⊗ G, the head its dense KFAC
    la = laplace.fit_laplace(apply, params, data, structure="kron")
    by_path = {d.layer.path: d for d in kfac_factors(apply, params, data)}
    assert float(by_path["params/shared"].rank_one_error) > 0.1  # what kron refused before
    precision = laplace.posterior_precision_matrix(la, 1.0)
    start = 3 + 15 + 5  # leaves: head/bias, head/kernel, shared/bias, shared/kernel
    kernel_block = precision[start : start + 15, start : start + 15]
    np.testing.assert_allclose(
        kernel_block, 5 * jnp.kron(f.inputs, f.output_grads) + jnp.eye(15), rtol=1e-9, atol=1e-12
    )


def test_a_bias_sibling_of_another_size_or_none_is_not_the_convolutions_bias():
    def apply(p, x):
        return jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip

    x = jnp.ones((1, 4, 4, 2))
    kernel = jnp.ones((3, 3, 2, OUT))
    for bias, expected in ((jnp.ones(OUT), 0), (jnp.ones(OUT + 1), -1)):
        (layer,) = conv_layers(apply, {"bias": bias, "kernel": kernel}, x)
        assert (layer.kernel, layer.bias) == (1, expected)
    (layer,) = conv_layers(apply, {"kernel": kernel}, x)
    assert (layer.path, layer.kernel, layer.bias) == ("", 0, -1)
