import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg import nn


def test_mlp_functional_matches_the_module():
    model = nn.MLP((40, 100, 100, 10), rngs=nnx.Rngs(0))
    apply, params = nn.functional(model)
    x = jax.random.normal(jax.random.key(1), (5, 40))
    np.testing.assert_array_equal(apply(params, x), model(x))
    kernel = params["layers"][0]["kernel"]
    manual = x @ kernel + params["layers"][0]["bias"]
    np.testing.assert_allclose(
        apply(params, x),
        (
            jax.nn.relu(
                jax.nn.relu(manual) @ params["layers"][1]["kernel"] + params["layers"][1]["bias"]
            )
            @ params["layers"][2]["kernel"]
            + params["layers"][2]["bias"]
        ),
        rtol=1e-5,
        atol=1e-5,
    )


def test_parameter_counts_match_closed_forms():
    # Linear a->b: a*b + b parameters; 1-D conv, kernel k, c_in -> c_out: k*c_in*c_out + c_out.
    mlp = nn.MLP((40, 100, 100, 10), rngs=nnx.Rngs(0))
    assert nn.count_params(mlp) == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    cnn = nn.CNN1D(rngs=nnx.Rngs(0))
    convs = (5 * 1 * 25 + 25) + 2 * (3 * 25 * 25 + 25)
    assert nn.count_params(cnn) == convs + 25 * 5 * 10 + 10
    assert nn.count_params(nn.functional(cnn)[1]) == nn.count_params(cnn)


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (lambda r: nn.CNN1D(rngs=r), (3, 40)),
        (lambda r: nn.CNN2D(rngs=r), (3, 8, 8, 1)),
        (lambda r: nn.MLP((64, 32, 10), activation="tanh", rngs=r), (3, 8, 8, 1)),
    ],
)
def test_models_output_logits(model, shape):
    apply, params = nn.functional(model(nnx.Rngs(0)))
    out = jax.jit(apply)(params, jnp.ones(shape))
    assert out.shape == (3, 10) and bool(jnp.all(jnp.isfinite(out)))


def test_init_params_stacks_independent_models():
    apply, params = nn.init_params(
        lambda r: nn.MLP((4, 8, 2), rngs=r), jax.random.split(jax.random.key(0), 3)
    )
    kernels = params["layers"][0]["kernel"]
    assert kernels.shape == (3, 4, 8)
    assert not np.allclose(kernels[0], kernels[1])
    single = nn.functional(
        nn.MLP((4, 8, 2), rngs=nnx.Rngs(params=jax.random.split(jax.random.key(0), 3)[1]))
    )[1]
    np.testing.assert_array_equal(kernels[1], single["layers"][0]["kernel"])
    out = jax.vmap(apply, in_axes=(0, None))(params, jnp.ones((5, 4)))
    assert out.shape == (3, 5, 2)


def test_dropout_needs_a_key_in_train_mode_and_is_identity_in_eval():
    apply, params = nn.functional(nn.MLP((4, 64, 2), dropout_rate=0.5, rngs=nnx.Rngs(0)))
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match="key"):
        apply(params, x, train=True)
    np.testing.assert_array_equal(apply(params, x), apply(params, x, key=jax.random.key(0)))
    a = apply(params, x, key=jax.random.key(0), train=True)
    b = apply(params, x, key=jax.random.key(0), train=True)
    c = apply(params, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="activation"):
        nn.MLP((4, 2), activation="relu6x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP((4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rate"):
        nn.MLP((4, 2), dropout_rate=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="model"):
        nn.functional(lambda x: x)
