"""Bad inputs get a clear error naming the user's argument, where the value enters (issue 35)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
from jaxreg import sharpness
from jaxreg.data import batches


def _linear_problem():
    x = jax.random.normal(jax.random.key(0), (32, 3))
    y = (x[:, 0] > 0).astype(jnp.int32)

    def apply(params, x, **_):
        return x @ params["w"]

    return apply, {"w": jnp.zeros((3, 2))}, x, y


def _loss_fn(params, batch):
    logits = batch["x"] @ params["w"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    return jnp.sum(batch["weight"] * losses) / jnp.sum(batch["weight"])


def _entry_points(key):
    apply, params, x, y = _linear_problem()
    data = batches(x, y, 16)
    return {
        "fit": lambda: jaxreg.fit(
            apply, params, optax.sgd(0.1), (x, y), key=key, num_epochs=1, batch_size=16
        ),
        "sweeps.run": lambda: jaxreg.sweeps.run(
            lambda config, k: config["lr"] * jax.random.normal(k), {"lr": [0.1]}, key=key
        ),
        "top_eigenvalues": lambda: sharpness.top_eigenvalues(_loss_fn, params, data, key=key),
        "hessian_trace": lambda: sharpness.hessian_trace(_loss_fn, params, data, key=key),
        "spectral_density": lambda: sharpness.spectral_density(_loss_fn, params, data, key=key),
    }


@pytest.mark.parametrize("entry", list(_entry_points(None)))
@pytest.mark.parametrize("key", [0, None, np.zeros(3, np.int32)], ids=["int", "None", "int32"])
def test_every_entry_point_names_a_key_that_is_not_a_prng_key(entry, key):
    with pytest.raises(TypeError, match=r"^key must be a JAX PRNG key such as jax\.random"):
        _entry_points(key)[entry]()


def test_legacy_and_batched_keys_are_accepted():
    from jaxreg._checks import check_key

    check_key(jax.random.PRNGKey(0))
    check_key(jax.random.split(jax.random.key(0), 4))
    jax.vmap(check_key)(jax.random.split(jax.random.key(0), 4))


def test_curvature_names_data_that_is_not_batched():
    apply, params, x, y = _linear_problem()
    key = jax.random.key(0)
    with pytest.raises(TypeError, match=r"^data must be batches from jaxreg\.data\.batches"):
        sharpness.top_eigenvalues(_loss_fn, params, (x, y), key=key)
    unbatched = {"x": x, "y": y, "weight": jnp.ones(32)}
    with pytest.raises(ValueError, match=r"^data has no batch-index axis: its 'weight' has shape"):
        sharpness.top_eigenvalues(_loss_fn, params, unbatched, key=key)
    with pytest.raises(TypeError, match=r"^data must be batches"):
        sharpness.gauss_newton_vp(apply, params, [x, y])
