import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg import masks
from jaxreg.nn import MLP, functional


def test_weights_only_and_by_path_on_dicts_and_nnx_state():
    model = MLP((3, 4, 2), rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    params = functional(model)[1]
    for tree in (params, state):
        weights = masks.resolve(masks.weights_only, tree)
        kernels = masks.resolve(masks.by_path(r"kernel$"), tree)
        first_layer = masks.resolve(masks.by_path(r"^layers/0/"), tree)
        not_bias = masks.resolve(masks.by_path("bias", exclude=True), tree)
        assert jax.tree.leaves(weights) == jax.tree.leaves(kernels) == jax.tree.leaves(not_bias)
        assert jax.tree.leaves(weights) == [False, True, False, True]  # bias, kernel per layer
        assert jax.tree.leaves(first_layer) == [True, True, False, False]


def test_resolve_broadcasts_prefixes_and_none():
    params = {"a": {"x": jnp.ones(2), "y": jnp.ones(3)}, "b": jnp.ones(1)}
    assert masks.resolve({"a": True, "b": False}, params) == {
        "a": {"x": True, "y": True},
        "b": False,
    }
    assert masks.resolve(None, params) == {"a": {"x": True, "y": True}, "b": True}


def test_a_mask_shaped_like_equinox_params_is_a_tree_not_a_function():
    import equinox as eqx

    net = eqx.nn.Linear(3, 2, key=jax.random.key(0))  # callable, and a tree of two arrays
    params = eqx.filter(net, eqx.is_inexact_array)
    mask = jax.tree.unflatten(jax.tree.structure(params), [True, False])
    assert jax.tree.leaves(masks.resolve(mask, params)) == [True, False]
    assert jax.tree.leaves(masks.resolve(masks.by_path("bias"), params)) == [False, True]
    leaf = jnp.ones(3)  # a function mask of a single-leaf tree is still called
    assert masks.resolve(lambda p: True, leaf) is True
    # a jax Partial is a (callable) tree too, but of no bools: a function
    first = jax.tree_util.Partial(lambda p: jax.tree.map(lambda a: a.ndim == 2, p))
    assert jax.tree.leaves(masks.resolve(first, params)) == [True, False]
