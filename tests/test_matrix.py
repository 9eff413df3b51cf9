"""The transformation matrix: every public numerical function eager, jitted, vmapped, in
float64 and (where it takes batched data) with an all-padding batch appended.

A function joins the matrix with one ``Case`` line: a name, the function of
its array arguments, and the arguments for a dtype. The references are the
function itself run eagerly (jit), a Python loop over members (vmap), the
dtype of the inputs (float64), and the same data without the padding batch.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxreg import (
    curvature,
    data,
    ensembles,
    fit,
    labels,
    landscape,
    laplace,
    metrics,
    noise,
    penalties,
    prox,
    sharpness,
    transforms,
)
from jaxreg.augment import audio, image, mix, signal
from jaxreg.losses import classification_loss

KEY = jax.random.key(42)


class Case(NamedTuple):
    name: str
    fn: Callable[..., Any]
    args: Callable[[Any, bool], tuple]  # (dtype, padded) -> positional array arguments
    takes_data: bool = False
    rtol: float = 1e-4


def _linear(params, x, **_):
    return x @ params["w"] + params["b"]


LOSS = classification_loss(_linear)


def _params(dtype):
    w = jax.random.normal(jax.random.key(1), (4, 3)) * 0.5
    return {"w": w.astype(dtype), "b": jnp.linspace(-0.1, 0.1, 3).astype(dtype)}


def _data(dtype, padded):
    x = jax.random.normal(jax.random.key(2), (12, 4)).astype(dtype)
    y = jnp.arange(12) % 3
    batches = data.batches(x, y, 4)
    if padded:  # one more batch, all padding: it must contribute nothing
        batches = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros_like(a[:1])]), batches)
    return batches


def _params_and_data(dtype, padded):
    return _params(dtype), _data(dtype, padded)


def _probs(dtype, padded):
    logits = jax.random.normal(jax.random.key(3), (20, 3))
    return jax.nn.softmax(logits).astype(dtype), jnp.arange(20) % 3


def _on_simplex(fn):
    """The vmap variant scales floating inputs; probabilities are renormalized first."""
    return lambda probs, y: fn(probs / jnp.sum(probs, axis=1, keepdims=True), y)


def _signals(dtype, padded):
    return (jax.random.normal(jax.random.key(4), (5, 16)).astype(dtype),)


def _images(dtype, padded):
    return (jax.random.uniform(jax.random.key(6), (3, 8, 8, 3)).astype(dtype),)


def _waves(dtype, padded):
    return (jax.random.normal(jax.random.key(7), (3, 600)).astype(dtype),)


def _update_step(tx):
    def step(params):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return updates

    return step


CASES = [
    Case("penalties.l2", penalties.l2, lambda d, p: (_params(d),)),
    Case("penalties.l1", penalties.l1, lambda d, p: (_params(d),)),
    Case(
        "penalties.elastic_net", lambda w: penalties.elastic_net(w, 0.3), lambda d, p: (_params(d),)
    ),
    Case("penalties.group_lasso", penalties.group_lasso, lambda d, p: (_params(d),)),
    Case("prox.l1", lambda w: prox.l1(w, 0.2), lambda d, p: (_params(d),)),
    Case("prox.elastic_net", lambda w: prox.elastic_net(w, 0.2, 0.5), lambda d, p: (_params(d),)),
    Case("prox.group_lasso", lambda w: prox.group_lasso(w, 0.2), lambda d, p: (_params(d),)),
    Case(
        "transforms.decoupled_weight_decay",
        _update_step(transforms.decoupled_weight_decay(0.01)),
        lambda d, p: (_params(d),),
    ),
    Case(
        "transforms.proximal_l1",
        _update_step(transforms.proximal_l1(0.5, 0.1)),
        lambda d, p: (_params(d),),
    ),
    Case(
        "noise.gaussian_input_noise",
        lambda x: noise.gaussian_input_noise(KEY, x, 0.1),
        _signals,
    ),
    Case(
        "noise.weight_noise", lambda w: noise.weight_noise(KEY, w, 0.1), lambda d, p: (_params(d),)
    ),
    Case(
        "labels.smooth",
        lambda probs, y: labels.smooth(y, 3, 0.1) * probs.sum(1, keepdims=True),
        _probs,
    ),
    Case("augment.signal.random_shift", lambda x: signal.random_shift(KEY, x, 3), _signals),
    Case("augment.signal.jitter", lambda x: signal.jitter(KEY, x, 0.1), _signals),
    Case(
        "augment.mix.mixup",
        lambda x: mix.mixup(KEY, x, jnp.arange(5) % 2, 0.4, num_classes=2),
        _signals,
    ),
    Case("metrics.accuracy", metrics.accuracy, _probs),
    Case("metrics.nll", _on_simplex(metrics.nll), _probs),
    Case("metrics.brier", _on_simplex(metrics.brier), _probs),
    Case("metrics.ece", _on_simplex(metrics.ece), _probs),
    Case("data.dataset_loss", lambda w, b: data.dataset_loss(LOSS, w, b), _params_and_data, True),
    Case(
        "sharpness.hvp",
        lambda w, b: sharpness.hvp(LOSS, w, b)(jax.tree.map(jnp.ones_like, w)),
        _params_and_data,
        True,
    ),
    Case(
        "sharpness.gauss_newton_vp",
        lambda w, b: sharpness.gauss_newton_vp(_linear, w, b)(jax.tree.map(jnp.ones_like, w)),
        _params_and_data,
        True,
    ),
    Case(
        "sharpness.top_eigenvalues",
        lambda w, b: sharpness.top_eigenvalues(LOSS, w, b, key=KEY, k=2, num_iters=15)[0],
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.hessian_trace",
        lambda w, b: sharpness.hessian_trace(LOSS, w, b, key=KEY, num_samples=6)[0],
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.sam_sharpness",
        lambda w, b: sharpness.sam_sharpness(LOSS, w, b, 0.05),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.sam_sharpness(m=2)",
        lambda w, b: sharpness.sam_sharpness(LOSS, w, b, 0.05, m=2),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.average_sharpness",
        lambda w, b: sharpness.average_sharpness(LOSS, w, b, key=KEY, sigma=0.05, num_samples=4),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.pac_bayes_flatness",
        lambda w, b: sharpness.pac_bayes_flatness(LOSS, w, b, key=KEY, num_samples=4),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "landscape.slice_1d",
        lambda w, b: landscape.slice_1d(LOSS, w, b, key=KEY, resolution=5)[1],
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "metrics.gradient_noise_scale",
        lambda w, b: metrics.gradient_noise_scale(LOSS, w, b).trace_covariance,
        _params_and_data,
        False,  # per-batch statistics: a padding batch changes the batch count by design
        rtol=1e-3,
    ),
    Case(
        "ensembles.decompose",
        lambda preds, targets: ensembles.decompose(preds, targets),
        lambda d, p: (
            jax.random.normal(jax.random.key(5), (4, 3, 6)).astype(d),
            jnp.linspace(-1, 1, 6).astype(d),
        ),
    ),
]
CASES += [
    Case("prox.l2", lambda w: prox.l2(w, 0.3), lambda d, p: (_params(d),)),
    Case(
        "penalties.penalized",
        lambda w, b: data.dataset_loss(penalties.penalized(LOSS, penalties.l2, 0.1), w, b),
        _params_and_data,
        True,
    ),
    Case(
        "transforms.proximal_elastic_net",
        _update_step(transforms.proximal_elastic_net(0.5, 0.5, 0.1)),
        lambda d, p: (_params(d),),
    ),
    Case(
        "transforms.proximal_group_lasso",
        _update_step(transforms.proximal_group_lasso(0.5, 0.1)),
        lambda d, p: (_params(d),),
    ),
    Case(
        "transforms.masked_gradient_noise",
        _update_step(transforms.masked_gradient_noise(0.1, 0.55, key=0)),
        lambda d, p: (_params(d),),
    ),
    Case(
        "noise.multiplicative_input_noise",
        lambda x: noise.multiplicative_input_noise(KEY, x, 0.1),
        _signals,
    ),
    Case(
        "augment.signal.random_time_stretch",
        lambda x: signal.random_time_stretch(KEY, x, 0.1),
        _signals,
    ),
    Case(
        "augment.image.random_flip_left_right",
        lambda x: image.random_flip_left_right(KEY, x),
        _images,
    ),
    Case("augment.image.random_rotation", lambda x: image.random_rotation(KEY, x, 0.3), _images),
    Case("augment.image.color_jitter", lambda x: image.color_jitter(KEY, x, 0.2, 0.2), _images),
    Case(
        "augment.image.gaussian_pixel_noise",
        lambda x: image.gaussian_pixel_noise(KEY, x, 0.1),
        _images,
    ),
    Case(
        "augment.mix.cutmix",
        lambda x: mix.cutmix(KEY, x, jnp.arange(3) % 2, 1.0, num_classes=2),
        _images,
    ),
    Case("augment.mix.cutout", lambda x: mix.cutout(KEY, x, 3), _images),
    Case("augment.audio.time_stretch", lambda w: audio.time_stretch(KEY, w), _waves),
    Case(
        "augment.audio.add_background_noise",
        lambda w: audio.add_background_noise(KEY, w, 10.0),
        _waves,
    ),
    Case("augment.audio.spectrogram", lambda w: audio.spectrogram(w, 128, 64), _waves),
    Case("metrics.reliability_bins", _on_simplex(metrics.reliability_bins), _probs),
    Case(
        "metrics.bias_variance",
        lambda preds, targets: metrics.bias_variance(preds, targets),
        lambda d, p: (
            jax.random.normal(jax.random.key(8), (5, 7)).astype(d),
            jnp.linspace(-1, 1, 7).astype(d),
        ),
    ),
    Case(
        "ensembles.ambiguity",
        ensembles.ambiguity,
        lambda d, p: (
            jax.random.normal(jax.random.key(9), (4, 7)).astype(d),
            jnp.linspace(-1, 1, 7).astype(d),
        ),
    ),
    Case(
        "sharpness.min_eigenvalue",
        lambda w, b: sharpness.min_eigenvalue(LOSS, w, b, key=KEY, num_iters=15)[0],
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.power_iteration",
        lambda w, b: sharpness.power_iteration(LOSS, w, b, key=KEY, num_iters=30).eigenvalues,
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.block_top_eigenvalues",
        lambda w, b: sharpness.block_top_eigenvalues(LOSS, w, b, key=KEY, num_iters=3),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.spectral_density",
        lambda w, b: sharpness.spectral_density(
            LOSS, w, b, key=KEY, num_iters=10, num_runs=2, num_points=32
        )[1],
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "sharpness.epsilon_sharpness",
        lambda w, b: sharpness.epsilon_sharpness(LOSS, w, b, 1e-2, 5),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "landscape.slice_2d",
        lambda w, b: landscape.slice_2d(LOSS, w, b, key=KEY, resolution=3)[2],
        _params_and_data,
        True,
        rtol=1e-3,
    ),
    Case(
        "landscape.interpolate",
        lambda a: landscape.interpolate(a, jax.tree.map(lambda x: 2 * x, a), 5)[1],
        lambda d, p: (_params(d),),
    ),
]
CASES.append(
    Case(
        "fit",
        lambda w, x: (
            fit(
                _linear,
                w,
                optax.sgd(0.1),
                (x, jnp.arange(12) % 3),
                key=KEY,
                num_epochs=2,
                batch_size=5,
                eval_data=(x, jnp.arange(12) % 3),
            ).params
        ),
        lambda d, p: (_params(d), jax.random.normal(jax.random.key(2), (12, 4)).astype(d)),
    )
)


def _plain(params, x):
    return _linear(params, x)


def _fitted(w, b, structure="full"):
    return laplace.fit_laplace(_plain, w, b, structure=structure)


CASES += [
    Case(
        "curvature.ggn_vp",
        lambda w, b: curvature.ggn_vp(_plain, w, b)(jax.tree.map(jnp.ones_like, w)),
        _params_and_data,
        True,
    ),
    Case(
        "curvature.ggn_diagonal",
        lambda w, b: curvature.ggn_diagonal(_plain, w, b),
        _params_and_data,
        True,
    ),
    Case(
        "curvature.empirical_fisher_diagonal",
        lambda w, b: curvature.empirical_fisher_diagonal(_plain, w, b),
        _params_and_data,
        True,
    ),
    Case(
        "curvature.mc_fisher_vp",
        lambda w, b: curvature.mc_fisher_vp(_plain, w, b, key=KEY, num_samples=2)(
            jax.tree.map(jnp.ones_like, w)
        ),
        _params_and_data,
        True,
    ),
    Case(
        "laplace.log_marginal_likelihood",
        lambda w, b: laplace.log_marginal_likelihood(_fitted(w, b), 1.5),
        _params_and_data,
        True,
    ),
    Case(
        "laplace.log_marginal_likelihood(diag, per group)",
        lambda w, b: laplace.log_marginal_likelihood(_fitted(w, b, "diag"), jnp.array([1.0, 2.0])),
        _params_and_data,
        True,
    ),
    Case(
        "laplace.glm_predictive",
        lambda w, b: (
            laplace.glm_predictive(_fitted(w, b), _plain, b["x"][0], prior_precision=1.0).mean
        ),
        _params_and_data,
        False,  # predicts at the first batch's inputs: the data are only the fit's
    ),
    Case(
        "laplace.optimize_prior_precision",
        lambda w, b: laplace.optimize_prior_precision(_fitted(w, b), method="mackay", num_steps=10),
        _params_and_data,
        True,
        rtol=1e-3,
    ),
]
IDS = [case.name for case in CASES]


def _close(actual, expected, rtol):
    chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_equals_eager(case):
    args = case.args(jnp.float32, False)
    _close(jax.jit(case.fn)(*args), case.fn(*args), case.rtol)


def _stack(args):
    """Three members: floating leaves scaled by 1, 1.1, 0.9; other leaves repeated."""

    def stack(leaf):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.stack([leaf, leaf * 1.1, leaf * 0.9])
        return jnp.stack([leaf] * 3)

    return jax.tree.map(stack, args)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_equals_a_loop(case):
    batched = _stack(case.args(jnp.float32, False))
    out = jax.jit(jax.vmap(case.fn))(*batched)
    single = jax.jit(case.fn)  # equal to eager by test_jit_equals_eager; one compile
    for i in range(3):
        member = jax.tree.map(lambda a, i=i: a[i], batched)
        _close(jax.tree.map(lambda a, i=i: a[i], out), single(*member), case.rtol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_inputs_give_float64_outputs(case):
    with jax.enable_x64(True):
        out = case.fn(*case.args(jnp.float64, False))
        floating = [
            leaf for leaf in jax.tree.leaves(out) if jnp.issubdtype(leaf.dtype, jnp.floating)
        ]
        assert floating, "the case must return floating values"
        assert {leaf.dtype for leaf in floating} == {jnp.dtype(jnp.float64)}
        chex.assert_tree_all_finite(out)


@pytest.mark.parametrize("case", [c for c in CASES if c.takes_data], ids=lambda c: c.name)
def test_an_all_padding_batch_contributes_nothing(case):
    fn = jax.jit(case.fn)
    padded = fn(*case.args(jnp.float32, True))
    chex.assert_tree_all_finite(padded)
    _close(padded, fn(*case.args(jnp.float32, False)), case.rtol)


def test_the_matrix_covers_enough():
    assert len(CASES) >= 30
    np.testing.assert_equal(len(set(IDS)), len(IDS))
    assert optax  # the transforms above are optax GradientTransformations


@settings(max_examples=25, deadline=None)
@given(
    # A few shapes (each a new compile) with freely varying values and thresholds.
    shape=st.sampled_from([(1,), (4,), (2, 3), (3, 1), (2, 2, 4), (4, 1, 2)]),
    use_float64=st.booleans(),
    threshold=st.floats(0.0, 2.0),
)
def test_penalties_and_prox_follow_shape_and_dtype(shape, use_float64, threshold):
    """Any shape, float32 or float64: values match NumPy and the dtype follows the input."""
    rng = np.random.default_rng(sum(shape))
    values = rng.normal(size=shape)
    with jax.enable_x64(use_float64):
        dtype = jnp.float64 if use_float64 else jnp.float32
        w = {"w": jnp.asarray(values, dtype)}
        rtol = 1e-10 if use_float64 else 1e-5
        shrunk = prox.l1(w, threshold)["w"]
        assert shrunk.dtype == dtype
        expected = np.sign(values) * np.maximum(np.abs(values) - threshold, 0.0)
        np.testing.assert_allclose(shrunk, expected, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(penalties.l1(w), np.abs(values).sum(), rtol=rtol)
        np.testing.assert_allclose(penalties.l2(w), 0.5 * np.square(values).sum(), rtol=rtol)
        group = penalties.group_lasso(w)
        axes = tuple(range(len(shape) - 1))
        expected_group = (
            np.sqrt(np.square(values).sum(axis=axes)).sum() if axes else np.abs(values).sum()
        )
        np.testing.assert_allclose(group, expected_group, rtol=rtol)
        assert penalties.l2(w).dtype == dtype and group.dtype == dtype
