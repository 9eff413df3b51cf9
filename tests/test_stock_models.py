"""Models written as Flax NNX, Flax Linen and Equinox document them, trained and swept unchanged.

References: each framework's own forward pass and dropout (same key, concrete rate),
a hand-written NNX loop with ``nnx.Optimizer``, separate runs with the rate written in.
"""

import chex
import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit, sweeps
from jaxreg.nn import Dropout, from_equinox, from_linen, from_nnx, stock_dropout
from jaxreg.training import evaluate

X = jax.random.normal(jax.random.key(0), (64, 6))
Y = (X[:, 0] + X[:, 1] > 0).astype(jnp.int32)
RATES = (0.0, 0.3, 0.6)


class _StockNNX(nnx.Module):
    """As the Flax NNX tutorials write it: no train argument, RNG streams in the module."""

    def __init__(self, rngs: nnx.Rngs, rate: float = 0.2, dropout: bool = True):
        self.linear1 = nnx.Linear(6, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.linear2 = nnx.Linear(16, 2, rngs=rngs)
        self.dropout = nnx.Dropout(rate, rngs=rngs) if dropout else None

    def __call__(self, x):
        h = nnx.relu(self.bn(self.linear1(x)))
        if self.dropout is not None:
            h = self.dropout(h)
        return self.linear2(h)


def _fit(model, hparams=None, key=None, **kwargs):
    key = jax.random.key(1) if key is None else key
    # SGD, not Adam: a bias before BatchNorm has a gradient of pure roundoff, which
    # Adam would scale up to full steps and so compare noise.
    return fit(
        model,
        model.params,
        optax.sgd(0.1),
        (X, Y),
        key=key,
        num_epochs=3,
        batch_size=16,
        hparams=hparams,
        **kwargs,
    )


def test_stock_nnx_module_trains_through_fit():
    """Was: TypeError: __call__() got an unexpected keyword argument 'train'."""
    model = from_nnx(_StockNNX(nnx.Rngs(0)))
    result = _fit(model)
    before = evaluate(model, model.params, X, Y)["loss"]
    assert float(result.history["train_loss"][-1]) < 0.8 * float(before)
    changed = jax.tree.map(lambda a, b: bool((a != b).any()), model.state, result.model_state)
    assert all(jax.tree.leaves(changed)), "BatchNorm statistics must be updated in train mode"


def test_stock_nnx_equals_a_hand_written_nnx_loop_without_dropout():
    """Full batch, SGD: fit's params and BatchNorm statistics equal nnx.Optimizer's loop."""
    steps = 5
    reference = _StockNNX(nnx.Rngs(0), dropout=False)
    optimizer = nnx.Optimizer(reference, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)

    reference.train()
    for _ in range(steps):
        step(reference, optimizer, X, Y)
    model = from_nnx(_StockNNX(nnx.Rngs(0), dropout=False))
    result = fit(
        model, model.params, optax.sgd(0.1), (X, Y), key=jax.random.key(0),
        num_epochs=steps, batch_size=len(Y),
    )  # fmt: skip
    expected = nnx.to_pure_dict(nnx.state(reference, nnx.Param))
    chex.assert_trees_all_close(result.params, expected, rtol=2e-5, atol=2e-6)
    stats = nnx.to_pure_dict(nnx.state(reference, nnx.BatchStat))
    chex.assert_trees_all_close(result.model_state, stats, rtol=2e-5, atol=2e-6)


def test_the_call_key_drives_the_module_streams():
    model = from_nnx(_StockNNX(nnx.Rngs(0), rate=0.5))

    def forward(key):
        return model.apply(model.params, model.state, X, key=key, train=True)[0]

    a, b = forward(jax.random.key(1)), forward(jax.random.key(1))
    chex.assert_trees_all_equal(a, b)
    assert bool((a != forward(jax.random.key(2))).any())
    members = jax.vmap(forward)(jax.random.split(jax.random.key(3), 2))
    assert bool((members[0] != members[1]).any()), "vmap members must get their own masks"
    eval_a = model.apply(model.params, model.state, X, key=jax.random.key(1))[0]
    eval_b = model.apply(model.params, model.state, X)[0]
    chex.assert_trees_all_equal(eval_a, eval_b)


def test_stock_dropout_draws_the_frameworks_own_masks():
    x = jnp.arange(1.0, 41.0).reshape(4, 10)
    key = jax.random.key(7)
    for rate in (0.0, 0.25, 0.5):
        nnx_mask = nnx.Dropout(rate)(x, deterministic=False, rngs=key)
        linen_mask = linen.Dropout(rate, deterministic=False).apply({}, x, rng=key)
        traced = jax.jit(stock_dropout)(key, x, jnp.float32(rate))
        chex.assert_trees_all_equal(traced, nnx_mask)
        chex.assert_trees_all_equal(traced, linen_mask)
    assert bool((stock_dropout(key, x, jnp.float32(1.0)) == 0).all())
    broadcast = stock_dropout(key, x, jnp.float32(0.5), broadcast_dims=(0,))
    assert bool(((broadcast == 0) == (broadcast[:1] == 0)).all()), "one mask per column"


def test_swept_stock_nnx_rates_are_one_compile_and_equal_separate_runs():
    module = _StockNNX(nnx.Rngs(0))
    model = from_nnx(module, rates={"dropout_rate": "dropout"})

    @chex.assert_max_traces(n=1)
    def train_fn(config, key):
        result = _fit(model, hparams=config, key=key)
        return {"params": result.params, "state": result.model_state}

    chex.clear_trace_counter()
    key = jax.random.key(5)
    swept = sweeps.run(train_fn, sweeps.grid(dropout_rate=list(RATES)), key=key, progress=False)
    member_key = jax.random.split(key, 1)[0]
    for i, rate in enumerate(RATES):
        # The reference writes the rate into the stock layer and sweeps nothing.
        single = _fit(from_nnx(_StockNNX(nnx.Rngs(0), rate=rate)), key=member_key)
        member = jax.tree.map(lambda a, i=i: a[i], swept.metrics["params"])
        chex.assert_trees_all_close(member, single.params, rtol=1e-5, atol=1e-6)
    assert not np.allclose(
        swept.metrics["params"]["linear2"]["kernel"][0],
        swept.metrics["params"]["linear2"]["kernel"][2],
    )


def test_a_stock_nnx_rate_of_zero_equals_no_dropout_bitwise():
    swept = from_nnx(_StockNNX(nnx.Rngs(0)), rates={"dropout_rate": "*"})
    plain = from_nnx(_StockNNX(nnx.Rngs(0), dropout=False))
    zero = jax.jit(lambda: _fit(swept, hparams={"dropout_rate": jnp.float32(0.0)}).params)()
    chex.assert_trees_all_equal(zero, jax.jit(lambda: _fit(plain).params)())


def test_stock_nnx_errors_name_the_module_and_the_fix():
    with pytest.raises(ValueError, match=r"'drop' is not an nnx.Dropout of _StockNNX"):
        from_nnx(_StockNNX(nnx.Rngs(0)), rates={"dropout_rate": "drop"})
    with pytest.raises(ValueError, match=r"has no nnx.Dropout"):
        from_nnx(_StockNNX(nnx.Rngs(0), dropout=False), rates={"dropout_rate": "*"})

    class TakesTrain(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(6, 2, rngs=nnx.Rngs(0))

        def __call__(self, x, train=False):
            return self.linear(x)

    with pytest.raises(TypeError, match=r"TakesTrain.__call__ takes `train`.*call_keywords"):
        from_nnx(TakesTrain())

    class NeedsMask(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(6, 2, rngs=nnx.Rngs(0))

        def __call__(self, x, mask):
            return self.linear(x * mask)

    model = from_nnx(NeedsMask())
    with pytest.raises(TypeError, match="calls NeedsMask as module\\(x\\)"):
        model.apply(model.params, model.state, X)

    class JaxregLayers(nnx.Module):
        def __init__(self):
            self.drop = Dropout(0.1)

        def __call__(self, x):
            return self.drop(x)

    with pytest.raises(TypeError, match="JaxregLayers holds jaxreg dropout layers"):
        from_nnx(JaxregLayers())

    class NoStream(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(6, 2, rngs=nnx.Rngs(0))
            self.dropout = nnx.Dropout(0.5)  # no rngs: nothing the key can reach

        def __call__(self, x):
            return self.dropout(self.linear(x))

    model = from_nnx(NoStream())
    with pytest.raises(ValueError, match="a dropout layer of NoStream has no RNG stream"):
        model.apply(model.params, model.state, X, key=jax.random.key(0), train=True)
    model = from_nnx(_StockNNX(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="_StockNNX draws random numbers in train mode"):
        model.apply(model.params, model.state, X, train=True)


class _StockLinen(linen.Module):
    """As the Flax Linen examples write it: nn.Dropout(self.rate, deterministic=not train)."""

    rate: float = 0.2

    @linen.compact
    def __call__(self, x, train: bool = False):
        x = linen.relu(linen.Dense(16)(x))
        x = linen.Dropout(self.rate, deterministic=not train)(x)
        return linen.Dense(2)(x)


def test_stock_linen_dropout_sweeps_under_vmap_and_matches_linen():
    """Was: TracerBoolConversionError (Linen tests rate == 0 in Python)."""
    variables = _StockLinen().init(jax.random.key(0), X[:1])
    model = from_linen(lambda h: _StockLinen(rate=h["dropout_rate"]), variables)
    key = jax.random.key(3)
    for rate in (0.0, 0.4):
        own = _StockLinen(rate=rate).apply(variables, X, train=True, rngs={"dropout": key})
        traced = jax.jit(
            lambda r: model.apply(
                model.params, {}, X, key=key, train=True, hparams={"dropout_rate": r}
            )[0]
        )(jnp.float32(rate))
        # Same mask; the scale 1/(1 - rate) is computed in float32 from a traced rate.
        chex.assert_trees_all_equal(traced == 0, own == 0)
        chex.assert_trees_all_close(traced, own, rtol=1e-5, atol=1e-7)
    swept = jax.vmap(lambda r: _fit(model, hparams={"dropout_rate": r}).params)(
        jnp.array([0.0, 0.4])
    )
    for i, rate in enumerate((0.0, 0.4)):
        net = _StockLinen(rate=rate)
        single = _fit(from_linen(net, variables))
        member = jax.tree.map(lambda a, i=i: a[i], swept)
        chex.assert_trees_all_close(member, single.params, rtol=1e-5, atol=1e-6)


def test_a_stock_linen_model_with_its_written_rate_runs_linens_own_dropout():
    variables = _StockLinen(rate=0.4).init(jax.random.key(0), X[:1])
    model = from_linen(_StockLinen(rate=0.4), variables)
    key = jax.random.key(3)
    own = _StockLinen(rate=0.4).apply(variables, X, train=True, rngs={"dropout": key})
    ours = jax.jit(lambda p: model.apply(p, {}, X, key=key, train=True)[0])(model.params)
    chex.assert_trees_all_equal(ours, own)


def test_linen_rates_by_layer_name_and_a_name_that_reaches_nothing():
    variables = _StockLinen().init(jax.random.key(0), X[:1])
    model = from_linen(_StockLinen(), variables, rates={"dropout_rate": "Dropout_0"})
    assert model.hparam_names == {"dropout_rate"}
    zero = model.apply(
        model.params, {}, X, key=jax.random.key(1), train=True, hparams={"dropout_rate": 0.0}
    )[0]
    chex.assert_trees_all_equal(zero, model.apply(model.params, {}, X)[0])
    wrong = from_linen(_StockLinen(), variables, rates={"dropout_rate": "Dropout_7"})
    with pytest.raises(ValueError, match=r"reached no linen.Dropout"):
        wrong.apply(wrong.params, {}, X)


def _equinox_net(p: float) -> eqx.nn.Sequential:
    keys = jax.random.split(jax.random.key(0), 2)
    return eqx.nn.Sequential(
        [
            eqx.nn.Linear(6, 16, key=keys[0]),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Dropout(p),
            eqx.nn.Linear(16, 2, key=keys[1]),
        ]
    )


def test_equinox_dropout_p_is_swept_through_declared_fields():
    """Was: the rate was silently ignored (every member trained identically)."""
    model = from_equinox(_equinox_net(0.2), fields={"dropout_rate": lambda m: m.layers[2].p})
    assert model.hparam_names == {"dropout_rate"}
    swept = jax.vmap(lambda r: _fit(model, hparams={"dropout_rate": r}).params)(
        jnp.array([0.0, 0.5])
    )
    for i, p in enumerate((0.0, 0.5)):
        single = _fit(from_equinox(_equinox_net(p)))  # the rate written into the module
        member = jax.tree.map(lambda a, i=i: a[i], swept)
        chex.assert_trees_all_close(member, single.params, rtol=1e-5, atol=1e-6)
    x = X[:4]
    zero = model.apply(model.params, {}, x, key=jax.random.key(0), train=True,
                       hparams={"dropout_rate": jnp.float32(0.0)})[0]  # fmt: skip
    chex.assert_trees_all_equal(zero, model.apply(model.params, {}, x)[0])  # rate 0: identity
    with pytest.raises(ValueError, match="fields\\['dropout_rate'\\] reaches nothing"):
        from_equinox(_equinox_net(0.2), fields={"dropout_rate": lambda m: m.layers[9].p})
