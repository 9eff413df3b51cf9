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


class _InputNorm(nnx.Module):
    """BatchNorm on the inputs, then a linear layer: its statistics are those of ``x``."""

    call_keywords = ("train", "rngs")

    def __init__(self, momentum: float, *, rngs: nnx.Rngs):
        self.norm = nnx.BatchNorm(3, momentum=momentum, rngs=rngs)
        self.linear = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x, *, train: bool = False, rngs=None):
        return self.linear(self.norm(x, use_running_average=not train))


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_recomputed_batch_stats_are_the_mean_of_per_batch_statistics(momentum):
    """Input BatchNorm: the recomputed mean/var are the example-weighted means of each
    batch's mean and (biased) variance of ``x``, whatever the momentum; a ragged last
    batch counts by its size."""
    from jaxreg.averaging import recompute_batch_stats
    from jaxreg.nn import from_nnx

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(90, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 0.2]).astype(np.float32)
    model = from_nnx(_InputNorm(momentum, rngs=nnx.Rngs(0)))
    state = recompute_batch_stats(model, model.params, x, batch_size=40)
    sizes = [40, 40, 10]
    batches = np.split(x, [40, 80])
    mean = sum(len(b) * b.mean(0) for b in batches) / 90
    var = sum(len(b) * b.var(0) for b in batches) / 90
    assert [len(b) for b in batches] == sizes
    np.testing.assert_allclose(state["norm"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["norm"]["var"], var, rtol=1e-5, atol=1e-6)
    # In eval mode the recomputed statistics normalize x: per-feature mean ≈ 0.
    normalized = (x - np.asarray(state["norm"]["mean"])) / np.sqrt(
        np.asarray(state["norm"]["var"]) + 1e-5
    )
    np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-5)


def test_recomputed_batch_stats_of_a_resnet_match_its_known_momentum():
    """A deep model (every BatchNorm of ResNet1D, PyTorch momentum 0.1 on the batch):
    each leaf equals the mean over batches of ``(train-mode state from zeros) / 0.1``."""
    from jaxreg.averaging import recompute_batch_stats
    from jaxreg.nn import ResNet1D, from_nnx

    model = from_nnx(ResNet1D(widths=(4, 8), rngs=nnx.Rngs(1)))
    x = jax.random.normal(jax.random.key(0), (48, 40)) + 0.5
    params = jax.tree.map(lambda a: a * 1.3, model.params)  # e.g. an average of iterates
    state = recompute_batch_stats(model, params, x, batch_size=16)
    zeros = jax.tree.map(jnp.zeros_like, model.state)
    step = jax.jit(lambda xb: model.apply(params, zeros, xb, train=True)[1])
    per_batch = [step(x[i : i + 16]) for i in (0, 16, 32)]
    expected = jax.tree.map(lambda *s: sum(s) / (3 * (1 - 0.9)), *per_batch)
    chex.assert_trees_all_close(state, expected, rtol=2e-4, atol=1e-5)
    assert not jax.tree.all(jax.tree.map(jnp.allclose, state, model.state))


def test_recompute_batch_stats_rejects_bad_input():
    from jaxreg.averaging import recompute_batch_stats
    from jaxreg.nn import MLP, from_nnx

    stateless = from_nnx(MLP((3, 4, 2), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no state"):
        recompute_batch_stats(stateless, stateless.params, np.ones((4, 3)), batch_size=2)
    model = from_nnx(_InputNorm(0.9, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="batch_size"):
        recompute_batch_stats(model, model.params, np.ones((4, 3)), batch_size=0)


def test_swa_defaults_to_every_iterate_and_counts_every_from_its_start():
    _, state = _run(averaging.swa())
    np.testing.assert_allclose(
        averaging.averaged_params(state)["w"], np.mean(_iterates(), axis=0), rtol=1e-6
    )
    _, state = _run(averaging.swa(start=1, every=3))  # steps 1, 4, 7
    chosen = [w for step, w in enumerate(_iterates()) if step in (1, 4, 7)]
    np.testing.assert_allclose(averaging.averaged_params(state)["w"], np.mean(chosen, 0), rtol=1e-6)


def test_averages_keep_the_params_dtype_and_integer_counters_under_x64(x64):
    params = {"w": jnp.array([1.0, 2.0], jnp.float32)}
    for transform in (averaging.swa(), averaging.ema(0.9)):
        opt = optax.chain(optax.sgd(0.1), transform)
        state = opt.init(params)
        assert state[1].count.dtype == jnp.int32
        _, state = opt.update({"w": jnp.ones(2, jnp.float32)}, state, params)
        assert averaging.averaged_params(state)["w"].dtype == jnp.float32
    assert averaging.swa().init(params).num_averaged.dtype == jnp.int32


def test_a_debiased_ema_before_any_step_is_finite():
    state = averaging.ema(0.9).init({"w": jnp.array([1.0, 2.0])})
    assert np.all(np.isfinite(averaging.averaged_params(state)["w"]))


def test_averaging_names_its_arguments():
    with pytest.raises(ValueError, match=r"^decay must lie in \[0.0, 1.0\)"):
        averaging.ema(1.0)
    for transform, name in ((averaging.swa(), "swa"), (averaging.ema(0.5), "ema")):
        state = transform.init({"w": jnp.zeros(2)})
        with pytest.raises(ValueError, match=rf"^{name} needs params"):
            transform.update({"w": jnp.zeros(2)}, state)


class _CountingNorm(_InputNorm):
    """``_InputNorm`` with an integer batch-statistics counter, which is not an average."""

    def __init__(self, momentum: float, *, rngs: nnx.Rngs):
        super().__init__(momentum, rngs=rngs)
        self.calls = nnx.BatchStat(jnp.array(7, jnp.int32))

    def __call__(self, x, *, train: bool = False, rngs=None):
        if train:
            self.calls[...] = self.calls[...] + 1
        return super().__call__(x, train=train, rngs=rngs)


def test_recompute_batch_stats_leaves_integer_state_alone_and_takes_single_examples():
    from jaxreg.averaging import recompute_batch_stats
    from jaxreg.nn import from_nnx

    model = from_nnx(_CountingNorm(0.9, rngs=nnx.Rngs(0)))
    x = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    state = recompute_batch_stats(model, model.params, x, batch_size=2)
    assert int(state["calls"]) == 7
    np.testing.assert_allclose(state["norm"]["mean"], x.mean(0), rtol=1e-6)
    single = recompute_batch_stats(model, model.params, x[:1], batch_size=1)
    np.testing.assert_allclose(single["norm"]["mean"], x[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"^x must hold at least one example"):
        recompute_batch_stats(model, model.params, x[:0], batch_size=1)
    stateless = from_nnx(MLP((3, 4, 2), rngs=nnx.Rngs(0)))
    message = r"^model has no state to recompute \(no BatchNorm statistics\)"
    with pytest.raises(ValueError, match=message):
        recompute_batch_stats(stateless, stateless.params, x, batch_size=2)
