"""SWA and EMA of weights against plain loops over the iterates."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import averaging, fit, losses
from jaxreg.nn import MLP, functional

GRADS = [np.array([0.5, -1.0]) * (step % 3 + 1) + 0.1 * step for step in range(9)]


def _iterates(lr=0.1):
    w, out = np.array([1.0, 2.0]), []
    for g in GRADS:
        w = w - lr * g
        out.append(w.copy())
    return out


def _run(transform):
    opt = optax.chain(optax.sgd(0.1), transform)
    params = {"w": jnp.array([1.0, 2.0], jnp.float32)}
    state = opt.init(params)
    for g in GRADS:
        updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize(("start", "every"), [(0, 1), (3, 2), (8, 1), (20, 1)])
def test_swa_is_the_mean_of_the_chosen_iterates(start, every):
    params, state = _run(averaging.swa(start, every))
    iterates = _iterates()
    chosen = [w for step, w in enumerate(iterates) if step >= start and (step - start) % every == 0]
    expected = np.mean(chosen, axis=0) if chosen else iterates[-1]
    np.testing.assert_allclose(averaging.averaged_params(state)["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(params["w"], iterates[-1], rtol=1e-6)  # updates untouched


@pytest.mark.parametrize("debias", [True, False])
def test_ema_is_the_exponential_average_of_the_iterates(debias):
    decay = 0.7
    _, state = _run(averaging.ema(decay, debias=debias))
    average = np.zeros(2)
    for w in _iterates():
        average = decay * average + (1 - decay) * w
    if debias:
        average = average / (1 - decay ** len(GRADS))
    np.testing.assert_allclose(averaging.averaged_params(state)["w"], average, rtol=1e-6)


def test_ema_decay_is_traceable_under_jit_vmap():
    def averaged(decay):
        opt = optax.chain(optax.sgd(0.1), averaging.ema(decay))
        params = {"w": jnp.array([1.0, 2.0])}
        state = opt.init(params)
        for g in GRADS:
            updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
            params = optax.apply_updates(params, updates)
        return averaging.averaged_params(state)["w"]

    decays = jnp.array([0.0, 0.5, 0.9])
    batched = jax.jit(jax.vmap(averaged))(decays)
    for index, decay in enumerate([0.0, 0.5, 0.9]):
        np.testing.assert_allclose(batched[index], averaged(decay), rtol=1e-6)
    np.testing.assert_allclose(batched[0], _iterates()[-1], rtol=1e-6)  # decay 0: the iterate


def test_swa_inside_fit_averages_the_per_epoch_iterates_of_a_plain_loop():
    x = jax.random.normal(jax.random.key(0), (24, 3))
    y = (x[:, 0] > 0).astype(jnp.int32)
    apply, params = functional(MLP((3, 8, 2), rngs=nnx.Rngs(0)))
    result = fit(
        apply,
        params,
        optax.chain(optax.sgd(0.2), averaging.swa(start=2)),
        (x, y),
        key=jax.random.key(1),
        num_epochs=6,
        batch_size=24,  # one full batch per epoch: one step per epoch
    )
    loss_fn = losses.classification_loss(apply)
    iterate, iterates = params, []
    for _ in range(6):
        grads = jax.grad(loss_fn)(iterate, {"x": x, "y": y})
        iterate = jax.tree.map(lambda p, g: p - 0.2 * g, iterate, grads)
        iterates.append(iterate)
    expected = jax.tree.map(lambda *leaves: sum(leaves) / 4, *iterates[2:])
    chex.assert_trees_all_close(
        averaging.averaged_params(result.opt_state), expected, rtol=1e-5, atol=1e-6
    )


def test_averaging_checks_its_arguments():
    with pytest.raises(ValueError, match="start"):
        averaging.swa(-1)
    with pytest.raises(ValueError, match="every"):
        averaging.swa(0, 0)
    with pytest.raises(ValueError, match="decay"):
        averaging.ema(1.0)
    with pytest.raises(ValueError, match="exactly one"):
        averaging.averaged_params(optax.sgd(0.1).init({"w": jnp.zeros(2)}))
    with pytest.raises(ValueError, match="params"):
        averaging.swa().update({"w": jnp.zeros(2)}, averaging.swa().init({"w": jnp.zeros(2)}))
