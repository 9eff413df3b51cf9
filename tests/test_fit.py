import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit
from jaxreg.losses import classification_loss
from jaxreg.nn import CNN1D, MLP, functional
from jaxreg.training import HostOptions, evaluate


@pytest.fixture(scope="module")
def small_problem():
    x = jax.random.normal(jax.random.key(0), (120, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    apply, params = functional(MLP((6, 16, 2), rngs=nnx.Rngs(0)))
    return apply, params, x, y


def test_mlp_overfits_mnist1d(mnist1d_data):
    """The picture the toolkit exists for: ~100% train, 50-72% test."""
    x_train, y_train, x_test, y_test = mnist1d_data
    apply, params = functional(MLP((40, 100, 100, 10), rngs=nnx.Rngs(0)))
    result = fit(
        apply,
        params,
        optax.adam(1e-3),
        (x_train, y_train),
        key=jax.random.key(0),
        num_epochs=100,
        batch_size=100,
        eval_data=(x_test, y_test),
    )
    train_acc = float(result.history["train_accuracy"][-1])
    test_acc = float(result.history["eval_accuracy"][-1])
    print(f"MLP: train {train_acc:.4f}, test {test_acc:.4f}")
    assert train_acc >= 0.99
    assert 0.50 <= test_acc <= 0.72
    # The history's last entry is a real evaluation of the final parameters.
    final = evaluate(apply, result.params, x_test, y_test)
    np.testing.assert_allclose(final["accuracy"], test_acc, atol=1e-6)


def test_cnn1d_generalizes_on_mnist1d(mnist1d_data):
    x_train, y_train, x_test, y_test = mnist1d_data
    apply, params = functional(CNN1D(rngs=nnx.Rngs(0)))
    result = fit(
        apply,
        params,
        optax.adam(1e-2),
        (x_train, y_train),
        key=jax.random.key(0),
        num_epochs=50,
        batch_size=100,
        eval_data=(x_test, y_test),
    )
    test_acc = float(result.history["eval_accuracy"][-1])
    print(f"CNN1D: test {test_acc:.4f}")
    assert test_acc >= 0.90


def test_vmap_over_learning_rates_compiles_once_and_matches_separate_runs(small_problem):
    apply, params, x, y = small_problem
    learning_rates = jnp.array([1e-3, 3e-3, 1e-2, 3e-2])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train(lr):
        result = fit(
            apply,
            params,
            optax.adam(lr),
            (x, y),
            key=jax.random.key(3),
            num_epochs=5,
            batch_size=32,
        )
        return result.params, result.history

    swept_params, swept_history = jax.vmap(train)(learning_rates)
    train(learning_rates[0])  # a second shape-identical call must not retrace either
    for i, lr in enumerate(learning_rates.tolist()):
        single = fit(
            apply,
            params,
            optax.adam(lr),
            (x, y),
            key=jax.random.key(3),
            num_epochs=5,
            batch_size=32,
        )
        member = jax.tree.map(lambda a, i=i: a[i], swept_params)
        chex.assert_trees_all_close(member, single.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], swept_history), single.history, rtol=1e-5, atol=1e-6
        )


def test_same_key_gives_a_bitwise_identical_run_however_chunked(small_problem):
    apply, params, x, y = small_problem
    kwargs = dict(key=jax.random.key(7), num_epochs=6, batch_size=25, eval_data=(x, y))
    a = fit(apply, params, optax.sgd(0.1), (x, y), **kwargs)
    b = fit(apply, params, optax.sgd(0.1), (x, y), **kwargs)
    c = fit(apply, params, optax.sgd(0.1), (x, y), host=HostOptions(epochs_per_chunk=4), **kwargs)
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal(a.history, b.history)
    chex.assert_trees_all_equal(a.params, c.params)
    chex.assert_trees_all_equal(a.history, c.history)
    d = fit(apply, params, optax.sgd(0.1), (x, y), **{**kwargs, "key": jax.random.key(8)})
    assert not np.array_equal(a.params["layers"][0]["kernel"], d.params["layers"][0]["kernel"])


def test_full_batch_gradient_descent_matches_a_plain_loop(small_problem):
    """One batch per epoch and SGD: fit must equal w <- w - lr * grad(mean loss + penalty)."""
    apply, params, x, y = small_problem
    strength = 0.01

    def penalty(p):
        return 0.5 * sum(jnp.sum(w**2) for w in jax.tree.leaves(p))

    result = fit(
        apply,
        params,
        optax.sgd(0.5),
        (x, y),
        key=jax.random.key(0),
        num_epochs=4,
        batch_size=len(y),
        penalty=penalty,
        penalty_strength=strength,
    )
    loss_fn = classification_loss(apply)
    reference = params
    for _ in range(4):
        grads = jax.grad(lambda p: loss_fn(p, {"x": x, "y": y}) + strength * penalty(p))(reference)
        reference = jax.tree.map(lambda w, g: w - 0.5 * g, reference, grads)
    chex.assert_trees_all_close(result.params, reference, rtol=1e-5, atol=1e-6)


def test_padded_last_batch_counts_each_example_once(small_problem):
    """Eval metrics with a ragged eval batch size equal the metrics in one batch."""
    apply, params, x, y = small_problem
    ragged = evaluate(apply, params, x, y, batch_size=50)
    whole = evaluate(apply, params, x, y, batch_size=len(y))
    chex.assert_trees_all_close(ragged, whole, rtol=1e-6)


def test_progress_bar_runs_from_the_host(small_problem, capsys):
    apply, params, x, y = small_problem
    result = fit(
        apply,
        params,
        optax.adam(1e-2),
        (x, y),
        key=jax.random.key(0),
        num_epochs=3,
        batch_size=40,
        host=HostOptions(progress=True),
    )
    assert result.history["train_accuracy"].shape == (3,)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 1000}, ValueError, "batch_size"),
        ({"num_epochs": 0}, ValueError, "num_epochs"),
        ({"penalty_strength": -1.0}, ValueError, "penalty_strength"),
        ({"optimizer": "adam"}, TypeError, "optimizer"),
        ({"host": {"progress": True}}, TypeError, "host must be"),
        ({"progres": True}, TypeError, "progres"),
        ({"host": HostOptions(), "progress": True}, TypeError, "not both"),
        ({"epochs_per_chunk": 0}, ValueError, "epochs_per_chunk"),
        ({"on_nonfinite": "skip"}, ValueError, "on_nonfinite"),
        ({"train": (np.ones((10, 6)), np.ones(9, np.int32))}, ValueError, "same length"),
    ],
)
def test_fit_bad_input(small_problem, overrides, error, match):
    apply, params, x, y = small_problem
    kwargs = dict(
        optimizer=optax.sgd(0.1), train=(x, y), key=jax.random.key(0), num_epochs=1, batch_size=10
    )
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        fit(apply, params, **kwargs)


def test_batch_transform_sees_every_training_batch_with_its_own_key(small_problem):
    """Label smoothing through batch_transform equals training on pre-smoothed soft labels."""
    from jaxreg import labels

    apply, params, x, y = small_problem
    common = dict(key=jax.random.key(0), num_epochs=3, batch_size=len(y))
    smoothed = fit(
        apply,
        params,
        optax.sgd(0.5),
        (x, y),
        batch_transform=lambda k, b: {**b, "y": labels.smooth(b["y"], 2, 0.2)},
        **common,
    )
    presmoothed = fit(apply, params, optax.sgd(0.5), (x, labels.smooth(y, 2, 0.2)), **common)
    chex.assert_trees_all_close(smoothed.params, presmoothed.params, rtol=1e-6, atol=1e-7)
    seen = []

    def record(k, b):
        jax.debug.callback(
            lambda key_data: seen.append(np.asarray(key_data)), jax.random.key_data(k)
        )
        return b

    fit(
        apply,
        params,
        optax.sgd(0.1),
        (x, y),
        key=jax.random.key(0),
        num_epochs=2,
        batch_size=40,
        batch_transform=record,
    )
    assert len(seen) == 6 and len({s.tobytes() for s in seen}) == 6


def test_per_example_weights_match_a_weighted_plain_loop(small_problem):
    apply, params, x, y = small_problem
    weight = jnp.asarray(np.random.default_rng(0).integers(0, 3, len(y)), jnp.float32)
    result = fit(
        apply,
        params,
        optax.sgd(0.5),
        (x, y, weight),
        key=jax.random.key(0),
        num_epochs=3,
        batch_size=len(y),
    )

    def weighted_loss(p):
        from jaxreg.losses import softmax_cross_entropy

        return jnp.sum(weight * softmax_cross_entropy(apply(p, x), y)) / jnp.sum(weight)

    reference = params
    for _ in range(3):
        grads = jax.grad(weighted_loss)(reference)
        reference = jax.tree.map(lambda w, g: w - 0.5 * g, reference, grads)
    chex.assert_trees_all_close(result.params, reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        fit(
            apply,
            params,
            optax.sgd(0.5),
            (x, y, weight[:-1]),
            key=jax.random.key(0),
            num_epochs=1,
            batch_size=10,
        )


def test_ragged_weighted_minibatches_match_a_plain_loop(small_problem):
    """SGD on shuffled minibatches of 7 (the last one short) with per-example weights: each step
    is the weighted mean loss of the real examples in that minibatch. The reference slices the
    epoch's permutation itself (the documented key scheme: ``split(fold_in(key, epoch))[0]``)."""
    from jaxreg.losses import softmax_cross_entropy

    apply, params, x, y = small_problem
    n, size, lr = len(y), 7, 0.3
    assert n % size != 0
    weight = jnp.asarray(np.random.default_rng(1).integers(0, 3, n), jnp.float32)
    key = jax.random.key(4)
    result = fit(
        apply, params, optax.sgd(lr), (x, y, weight), key=key, num_epochs=2, batch_size=size
    )
    reference = params
    for epoch in range(2):
        shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
        order = np.asarray(jax.random.permutation(shuffle_key, n))
        for start in range(0, n, size):
            rows = order[start : start + size]
            xb, yb, wb = x[rows], y[rows], weight[rows]
            if float(jnp.sum(wb)) == 0.0:
                continue  # a batch of zero weight contributes no step direction

            def loss(p, xb=xb, yb=yb, wb=wb):
                return jnp.sum(wb * softmax_cross_entropy(apply(p, xb), yb)) / jnp.sum(wb)

            grads = jax.grad(loss)(reference)
            reference = jax.tree.map(lambda w, g: w - lr * g, reference, grads)
    chex.assert_trees_all_close(result.params, reference, rtol=1e-4, atol=1e-5)
