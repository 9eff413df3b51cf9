"""Training core v2: fit under any transformation, hyperparameters as data, failures are loud.

References: separate host runs of ``fit`` with the values built in (rebuilt
models, concrete optimizers, plain transforms), and plain NumPy.
"""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit, noise, sweeps, transforms
from jaxreg.calling import takes
from jaxreg.nn import MLP, from_nnx, functional
from jaxreg.training import EarlyStopping, HostOptions, TrainLoop, batch_transforms, loop_data


@pytest.fixture(scope="module")
def problem():
    x = jax.random.normal(jax.random.key(0), (96, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    apply, params = functional(MLP((6, 16, 2), rngs=nnx.Rngs(0)))
    return apply, params, x, y


def _member(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def test_fit_under_a_bare_vmap_with_early_stopping_and_progress_equals_separate_runs(problem):
    apply, params, x, y = problem
    learning_rates = jnp.array([1e-3, 3e-2, 0.3])
    kwargs = dict(
        key=jax.random.key(3),
        num_epochs=8,
        batch_size=32,
        eval_data=(x[:40], y[:40]),
        early_stopping=EarlyStopping(2, monitor="eval_loss"),
        host=HostOptions(progress=True),
    )

    @chex.assert_max_traces(n=1)
    def train(lr):
        result = fit(apply, params, optax.adam(lr), (x, y), **kwargs)
        return result.params, result.history, result.early_stopping.stop_step

    chex.clear_trace_counter()
    swept_params, swept_history, stop_steps = jax.vmap(train)(learning_rates)  # no jit around
    assert len(set(np.asarray(stop_steps).tolist())) > 1, "members must stop at different epochs"
    for i, lr in enumerate(learning_rates.tolist()):
        single = fit(apply, params, optax.adam(lr), (x, y), **{**kwargs, "host": HostOptions()})
        chex.assert_trees_all_close(_member(swept_params, i), single.params, rtol=1e-5, atol=1e-6)
        # The host run ends once it stopped; the vmapped one records frozen epochs after that.
        done = len(single.history["eval_loss"])
        for name, values in single.history.items():
            np.testing.assert_allclose(
                swept_history[name][i][:done], values, rtol=1e-5, atol=1e-6, err_msg=name
            )
        assert int(stop_steps[i]) == int(single.early_stopping.stop_step)


def test_checkpoints_are_refused_under_a_transformation(problem, tmp_path):
    apply, params, x, y = problem
    with pytest.raises(ValueError, match="checkpoint_dir"):
        jax.vmap(
            lambda lr: (
                fit(
                    apply,
                    params,
                    optax.sgd(lr),
                    (x, y),
                    key=jax.random.key(0),
                    num_epochs=1,
                    batch_size=32,
                    host=HostOptions(checkpoint_dir=tmp_path),
                ).params
            )
        )(jnp.array([0.1, 0.2]))


def test_one_sweep_over_learning_rate_dropout_weight_decay_and_noise_equals_separate_runs():
    x = jax.random.normal(jax.random.key(0), (64, 6))
    y = (x[:, 0] > 0).astype(jnp.int32)
    model = from_nnx(MLP((6, 16, 2), dropout_rate=0.0, rngs=nnx.Rngs(0)))

    def optimizer(h):
        return optax.chain(
            optax.adam(h["learning_rate"]), transforms.decoupled_weight_decay(h["weight_decay"])
        )

    @chex.assert_max_traces(n=1)
    def train_fn(config, key):
        result = fit(
            model,
            model.params,
            optimizer,
            (x, y),
            key=key,
            hparams=config,
            num_epochs=3,
            batch_size=16,
            batch_transform=batch_transforms.input_noise(),
        )
        return {"params": result.params, "loss": result.history["train_loss"][-1]}

    configs = sweeps.grid(
        learning_rate=[1e-2, 3e-2],
        dropout_rate=[0.0, 0.4],
        weight_decay=[0.0, 1e-2],
        noise_std=[0.0, 0.5],
    )
    chex.clear_trace_counter()
    key = jax.random.key(5)
    result = sweeps.run(train_fn, configs, key=key, progress=False)
    member_key = jax.random.split(key, 1)[0]
    # Each reference is a fresh compile: check members 0000, 0101, 1010 and 1111 (grid
    # order): both values of every hyperparameter, low and high ones mixed.
    for i in (0, 5, 10, 15):
        lr, rate, decay, sigma = (
            float(configs[k][i])
            for k in ("learning_rate", "dropout_rate", "weight_decay", "noise_std")
        )
        # The reference rebuilds everything with the values written in.
        apply, params = functional(MLP((6, 16, 2), dropout_rate=rate, rngs=nnx.Rngs(0)))
        single = fit(
            apply,
            params,
            optax.chain(optax.adam(lr), transforms.decoupled_weight_decay(decay)),
            (x, y),
            key=member_key,
            num_epochs=3,
            batch_size=16,
            batch_transform=lambda k, b, s=sigma: {
                **b,
                "x": noise.gaussian_input_noise(k, b["x"], s),
            },
        )
        chex.assert_trees_all_close(
            _member(result.metrics["params"], i), single.params, rtol=2e-5, atol=2e-6
        )
    # The swept values matter: different dropout rates give different parameters.
    assert not np.allclose(
        result.metrics["params"]["layers"][0]["kernel"][0],
        result.metrics["params"]["layers"][0]["kernel"][4],
    )


def test_model_structure_does_not_depend_on_rate_values():
    def structure(**rates):
        params = from_nnx(MLP((4, 8, 8, 2), residual=True, rngs=nnx.Rngs(0), **rates)).params
        return jax.tree.structure(params)

    assert structure() == structure(dropout_rate=0.3, dropconnect_rate=0.2, drop_path_rate=0.1)


def test_hparams_rates_equal_a_model_built_with_the_rate():
    x = jax.random.normal(jax.random.key(1), (8, 4))
    base = from_nnx(MLP((4, 16, 16, 3), residual=True, rngs=nnx.Rngs(0)))
    built = from_nnx(
        MLP(
            (4, 16, 16, 3),
            residual=True,
            dropout_rate=0.3,
            dropconnect_rate=0.2,
            drop_path_rate=0.4,
            rngs=nnx.Rngs(0),
        )
    )
    hparams = {"dropout_rate": 0.3, "dropconnect_rate": 0.2, "drop_path_rate": 0.4}
    key = jax.random.key(2)
    via_hparams = base.apply(base.params, {}, x, key=key, train=True, hparams=hparams)[0]
    via_build = built.apply(built.params, {}, x, key=key, train=True)[0]
    np.testing.assert_allclose(via_hparams, via_build, rtol=1e-6)
    assert not np.allclose(via_hparams, base.apply(base.params, {}, x, key=key, train=True)[0])
    with pytest.raises(ValueError, match="dropout_rate"):
        base.apply(base.params, {}, x, key=key, train=True, hparams={"dropout_rate": 1.5})


def test_inject_hyperparams_values_are_set_from_hparams(problem):
    apply, params, x, y = problem
    kwargs = dict(key=jax.random.key(0), num_epochs=2, batch_size=32)
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=1.0)
    a = fit(apply, params, injected, (x, y), hparams={"learning_rate": 0.01}, **kwargs)
    b = fit(apply, params, optax.adam(0.01), (x, y), **kwargs)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)


def test_penalty_strength_and_transforms_read_hparams(problem):
    apply, params, x, y = problem

    def l2(p):
        return 0.5 * sum(jnp.sum(w**2) for w in jax.tree.leaves(p))

    kwargs = dict(key=jax.random.key(0), num_epochs=2, batch_size=32, penalty=l2)
    a = fit(apply, params, optax.sgd(0.1), (x, y), hparams={"penalty_strength": 0.1}, **kwargs)
    b = fit(apply, params, optax.sgd(0.1), (x, y), penalty_strength=0.1, **kwargs)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    smooth = batch_transforms.label_smoothing(2)
    c = fit(
        apply,
        params,
        optax.sgd(0.1),
        (x, y),
        hparams={"label_smoothing": 0.2},
        batch_transform=smooth,
        **kwargs,
    )
    soft = jnp.where(jax.nn.one_hot(y, 2) > 0, 0.8, 0.2)
    d = fit(apply, params, optax.sgd(0.1), (x, soft), **kwargs)  # same smoothing, written out
    chex.assert_trees_all_close(c.params, d.params, rtol=1e-5, atol=1e-6)


def test_a_penalty_gets_the_transformed_batch_and_a_key_of_its_own():
    """``penalty(params, *, batch, key)``: the objective equals the hand-written sum of the
    loss (the model's dropout key split off first) and the penalty on the minibatch after
    the batch transform, with the other half of the key."""
    model = from_nnx(MLP((6, 16, 2), dropout_rate=0.3, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (8, 6))
    batch = {"x": x, "y": jnp.arange(8) % 2, "weight": jnp.ones(8)}
    hparams = {"penalty_strength": 2.0}

    def shift(key, b):
        return {**b, "x": b["x"] + 1.0}

    @takes("batch", "key")
    def penalty(params, *, batch, key):
        return jnp.mean(batch["x"]) + jax.random.uniform(key)

    loop = TrainLoop(
        model.apply, optax.sgd(0.1), batch_size=8, penalty=penalty, batch_transform=shift
    )
    key = jax.random.key(5)
    value, _ = loop.objective(model.params, model.state, batch, key, hparams)
    _, rest = jax.random.split(key)  # the transform's key comes first
    model_key, penalty_key = jax.random.split(rest)
    logits, _ = model.apply(model.params, model.state, x + 1.0, key=model_key, train=True)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
    expected = loss + 2.0 * (jnp.mean(x + 1.0) + jax.random.uniform(penalty_key))
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    # A penalty that takes no key leaves the model's dropout key as it was.
    plain = TrainLoop(
        model.apply, optax.sgd(0.1), batch_size=8, penalty=lambda p: 0.0, batch_transform=shift
    )
    value, _ = plain.objective(model.params, model.state, batch, key, hparams)
    logits, _ = model.apply(model.params, model.state, x + 1.0, key=rest, train=True)
    expected = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_pure_loop_split_in_calls_equals_one_call(problem):
    _, _, x, y = problem
    model = from_nnx(MLP((6, 16, 2), dropout_rate=0.2, rngs=nnx.Rngs(0)))
    loop = TrainLoop(model.apply, optax.adam(1e-2), batch_size=32)
    data = loop_data((x, y), eval_data=(x, y))
    key = jax.random.key(9)
    start = loop.init(model.params, model.state)
    run = jax.jit(lambda s, n: loop.run(s, data, key=key, num_epochs=n), static_argnums=1)
    whole, history = run(start, 4)
    half, first = run(start, 2)
    rest, second = run(half, 2)
    chex.assert_trees_all_equal(whole.params, rest.params)
    np.testing.assert_array_equal(
        history["eval_loss"], np.concatenate([first["eval_loss"], second["eval_loss"]])
    )
    assert int(rest.epoch) == 4


def test_nan_learning_rate_is_raised_on_the_host_and_flagged_per_member(problem):
    apply, params, x, y = problem
    kwargs = dict(key=jax.random.key(0), num_epochs=3, batch_size=32)
    with pytest.raises(FloatingPointError, match="epoch 0"):
        fit(apply, params, optax.sgd(jnp.nan), (x, y), **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(
            apply,
            params,
            optax.sgd(jnp.nan),
            (x, y),
            host=HostOptions(on_nonfinite="warn"),
            **kwargs,
        )
    assert any("non-finite" in str(w.message) for w in caught)
    assert bool(result.failed) and int(result.nonfinite_epoch) == 0

    def train(lr):
        result = fit(apply, params, optax.sgd(lr), (x, y), **kwargs)
        return result.nonfinite_epoch, result.params

    epochs, swept = jax.jit(jax.vmap(train))(jnp.array([0.1, jnp.nan, 1e6]))
    assert int(epochs[0]) == -1 and int(epochs[1]) == 0 and int(epochs[2]) >= 0
    healthy = fit(apply, params, optax.sgd(0.1), (x, y), **kwargs)
    chex.assert_trees_all_close(_member(swept, 0), healthy.params, rtol=1e-5, atol=1e-6)


def test_bad_labels_and_eval_data_name_the_argument(problem):
    apply, params, x, y = problem
    kwargs = dict(key=jax.random.key(0), num_epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="train labels"):
        fit(apply, params, optax.sgd(0.1), (x, y + 2), **kwargs)
    with pytest.raises(ValueError, match="train labels"):
        fit(apply, params, optax.sgd(0.1), (x, y - 1), **kwargs)
    with pytest.raises(ValueError, match="eval_data labels"):
        fit(apply, params, optax.sgd(0.1), (x, y), eval_data=(x, y + 5), **kwargs)
    with pytest.raises(ValueError, match="eval_data"):
        fit(apply, params, optax.sgd(0.1), (x, y), eval_data=(x,), **kwargs)
    with pytest.raises(ValueError, match="eval_data"):
        fit(apply, params, optax.sgd(0.1), (x, y), eval_data=x, **kwargs)
    with pytest.raises(ValueError, match=r"early_stopping\.monitor"):
        fit(
            apply,
            params,
            optax.sgd(0.1),
            (x, y),
            early_stopping=EarlyStopping(1, monitor="eval_los"),
            eval_data=(x, y),
            **kwargs,
        )
    with pytest.raises(ValueError, match="hparams"):
        fit(apply, params, optax.sgd(0.1), (x, y), hparams={"lr": [0.1, 0.2]}, **kwargs)
    with pytest.raises(TypeError, match="optimizer"):
        fit(apply, params, "adam", (x, y), **kwargs)


def test_batch_transforms_read_their_strength_from_hparams_under_vmap():
    from jaxreg.augment import mix, signal

    key = jax.random.key(0)
    batch = {
        "x": jax.random.normal(jax.random.key(1), (8, 40)),
        "y": jnp.arange(8) % 3,
        "weight": jnp.ones(8),
    }
    mixer = batch_transforms.mixup(num_classes=3)
    augmenter = batch_transforms.augmentation(signal.mnist1d_pipeline)
    alphas, strengths = jnp.array([0.2, 1.0]), jnp.array([0.0, 1.0])
    # Jitted throughout: op-by-op dispatch of the augmentation pipeline costs ~20 s on CPU.
    mixed = jax.jit(jax.vmap(lambda a: mixer(key, batch, hparams={"mixup_alpha": a})))(alphas)
    augmented = jax.jit(jax.vmap(lambda s: augmenter(key, batch, hparams={"augment_strength": s})))(
        strengths
    )
    mixup = jax.jit(
        lambda a: mix.mixup(key, batch["x"], batch["y"], a, num_classes=3, weight=batch["weight"])
    )
    augment = jax.jit(lambda s: signal.mnist1d_pipeline(s)(key, batch["x"]))
    for i in range(2):
        x, y = mixup(alphas[i])
        np.testing.assert_allclose(mixed["x"][i], x, rtol=1e-6)
        np.testing.assert_allclose(mixed["y"][i], y, rtol=1e-6)
        direct = augment(strengths[i])
        np.testing.assert_allclose(augmented["x"][i], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(augmented["x"][0], batch["x"], atol=1e-6)  # strength 0: identity
    with pytest.raises(KeyError, match="mixup_alpha"):
        mixer(key, batch, hparams={})


def test_callables_get_exactly_the_keywords_they_declare(problem):
    """No signature probing: a penalty gets hparams only when it declares them, and a
    declaration the loop cannot honour is refused before training."""
    from jaxreg import penalties

    apply, params, x, y = problem
    seen = {}

    @takes("hparams")
    def declared(params, *, hparams):
        seen["declared"] = sorted(hparams)
        return penalties.l2(params)

    def plain(params, **unexpected):  # would accept anything; gets params only
        seen["plain"] = sorted(unexpected)
        return penalties.l2(params)

    kwargs = dict(key=jax.random.key(0), num_epochs=1, batch_size=32)
    hparams = {"penalty_strength": 0.1}
    for penalty in (declared, plain):
        fit(apply, params, optax.sgd(0.1), (x, y), penalty=penalty, hparams=hparams, **kwargs)
    assert seen == {"declared": ["penalty_strength"], "plain": []}
    transform = takes("batch")(lambda key, batch, *, batch_again: batch)
    with pytest.raises(ValueError, match=r"batch_transform declares \['batch'\]"):
        fit(apply, params, optax.sgd(0.1), (x, y), batch_transform=transform, **kwargs)
    with pytest.raises(ValueError, match="unknown keyword"):
        takes("hparam")
