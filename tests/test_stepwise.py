"""``HostOptions(steps="host")`` / ``run_stepwise``: one compiled call per minibatch step.

References: a plain full-batch gradient-descent loop, and the ``lax.scan`` driver
(:meth:`TrainLoop.run`, itself tested against plain loops) on the same keys.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, Model, from_nnx, functional
from jaxreg.training import EarlyStopping, HostOptions, TrainLoop, loop_data, run_stepwise

HOST = HostOptions(steps="host")


@pytest.fixture(scope="module")
def problem():
    x = jax.random.normal(jax.random.key(0), (90, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    return x, y


def test_full_batch_host_steps_equal_plain_gradient_descent(problem):
    x, y = problem
    apply, params = functional(MLP((6, 16, 2), rngs=nnx.Rngs(0)))
    result = fit(apply, params, optax.sgd(0.5), (x, y), key=jax.random.key(0), num_epochs=4,
                 batch_size=len(y), host=HOST)  # fmt: skip
    loss_fn = classification_loss(apply)
    reference = params
    for _ in range(4):
        grads = jax.grad(lambda p: loss_fn(p, {"x": x, "y": y}))(reference)
        reference = jax.tree.map(lambda w, g: w - 0.5 * g, reference, grads)
    chex.assert_trees_all_close(result.params, reference, rtol=1e-5, atol=1e-6)


def test_host_steps_follow_the_scanned_run_with_dropout_padding_and_early_stopping(problem):
    x, y = problem
    model = from_nnx(MLP((6, 32, 2), dropout_rate=0.3, rngs=nnx.Rngs(1)))
    kwargs = dict(key=jax.random.key(2), num_epochs=12, batch_size=16,  # 90 = 5 × 16 + 10
                  eval_data=(x[:30], y[:30]), hparams={"dropout_rate": 0.2},
                  early_stopping=EarlyStopping(2, monitor="eval_loss"))  # fmt: skip
    scanned = fit(model, model.params, optax.adam(3e-2), (x, y), **kwargs)
    stepped = fit(model, model.params, optax.adam(3e-2), (x, y), host=HOST, **kwargs)
    assert int(stepped.early_stopping.stop_step) == int(scanned.early_stopping.stop_step) < 11
    chex.assert_trees_all_close(stepped.params, scanned.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(stepped.history, scanned.history, rtol=1e-5, atol=1e-6)
    other_key = fit(model, model.params, optax.adam(3e-2), (x, y), host=HOST,
                    **{**kwargs, "key": jax.random.key(3)})  # fmt: skip
    assert not np.allclose(other_key.history["objective"][:2], stepped.history["objective"][:2])


def test_host_steps_in_chunks_and_resumed_equal_one_call_bitwise(problem, tmp_path):
    x, y = problem
    apply, params = functional(MLP((6, 16, 2), rngs=nnx.Rngs(0)))
    kwargs = dict(key=jax.random.key(4), num_epochs=5, batch_size=20, eval_data=(x, y))
    whole = fit(apply, params, optax.adam(1e-2), (x, y), host=HOST, **kwargs)
    first = HostOptions(steps="host", checkpoint_dir=tmp_path, epochs_per_chunk=2)
    fit(apply, params, optax.adam(1e-2), (x, y), **{**kwargs, "num_epochs": 2}, host=first)
    resumed = fit(apply, params, optax.adam(1e-2), (x, y), host=first, **kwargs)
    chex.assert_trees_all_equal(resumed.params, whole.params)
    chex.assert_trees_all_equal(resumed.history, whole.history)


def test_equal_loops_share_compiled_steps(problem):
    x, y = problem
    traces = []

    def apply(params, state, inputs, *, key=None, train=False, hparams=None):
        if train:
            traces.append(1)  # runs only while the step program is traced
        return inputs @ params, state

    model, optimizer = Model(apply, jnp.zeros((6, 2))), optax.sgd(0.1)
    for _ in range(3):
        fit(model, model.params, optimizer, (x, y), key=jax.random.key(0), num_epochs=2,
            batch_size=30, host=HOST)  # fmt: skip
    assert len(traces) == 1
    assert TrainLoop(apply, optimizer, 30, penalty_strength=jnp.float32(0.5)) == TrainLoop(
        apply, optimizer, 30, penalty_strength=0.5
    )


def test_run_stepwise_is_refused_under_a_transformation(problem):
    x, y = problem
    apply, params = functional(MLP((6, 8, 2), rngs=nnx.Rngs(0)))
    loop = TrainLoop(lambda p, s, xb, **kw: (apply(p, xb, **kw), s), optax.sgd(0.1), 30)
    data = loop_data((x, y))

    def through_arguments(scale):
        state = loop.init(jax.tree.map(lambda w: w * scale, params))
        return run_stepwise(loop, state, data, key=jax.random.key(0), num_epochs=1)[1]

    with pytest.raises(ValueError, match=r"steps='host'.*host-side call"):
        jax.vmap(through_arguments)(jnp.ones(2))

    def through_a_closure(lr):  # the tracer hides in the optimizer, not in the arguments
        return fit(apply, params, optax.sgd(lr), (x, y), key=jax.random.key(0), num_epochs=1,
                   batch_size=30, host=HOST).params  # fmt: skip

    with pytest.raises(ValueError, match="steps='host'"):
        jax.vmap(through_a_closure)(jnp.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="steps must be 'scan' or 'host'"):
        HostOptions(steps="python")


def test_an_unhashable_loop_field_is_named(problem):
    x, y = problem

    class Penalty:  # defines __eq__ without __hash__: unhashable
        def __eq__(self, other):
            return self is other

        def __call__(self, params):
            return jnp.sum(params**2)

    loop = TrainLoop(lambda p, s, xb, **kw: (xb @ p, s), optax.sgd(0.1), 30, penalty=Penalty())
    with pytest.raises(TypeError, match="hashable"):
        run_stepwise(loop, loop.init(jnp.zeros((6, 2))), loop_data((x, y)),
                     key=jax.random.key(0), num_epochs=1)  # fmt: skip
