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


class _StockCNN(nnx.Module):
    """A CNN as the Flax NNX tutorial writes it, convolutions nested in a list and a
    Sequential, one of them with a user's own convolution function."""

    def __init__(self, rngs, own_conv):
        self.blocks = nnx.List([nnx.Conv(1, 4, (3, 3), rngs=rngs)])
        self.tail = nnx.Sequential(
            nnx.Conv(4, 4, (3, 3), strides=2, rngs=rngs),
            nnx.Conv(4, 4, (3, 3), conv_general_dilated=own_conv, rngs=rngs),
        )
        self.norm = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.blocks[0](x))
        x = self.norm(self.tail(x))
        return self.head(x.reshape(x.shape[0], -1))


def _convolutions(jaxpr) -> int:
    """How many ``conv_general_dilated`` equations a jaxpr holds, nested ones included."""
    count = 0
    for equation in jaxpr.eqns:
        count += equation.primitive.name == "conv_general_dilated"
        for value in equation.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                count += _convolutions(inner)
    return count


def test_swap_stock_convs_computes_the_same_function_without_lax_convolutions():
    from jaxreg.data import batches
    from jaxreg.losses import classification_loss
    from jaxreg.sharpness import hvp

    own_conv = jax.tree_util.Partial(jax.lax.conv_general_dilated)
    stock = _StockCNN(nnx.Rngs(0), own_conv)
    swapped = nn.swap_stock_convs(stock)
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
    data = batches(x, jnp.arange(6) % 3, 3)
    products, convolutions = [], []
    for module in (stock, swapped):
        model = nn.from_nnx(module)
        loss_fn = classification_loss(model.bind(model.state))
        vector = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size).reshape(p.shape)), model.params)
        product = jax.jit(lambda p, v, loss_fn=loss_fn: hvp(loss_fn, p, data)(v))
        products.append(product(model.params, vector))
        convolutions.append(_convolutions(jax.make_jaxpr(lambda x, m=module: m(x))(x).jaxpr))
    chex.assert_trees_all_close(products[1], products[0], atol=1e-5, rtol=1e-4)
    # Three convolutions, of which the user's own function stays a lax convolution.
    assert convolutions == [3, 1]
    assert swapped.tail.layers[1].conv_general_dilated is own_conv
    assert stock.blocks[0].conv_general_dilated is jax.lax.conv_general_dilated  # a copy


def test_swap_stock_convs_refuses_what_it_cannot_swap():
    import equinox as eqx
    import flax.linen as linen

    with pytest.raises(TypeError, match=r"NNX module.*conv_general_dilated=jaxreg.nn.patch_conv"):
        nn.swap_stock_convs(linen.Conv(4, (3, 3)))
    with pytest.raises(TypeError, match="Equinox"):
        nn.swap_stock_convs(eqx.nn.Conv2d(1, 4, 3, key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"module: Linear has no nnx\.Conv"):
        nn.swap_stock_convs(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_a_linen_conv_given_patch_conv_computes_the_stock_function_without_lax():
    """What the Linen advice (docs/howto/own_model.md, ``swap_stock_convs``'s error) says."""
    import flax.linen as linen

    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    stock = linen.Conv(4, (3, 3), strides=2)
    fast = linen.Conv(4, (3, 3), strides=2, conv_general_dilated=patch_conv)
    variables = stock.init(jax.random.key(1), x)
    chex.assert_trees_all_close(fast.apply(variables, x), stock.apply(variables, x), atol=1e-5)
    assert _convolutions(jax.make_jaxpr(lambda x: fast.apply(variables, x))(x).jaxpr) == 0
    assert _convolutions(jax.make_jaxpr(lambda x: stock.apply(variables, x))(x).jaxpr) == 1
