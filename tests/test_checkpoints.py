import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit
from jaxreg.nn import MLP, functional
from jaxreg.training import EarlyStopping, HostOptions, checkpoints
from jaxreg.training import early_stopping as es


def test_round_trip_is_bitwise(tmp_path):
    params = functional(MLP((5, 7, 3), rngs=nnx.Rngs(0)))[1]
    opt_state = optax.adam(1e-3).init(params)
    state = {
        "params": params,
        "opt": opt_state,
        "stopping": es.init(params, 3),
        "key": jax.random.key(42),
        "step": jnp.asarray(7),
        "history": jnp.arange(5.0),
    }
    checkpoints.save(tmp_path, 7, state)
    template = jax.tree.map(jnp.zeros_like, {**state, "key": jax.random.key(0)})
    restored, step = checkpoints.restore(tmp_path, template)
    assert step == 7 and checkpoints.latest_step(tmp_path) == 7
    chex.assert_trees_all_equal(
        jax.tree.map(
            lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
            restored,
        ),
        jax.tree.map(
            lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
            state,
        ),
    )
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    with pytest.raises(FileNotFoundError):
        checkpoints.restore(tmp_path / "empty", template)


def test_interrupted_and_resumed_fit_is_bitwise_equal(tmp_path):
    x = jax.random.normal(jax.random.key(0), (120, 6))
    y = (x[:, 0] > 0).astype(jnp.int32)
    apply, params = functional(MLP((6, 16, 2), dropout_rate=0.2, rngs=nnx.Rngs(0)))
    kwargs = dict(
        key=jax.random.key(1),
        batch_size=32,
        eval_data=(x, y),
        early_stopping=EarlyStopping(50, monitor="eval_loss"),
    )
    chunks = dict(epochs_per_chunk=3)
    reference = fit(
        apply, params, optax.adam(1e-2), (x, y), num_epochs=12, host=HostOptions(**chunks), **kwargs
    )
    # "Interrupted" after 6 epochs: a run that only got that far, writing checkpoints.
    fit(
        apply,
        params,
        optax.adam(1e-2),
        (x, y),
        num_epochs=6,
        host=HostOptions(checkpoint_dir=tmp_path / "ck", **chunks),
        **kwargs,
    )
    assert checkpoints.latest_step(tmp_path / "ck") == 6
    resumed = fit(
        apply,
        params,
        optax.adam(1e-2),
        (x, y),
        num_epochs=12,
        host=HostOptions(checkpoint_dir=tmp_path / "ck", **chunks),
        **kwargs,
    )
    chex.assert_trees_all_equal(resumed.params, reference.params)
    chex.assert_trees_all_equal(resumed.opt_state, reference.opt_state)
    chex.assert_trees_all_equal(resumed.history, reference.history)
    with pytest.raises(ValueError, match="another key"):
        fit(
            apply,
            params,
            optax.adam(1e-2),
            (x, y),
            num_epochs=12,
            host=HostOptions(checkpoint_dir=tmp_path / "ck", **chunks),
            **{**kwargs, "key": jax.random.key(2)},
        )
    np.testing.assert_array_equal(resumed.history["eval_loss"].shape, (12,))
