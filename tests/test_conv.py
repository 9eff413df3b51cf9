"""patch_conv (im2col on XLA:CPU) against lax.conv_general_dilated: values, gradients,
second derivatives, transformations, fallbacks, and the models that use it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg import nn
from jaxreg.nn.conv import patch_conv

NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
CASES = [
    (3, 1, "pairs"),
    (5, 2, "pairs"),
    (3, 2, "pairs"),
    (1, 2, "VALID"),
    (3, 1, "SAME"),
    (4, 3, "VALID"),
    (2, 2, "SAME"),
]


def _inputs(ndim, kernel, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(0), (3, *(11,) * ndim, 4), dtype)
    w = jax.random.normal(jax.random.key(1), (*(kernel,) * ndim, 4, 6), dtype)
    return x, w


def _padding(ndim, kind):
    return [(1, 2)] * ndim if kind == "pairs" else kind


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize(("kernel", "stride", "pad"), CASES)
def test_values_and_gradients_match_lax(ndim, kernel, stride, pad):
    x, w = _inputs(ndim, kernel)
    args = ((stride,) * ndim, _padding(ndim, pad))

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=NUMBERS[ndim])

    def ours(x, w):
        return patch_conv(x, w, *args, dimension_numbers=NUMBERS[ndim])

    def hvp(conv):
        grad = jax.grad(loss(conv), 1)
        return jax.jit(lambda w: jax.jvp(lambda w: grad(x, w), (w,), (tangent,))[1])(w)

    chex.assert_trees_all_close(ours(x, w), reference(x, w), atol=1e-5, rtol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), reference(x, w).shape)

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) * cotangent)

    chex.assert_trees_all_close(
        jax.jit(jax.grad(loss(ours), (0, 1)))(x, w),
        jax.jit(jax.grad(loss(reference), (0, 1)))(x, w),
        atol=1e-4,
        rtol=1e-4,
    )
    # Forward-over-reverse, as in every HVP.
    tangent = jax.random.normal(jax.random.key(3), w.shape)
    chex.assert_trees_all_close(hvp(ours), hvp(reference), atol=1e-4, rtol=1e-4)


def test_jit_vmap_and_float64():
    x, w = _inputs(1, 3)
    args = ((2,), [(1, 1)])
    conv = lambda x, w: patch_conv(x, w, *args, dimension_numbers=NUMBERS[1])  # noqa: E731
    chex.assert_trees_all_close(jax.jit(conv)(x, w), conv(x, w), atol=1e-6)
    stacked = jnp.stack([w, 2 * w])
    looped = jnp.stack([conv(x, w), conv(x, 2 * w)])
    chex.assert_trees_all_close(jax.vmap(conv, (None, 0))(x, stacked), looped, atol=1e-5)
    with jax.enable_x64(True):
        x64, w64 = _inputs(1, 3, jnp.float64)
        out = conv(x64, w64)
        reference = jax.lax.conv_general_dilated(x64, w64, *args, dimension_numbers=NUMBERS[1])
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"rhs_dilation": (2,)},
        {"lhs_dilation": (2,)},
        {"feature_group_count": 2},
        {"dimension_numbers": ("NCW", "OIW", "NCW")},
    ],
)
def test_other_convolutions_fall_back_to_lax(options):
    x, w = _inputs(1, 3)
    numbers = options.pop("dimension_numbers", NUMBERS[1])
    if numbers[0] == "NCW":
        x, w = jnp.moveaxis(x, -1, 1), jnp.transpose(w, (2, 1, 0))
    if options.get("feature_group_count") == 2:
        w = w[:, :2, :]
    args = ((1,), [(1, 1)])
    expected = jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=numbers, **options)
    got = patch_conv(x, w, *args, dimension_numbers=numbers, **options)
    chex.assert_trees_all_close(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda rngs: nn.CNN1D(rngs=rngs), (4, 40)),
        (lambda rngs: nn.CNN2D(rngs=rngs), (2, 8, 8, 1)),
        (lambda rngs: nn.ResNet20(rngs=rngs), (2, 32, 32, 3)),
        (lambda rngs: nn.ResNet1D(rngs=rngs), (2, 40)),
    ],
)
def test_models_equal_their_lax_convolution_twins(make, shape):
    model = make(nnx.Rngs(0))
    twin = make(nnx.Rngs(0))
    for _, module in nnx.iter_graph(twin):
        if isinstance(module, nnx.Conv):
            assert module.conv_general_dilated is patch_conv
            module.conv_general_dilated = jax.lax.conv_general_dilated
    x = jax.random.normal(jax.random.key(4), shape)
    forward = nnx.jit(lambda module, x: module(x))
    chex.assert_trees_all_close(forward(model, x), forward(twin, x), atol=1e-5, rtol=1e-5)
