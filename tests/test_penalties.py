import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jaxreg import masks, penalties

finite = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=30, deadline=None)
@given(
    w=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 5)), elements=finite),
    b=arrays(np.float32, st.integers(1, 5), elements=finite),
    ratio=st.floats(0, 1),
)
def test_penalties_match_numpy(w, b, ratio):
    params = {"w": w, "b": b}
    flat = np.concatenate([w.ravel(), b]).astype(np.float64)
    np.testing.assert_allclose(penalties.l2(params), 0.5 * np.sum(flat**2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(penalties.l1(params), np.sum(np.abs(flat)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        penalties.elastic_net(params, ratio),
        ratio * np.sum(np.abs(flat)) + (1 - ratio) / 2 * np.sum(flat**2),
        rtol=1e-5,
        atol=1e-4,
    )
    # Masks: only the kernel counts.
    np.testing.assert_allclose(
        penalties.l1(params, mask=masks.weights_only),
        np.sum(np.abs(w.astype(np.float64))),
        rtol=1e-5,
        atol=1e-5,
    )


def test_group_lasso_groups():
    w = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(
        penalties.group_lasso({"w": w}, group_axis=-1), np.linalg.norm(w, axis=0).sum(), rtol=1e-6
    )
    np.testing.assert_allclose(
        penalties.group_lasso({"w": w}, group_axis=0), np.linalg.norm(w, axis=1).sum(), rtol=1e-6
    )
    conv = np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32)  # (k, in, out)
    filters = np.sqrt((conv**2).sum(axis=(0, 1))).sum()
    np.testing.assert_allclose(penalties.group_lasso({"k": conv}), filters, rtol=1e-5)
    np.testing.assert_allclose(
        penalties.group_lasso({"k": conv}, scale_by_size=True), np.sqrt(6) * filters, rtol=1e-5
    )


def test_penalized_adds_the_strength_times_penalty():
    def loss_fn(p, batch):
        return jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)

    params = {"w": jnp.array([1.0, -2.0])}
    batch = {"x": jnp.eye(2), "y": jnp.zeros(2)}
    penalized = penalties.penalized(
        loss_fn, functools.partial(penalties.elastic_net, l1_ratio=0.25), 0.5
    )
    expected = loss_fn(params, batch) + 0.5 * (0.25 * 3.0 + 0.75 * 0.5 * 5.0)
    np.testing.assert_allclose(penalized(params, batch), expected, rtol=1e-6)


def test_traced_strength_sweep_compiles_once():
    def loss_fn(p, batch):
        return jnp.sum((p["w"] - batch) ** 2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def value(strength):
        return penalties.penalized(loss_fn, penalties.l1, strength)({"w": jnp.ones(3)}, 0.0)

    values = jax.vmap(value)(jnp.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(values, [3.0, 6.0, 9.0])


def test_bad_input():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match="l1_ratio"):
        penalties.elastic_net(params, 1.5)
    with pytest.raises(ValueError, match="strength"):
        penalties.penalized(lambda p, b: 0.0, penalties.l2, -1.0)
    with pytest.raises(ValueError, match="mask"):
        penalties.l2(params, mask={"w": True})
    with pytest.raises(TypeError, match="mask"):
        penalties.l2(params, mask={"w": "yes", "b": False})


def test_masks_reach_every_penalty():
    params = {"w": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "b": jnp.array([2.0, -2.0])}
    only_w = {"w": True, "b": False}
    kernel = np.asarray(params["w"])
    np.testing.assert_allclose(
        penalties.elastic_net(params, 0.25, mask=only_w),
        0.25 * np.abs(kernel).sum() + 0.75 / 2 * np.square(kernel).sum(),
    )
    np.testing.assert_allclose(penalties.group_lasso(params, mask=only_w), 5.0 + 1.0)
    loss = penalties.penalized(lambda p, batch: 0.0, penalties.l1, 2.0, mask=only_w)
    np.testing.assert_allclose(loss(params, None), 2.0 * 8.0)
    nothing = penalties.l2(params, mask={"w": False, "b": False})
    assert isinstance(nothing, jax.Array) and nothing.dtype == jnp.float32 and nothing == 0


def test_group_norms_of_a_scalar_and_a_vector_are_absolute_values():
    np.testing.assert_array_equal(penalties.group_norms(jnp.array(-2.0)), [2.0])
    np.testing.assert_array_equal(penalties.group_norms(jnp.array([3.0, -4.0])), [3.0, 4.0])


def test_group_lasso_scales_a_single_group_by_the_root_of_its_size():
    kernel = jnp.array([[1.0], [2.0], [2.0]])  # (in=3, out=1): one group of 3 weights, norm 3
    np.testing.assert_allclose(
        penalties.group_lasso({"w": kernel}, scale_by_size=True), np.sqrt(3.0) * 3.0, rtol=1e-6
    )


def test_bad_input_names_the_argument():
    params = {"w": jnp.ones(2)}
    assert float(penalties.elastic_net(params, 1.0)) == 2.0  # l1_ratio = 1 is pure L1
    with pytest.raises(ValueError, match=r"^l1_ratio must lie in \[0.0, 1.0\]"):
        penalties.elastic_net(params, 1.5)
    with pytest.raises(ValueError, match=r"^strength must be non-negative"):
        penalties.penalized(lambda p, b: 0.0, penalties.l2, -1.0)
    with pytest.raises(TypeError, match=r"^penalty must be callable, got int"):
        penalties.penalized(lambda p, b: 0.0, 3, 1.0)
