"""Models with non-parameter state (BatchNorm) against a hand-written NNX + optax loop.

The reference is NNX's own stateful training step (``nnx.Optimizer`` and
``nnx.value_and_grad`` on the module, which updates the running statistics in
place), independent of jaxreg's functional bridge.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import data, fit, masks, penalties, sharpness
from jaxreg.losses import classification_loss
from jaxreg.nn import ResNet1D, ResNet20, count_params, from_nnx, init_model
from jaxreg.training import EarlyStopping, evaluate


class _BNNet(nnx.Module):
    """Tiny Linear → BatchNorm → ReLU → Linear, small enough for a dense Hessian."""

    call_keywords = ("train", "rngs")

    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 5, rngs=rngs)
        self.norm = nnx.BatchNorm(5, momentum=0.8, rngs=rngs)
        self.head = nnx.Linear(5, 2, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        h = self.norm(self.hidden(x), use_running_average=not train)
        return self.head(jax.nn.relu(h))


@pytest.fixture(scope="module")
def toy():
    x = jax.random.normal(jax.random.key(0), (48, 3)) * 2.0 + 1.0
    y = (x[:, 0] * x[:, 1] > 1.0).astype(jnp.int32)
    return x, y


def _reference_nnx_loop(make, x, y, *, key, epochs, batch_size, tx):
    """The loop an NNX user writes: module state mutates in place, optax via nnx.Optimizer."""
    module = make()
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)

    def loss_fn(m, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(m(xb, train=True), yb).mean()

    for epoch in range(epochs):
        # jaxreg's documented shuffle: epoch e uses split(fold_in(key, e))[0].
        shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
        order = np.asarray(jax.random.permutation(shuffle_key, len(y)))
        for start in range(0, len(y) - batch_size + 1, batch_size):  # drops the remainder
            index = order[start : start + batch_size]
            _, grads = nnx.value_and_grad(loss_fn)(module, x[index], y[index])
            optimizer.update(module, grads)
    return module


def test_batchnorm_model_trained_by_fit_equals_a_hand_written_nnx_loop(toy):
    x, y = toy
    make = lambda: _BNNet(nnx.Rngs(0))  # noqa: E731
    key = jax.random.key(4)
    tx = optax.sgd(0.05, momentum=0.9)
    model = from_nnx(make())
    assert set(model.state["norm"]) == {"mean", "var"}
    # 48 examples in batches of 20: two steps per epoch, 8 examples dropped per epoch.
    result = fit(model, model.params, tx, (x, y), key=key, num_epochs=4, batch_size=20)
    reference = _reference_nnx_loop(make, x, y, key=key, epochs=4, batch_size=20, tx=tx)
    chex.assert_trees_all_close(
        result.params, nnx.to_pure_dict(nnx.state(reference, nnx.Param)), rtol=1e-5, atol=1e-6
    )
    reference_stats = nnx.to_pure_dict(nnx.state(reference, nnx.BatchStat))
    chex.assert_trees_all_close(result.model_state, reference_stats, rtol=1e-5, atol=1e-6)
    assert not np.allclose(result.model_state["norm"]["mean"], 0.0)  # statistics moved

    # Eval mode uses the running statistics, as the module does.
    logits = np.asarray(reference(x, train=False))
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    measured = evaluate(model, result.params, x, y, state=result.model_state)
    np.testing.assert_allclose(measured["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(measured["accuracy"], np.mean(logits.argmax(1) == np.asarray(y)))
    np.testing.assert_allclose(result.history["train_loss"][-1], expected_loss, rtol=1e-5)


def test_state_is_never_differentiated_penalized_masked_or_perturbed(toy):
    x, y = toy
    model = from_nnx(_BNNet(nnx.Rngs(0)))
    stats = {"norm": {"mean": jnp.full(5, 0.5), "var": jnp.full(5, 2.0)}}
    names = {
        "/".join(str(k.key) for k in path) for path, _ in jax.tree.leaves_with_path(model.params)
    }
    assert not any(name.endswith(("mean", "var")) for name in names)
    module = _BNNet(nnx.Rngs(0))
    params_only = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    expected = 0.5 * sum(
        np.sum(np.square(w, dtype=np.float64)) for w in jax.tree.leaves(params_only)
    )
    np.testing.assert_allclose(penalties.l2(model.params), expected, rtol=1e-6)
    selected = masks.resolve(masks.weights_only, model.params)
    assert jax.tree.structure(selected) == jax.tree.structure(model.params)

    # Curvature in eval mode with the running statistics bound: the dense Hessian
    # of that loss with respect to the parameters only.
    loss_fn = classification_loss(model.bind(stats))
    batches = data.batches(x, y, 16)
    flat, unravel = jax.flatten_util.ravel_pytree(model.params)

    def dataset_loss(vector):  # one batch holding every example: the exact dataset mean
        return loss_fn(unravel(vector), {"x": x, "y": y})

    dense = np.asarray(jax.jit(jax.hessian(dataset_loss))(flat), np.float64)
    exact = np.linalg.eigvalsh(0.5 * (dense + dense.T))[::-1][:2]
    top, _, _ = sharpness.top_eigenvalues(
        loss_fn, model.params, batches, key=jax.random.key(0), k=2, num_iters=40
    )
    np.testing.assert_allclose(top, exact, rtol=2e-3, atol=1e-4)
    # Sharpness perturbs params only: the bound statistics are used unchanged.
    sam = sharpness.sam_sharpness(loss_fn, model.params, batches, 0.05)
    assert np.isfinite(float(sam)) and float(sam) >= 0.0


def test_early_stopping_restores_the_statistics_of_the_best_epoch(toy):
    x, y = toy
    model = from_nnx(_BNNet(nnx.Rngs(0)))
    kwargs = dict(key=jax.random.key(1), batch_size=16, eval_data=(x[:16], y[:16]))
    stopped = fit(
        model,
        model.params,
        optax.adam(0.3),
        (x, y),
        num_epochs=12,
        early_stopping=EarlyStopping(2, monitor="eval_loss"),
        **kwargs,
    )
    best = int(stopped.early_stopping.best_step)
    assert best < len(stopped.history["eval_loss"]) - 1, "the test needs a run that overshoots"
    plain = fit(model, model.params, optax.adam(0.3), (x, y), num_epochs=best + 1, **kwargs)
    chex.assert_trees_all_close(stopped.params, plain.params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(stopped.model_state, plain.model_state, rtol=1e-6, atol=1e-7)


def test_batchnorm_run_resumes_bitwise_from_a_checkpoint(toy, tmp_path):
    x, y = toy
    model = from_nnx(_BNNet(nnx.Rngs(0)))
    # The 0.2 keyword form of the host options (epochs_per_chunk=, checkpoint_dir=) still works.
    kwargs = dict(key=jax.random.key(2), batch_size=16, epochs_per_chunk=2)
    whole = fit(model, model.params, optax.adam(0.01), (x, y), num_epochs=6, **kwargs)
    fit(
        model,
        model.params,
        optax.adam(0.01),
        (x, y),
        num_epochs=4,
        checkpoint_dir=tmp_path,
        **kwargs,
    )
    resumed = fit(
        model,
        model.params,
        optax.adam(0.01),
        (x, y),
        num_epochs=6,
        checkpoint_dir=tmp_path,
        **kwargs,
    )
    chex.assert_trees_all_equal(whole.params, resumed.params)
    chex.assert_trees_all_equal(whole.model_state, resumed.model_state)
    chex.assert_trees_all_equal(whole.history, resumed.history)


def test_vmapped_members_keep_their_own_statistics(toy):
    x, y = toy
    model = init_model(lambda rngs: _BNNet(rngs), jax.random.split(jax.random.key(0), 3))

    def train(params, state, lr):
        result = fit(
            model,
            params,
            optax.sgd(lr),
            (x, y),
            state=state,
            key=jax.random.key(3),
            num_epochs=2,
            batch_size=16,
        )
        return result.params, result.model_state

    lrs = jnp.array([0.01, 0.1, 0.3])
    _, swept_state = jax.jit(jax.vmap(train))(model.params, model.state, lrs)
    for i in range(3):
        member = jax.tree.map(lambda a, i=i: a[i], (model.params, model.state))
        single = fit(
            model,
            member[0],
            optax.sgd(float(lrs[i])),
            (x, y),
            state=member[1],
            key=jax.random.key(3),
            num_epochs=2,
            batch_size=16,
        )
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], swept_state), single.model_state, rtol=1e-5
        )


def test_resnets_have_the_published_shapes_and_train():
    resnet20 = from_nnx(ResNet20(rngs=nnx.Rngs(0)))
    # Counted by hand: stem 432 + 32, stage 1: 3·(2·2304 + 64), stage 2: 14,528 + 2·18,560,
    # stage 3: 57,728 + 2·73,984 (1×1 projections at the widening blocks), head 650.
    assert count_params(resnet20.params) == 272_474  # He et al.: 0.27 M
    means = [p for p, _ in jax.tree.leaves_with_path(resnet20.state) if p[-1].key == "mean"]
    assert len(means) == 1 + 3 * 3 * 2 + 2  # stem, two per block, two projections
    logits, new_state = jax.jit(lambda p, s, x: resnet20.apply(p, s, x, train=True))(
        resnet20.params, resnet20.state, jnp.ones((2, 32, 32, 3))
    )
    assert logits.shape == (2, 10)
    assert jax.tree.structure(new_state) == jax.tree.structure(resnet20.state)
    with pytest.raises(ValueError, match="depth"):
        ResNet20(depth=21, rngs=nnx.Rngs(0))

    x = jax.random.normal(jax.random.key(0), (128, 40))
    y = (jnp.sum(x[:, :20], axis=1) > 0).astype(jnp.int32)
    model = from_nnx(ResNet1D(widths=(8, 16), rngs=nnx.Rngs(0)))
    result = fit(
        model,
        model.params,
        optax.adam(1e-2),
        (x, y),
        key=jax.random.key(0),
        num_epochs=15,
        batch_size=32,
    )
    assert float(result.history["train_accuracy"][-1]) > 0.9


def test_ensemble_members_predict_with_their_own_statistics(toy):
    from jaxreg import ensembles

    x, _ = toy
    model = init_model(lambda rngs: _BNNet(rngs), jax.random.split(jax.random.key(0), 2))
    states = jax.tree.map(
        lambda a: a + jnp.arange(2.0).reshape((2,) + (1,) * (a.ndim - 1)), model.state
    )
    probs = ensembles.predict(model, model.params, x, stacked_state=states)
    expected = np.mean(
        [
            jax.nn.softmax(
                model.apply(
                    jax.tree.map(lambda a, i=i: a[i], model.params),
                    jax.tree.map(lambda a, i=i: a[i], states),
                    x,
                )[0]
            )
            for i in range(2)
        ],
        axis=0,
    )
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
