"""The same network in Flax NNX, Flax Linen and Equinox: equal losses, gradients, HVPs,
top eigenvalues and training runs for equal weights; a plain-jnp network is the reference."""

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import data, fit, sharpness
from jaxreg.losses import classification_loss
from jaxreg.nn import from_equinox, from_linen, from_nnx

eqx = pytest.importorskip("equinox")

W1 = np.asarray(jax.random.normal(jax.random.key(10), (4, 8)) * 0.5, np.float32)
B1 = np.linspace(-0.2, 0.2, 8, dtype=np.float32)
W2 = np.asarray(jax.random.normal(jax.random.key(11), (8, 3)) * 0.5, np.float32)
B2 = np.array([0.1, -0.1, 0.05], np.float32)


def _reference_logits(w1, b1, w2, b2, x):
    return jnp.tanh(x @ w1 + b1) @ w2 + b2


class _NNXNet(nnx.Module):
    call_keywords = ("train", "rngs")

    def __init__(self):
        self.hidden = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
        self.out = nnx.Linear(8, 3, rngs=nnx.Rngs(0))
        self.hidden.kernel.set_value(jnp.asarray(W1))
        self.hidden.bias.set_value(jnp.asarray(B1))
        self.out.kernel.set_value(jnp.asarray(W2))
        self.out.bias.set_value(jnp.asarray(B2))

    def __call__(self, x, *, train=False, rngs=None):
        return self.out(jnp.tanh(self.hidden(x)))


class _LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x, train=False):
        return linen.Dense(3, name="out")(jnp.tanh(linen.Dense(8, name="hidden")(x)))


class _EqxNet(eqx.Module):
    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self):
        self.hidden = eqx.nn.Linear(4, 8, key=jax.random.key(0))
        self.out = eqx.nn.Linear(8, 3, key=jax.random.key(1))

    def __call__(self, x, *, key=None):
        return self.out(jnp.tanh(self.hidden(x)))


def _models():
    linen_vars = {
        "params": {
            "hidden": {"kernel": jnp.asarray(W1), "bias": jnp.asarray(B1)},
            "out": {"kernel": jnp.asarray(W2), "bias": jnp.asarray(B2)},
        }
    }
    net = _EqxNet()
    net = eqx.tree_at(
        lambda m: (m.hidden.weight, m.hidden.bias, m.out.weight, m.out.bias),
        net,
        (jnp.asarray(W1.T), jnp.asarray(B1), jnp.asarray(W2.T), jnp.asarray(B2)),
    )
    return {
        "nnx": from_nnx(_NNXNet()),
        "linen": from_linen(_LinenNet(), linen_vars),
        "equinox": from_equinox(net),
    }


def _canonical(name, params):
    """Each framework's parameters as (w1, b1, w2, b2) in the (in, out) layout."""
    if name in ("nnx", "linen"):
        return (
            params["hidden"]["kernel"],
            params["hidden"]["bias"],
            params["out"]["kernel"],
            params["out"]["bias"],
        )
    return (params.hidden.weight.T, params.hidden.bias, params.out.weight.T, params.out.bias)


def _from_canonical(name, template, w1, b1, w2, b2):
    if name in ("nnx", "linen"):
        return {"hidden": {"kernel": w1, "bias": b1}, "out": {"kernel": w2, "bias": b2}}
    return eqx.tree_at(
        lambda m: (m.hidden.weight, m.hidden.bias, m.out.weight, m.out.bias),
        template,
        (w1.T, b1, w2.T, b2),
    )


@pytest.fixture(scope="module")
def problem():
    x = jax.random.normal(jax.random.key(0), (40, 4))
    y = jnp.argmax(x[:, :3] + 0.3 * x[:, 3:], axis=1)
    return x, y


def test_losses_gradients_hvps_and_eigenvalues_agree_across_frameworks(problem):
    x, y = problem
    batches = data.batches(x, y, 20)

    def reference_loss(w1, b1, w2, b2):
        logits = _reference_logits(w1, b1, w2, b2, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    arrays = tuple(jnp.asarray(a) for a in (W1, B1, W2, B2))
    expected_loss = reference_loss(*arrays)
    expected_grads = jax.grad(reference_loss, argnums=(0, 1, 2, 3))(*arrays)
    direction = tuple(jax.random.normal(jax.random.key(i), a.shape) for i, a in enumerate(arrays))
    expected_hvp = jax.jvp(
        lambda *a: jax.grad(reference_loss, argnums=(0, 1, 2, 3))(*a), arrays, direction
    )[1]
    flat, unravel = jax.flatten_util.ravel_pytree(arrays)
    dense = jax.jit(jax.hessian(lambda v: reference_loss(*unravel(v))))(flat)
    expected_top = np.sort(np.linalg.eigvalsh(np.asarray(dense, np.float64)))[::-1][:2]

    for name, model in _models().items():
        loss_fn = classification_loss(model.bind())
        loss = loss_fn(model.params, {"x": x, "y": y})
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-6, err_msg=name)
        grads = jax.grad(loss_fn)(model.params, {"x": x, "y": y})
        chex.assert_trees_all_close(_canonical(name, grads), expected_grads, rtol=1e-5, atol=1e-7)
        v = _from_canonical(name, model.params, *direction)
        product = sharpness.hvp(loss_fn, model.params, batches)(v)
        chex.assert_trees_all_close(_canonical(name, product), expected_hvp, rtol=1e-4, atol=1e-6)
        top, _, _ = sharpness.top_eigenvalues(
            loss_fn, model.params, batches, key=jax.random.key(0), k=2, num_iters=30
        )
        np.testing.assert_allclose(top, expected_top, rtol=1e-3, err_msg=name)


def test_fit_trains_each_framework_to_the_same_parameters(problem):
    x, y = problem
    trained = {}
    for name, model in _models().items():
        result = fit(
            model,
            model.params,
            optax.adam(0.05),
            (x, y),
            key=jax.random.key(1),
            num_epochs=10,
            batch_size=10,
            eval_data=(x, y),
        )
        assert float(result.history["train_loss"][-1]) < float(result.history["train_loss"][0])
        trained[name] = _canonical(name, result.params)
    chex.assert_trees_all_close(trained["linen"], trained["nnx"], rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(trained["equinox"], trained["nnx"], rtol=1e-4, atol=1e-5)


class _LinenBN(linen.Module):
    rate: float = 0.0  # may be traced: linen.Dropout would test `rate == 0` in Python

    @linen.compact
    def __call__(self, x, train=False):
        h = linen.Dense(6)(x)
        h = jax.nn.relu(linen.BatchNorm(use_running_average=not train, momentum=0.9)(h))
        if train:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, h.shape)
            h = jnp.where(keep, h / (1.0 - self.rate), 0.0)
        return linen.Dense(3)(h)


def test_linen_batchnorm_statistics_update_and_rates_come_from_hparams(problem):
    x, y = problem
    variables = _LinenBN().init(jax.random.key(0), x[:2])
    model = from_linen(lambda h: _LinenBN(rate=h.get("dropout_rate", 0.0)), variables)
    assert sorted(model.state) == ["batch_stats"]
    result = fit(
        model,
        model.params,
        optax.adam(0.01),
        (x, y),
        key=jax.random.key(2),
        num_epochs=3,
        batch_size=10,
        hparams={"dropout_rate": 0.2},
    )
    moved = result.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(moved, variables["batch_stats"]["BatchNorm_0"]["mean"])

    # A hand-written Linen step: the statistics after one full-batch step.
    def loss(params):
        logits, updates = _LinenBN().apply(
            {"params": params, **model.state},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},  # rate 0: every unit kept
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (_, updates), _ = jax.value_and_grad(loss, has_aux=True)(model.params)
    one_step = fit(
        model,
        model.params,
        optax.sgd(0.0),
        (x, y),
        key=jax.random.key(2),
        num_epochs=1,
        batch_size=len(y),
    )
    chex.assert_trees_all_close(one_step.model_state, dict(updates), rtol=1e-5, atol=1e-6)


class _EqxBN(eqx.Module):
    hidden: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.hidden = eqx.nn.Linear(4, 6, key=k1)
        self.norm = eqx.nn.BatchNorm(6, axis_name="batch", momentum=0.9, mode="ema")
        self.out = eqx.nn.Linear(6, 3, key=k2)

    def __call__(self, x, state, *, key=None):
        h, state = self.norm(self.hidden(x), state)
        return self.out(jax.nn.relu(h)), state


def test_equinox_batchnorm_state_updates_like_a_hand_written_step(problem):
    x, y = problem
    net, state = eqx.nn.make_with_state(_EqxBN)(jax.random.key(0))
    model = from_equinox(net, state)

    # Equinox's documented pattern: vmap with the BatchNorm's axis name, state unbatched.
    def loss(params):
        module = eqx.combine(params, eqx.partition(net, eqx.is_inexact_array)[1])
        logits, new_state = jax.vmap(
            module, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
        )(x, state)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

    (expected_loss, expected_state), grads = jax.value_and_grad(loss, has_aux=True)(model.params)
    result = fit(
        model,
        model.params,
        optax.sgd(0.1),
        (x, y),
        key=jax.random.key(0),
        num_epochs=1,
        batch_size=len(y),
    )
    np.testing.assert_allclose(result.history["objective"][0], expected_loss, rtol=1e-6)
    chex.assert_trees_all_close(result.model_state, expected_state, rtol=1e-5, atol=1e-6)
    expected_params = jax.tree.map(lambda p, g: p - 0.1 * g, model.params, grads)
    chex.assert_trees_all_close(result.params, expected_params, rtol=1e-5, atol=1e-6)
