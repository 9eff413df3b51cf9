"""The gallery's stock models (experiments/gallery.py): each trains, sweeps with one compile
(members equal separate runs with the values written in), and is analysed (Lanczos and
Hutch++ against a dense Hessian) and ensembled, unchanged."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jaxreg
from experiments.gallery import GALLERY, task_data
from jaxreg.losses import classification_loss

N = 64


def _optimizer(hparams):
    # SGD: a bias before BatchNorm has a roundoff-only gradient that Adam would amplify.
    return optax.chain(
        optax.sgd(hparams.get("learning_rate", 0.05)),
        jaxreg.transforms.decoupled_weight_decay(hparams["weight_decay"]),
    )


def _values(entry):
    return [0.02, 0.05] if entry.swept == "learning_rate" else [0.0, 0.3]


@pytest.fixture(scope="module", params=sorted(GALLERY))
def trained(request):
    """One sweep per model: swept strength × weight decay, 2 epochs on N examples."""
    entry = GALLERY[request.param]
    (x, y), _, _ = task_data(entry, quick=True)
    x, y = jnp.asarray(x[:N]), jnp.asarray(y[:N])
    model = entry.build(jax.random.key(0), True, None)

    @chex.assert_max_traces(n=1)
    def train_fn(config, key):
        result = jaxreg.fit(model, model.params, _optimizer, (x, y), key=key, hparams=config,
                            num_epochs=2, batch_size=32)  # fmt: skip
        return {"params": result.params, "state": result.model_state}

    chex.clear_trace_counter()
    configs = jaxreg.sweeps.grid(**{entry.swept: _values(entry), "weight_decay": [0.0, 1e-2]})
    key = jax.random.key(2)
    sweep = jaxreg.sweeps.run(train_fn, configs, key=key, progress=False)
    return request.param, entry, model, (x, y), configs, sweep, jax.random.split(key, 1)[0]


def test_a_member_equals_the_separate_run_with_its_values_written_in(trained):
    name, entry, _, (x, y), configs, sweep, member_key = trained
    last = len(configs["weight_decay"]) - 1
    values = {k: float(v[last]) for k, v in configs.items()}
    rate = values.get("dropout_rate")
    reference = entry.build(jax.random.key(0), True, rate)  # the stock layers carry the rate
    single = jaxreg.fit(reference, reference.params, _optimizer(values), (x, y),
                        key=member_key, num_epochs=2, batch_size=32)  # fmt: skip
    member = jax.tree.map(lambda a: a[last], sweep.metrics["params"])
    chex.assert_trees_all_close(member, single.params, rtol=2e-5, atol=2e-6)
    first = jax.tree.map(lambda a: a[0], sweep.metrics["params"])
    assert not all(jax.tree.leaves(jax.tree.map(np.allclose, first, member))), name


# The dense Hessians of the attention, residual, Equinox and GRU models take up to a minute on
# two cores: they run with -m slow; the default run keeps the NNX CNN (conv, BatchNorm).
HEAVY = {"transformer", "linen_resnet", "equinox_cnn", "gru"}
CURVATURE = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(GALLERY)]


@pytest.mark.parametrize("trained", CURVATURE, indirect=True)
def test_top_eigenvalues_and_trace_match_a_dense_hessian(trained):
    _, _, model, (x, y), _, sweep, _ = trained
    params, state = jax.tree.map(lambda a: a[0], (sweep.metrics["params"], sweep.metrics["state"]))
    loss_fn = classification_loss(model.bind(state))
    data = jaxreg.data.batches(x[:16], y[:16], 8)
    flat, unravel = ravel_pytree(params)
    full = {k: v.reshape(-1, *v.shape[2:]) for k, v in data.items()}
    dense = jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), full)))(flat)
    exact = np.linalg.eigvalsh(np.asarray(dense, np.float64))[::-1]
    top, _, _ = jaxreg.sharpness.top_eigenvalues(loss_fn, params, data, key=jax.random.key(0), k=2)
    np.testing.assert_allclose(top, exact[:2], rtol=2e-3, atol=1e-5)
    trace, se = jaxreg.sharpness.hessian_trace(
        loss_fn, params, data, key=jax.random.key(1), num_samples=60
    )
    assert abs(float(trace) - np.trace(dense)) <= 4 * float(se) + 1e-3 * abs(np.trace(dense))


def test_an_ensemble_of_members_predicts_the_mean_of_their_probabilities(trained):
    _, _, model, (x, _), _, sweep, _ = trained
    params, state = sweep.metrics["params"], sweep.metrics["state"]
    predicted = jaxreg.ensembles.predict(model, params, x, stacked_state=state)
    members = len(jax.tree.leaves(params)[0])
    each = [
        jax.nn.softmax(model.bind(jax.tree.map(lambda a, i=i: a[i], state))(
            jax.tree.map(lambda a, i=i: a[i], params), x))
        for i in range(members)
    ]  # fmt: skip
    np.testing.assert_allclose(predicted, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)


def test_the_gallery_script_sweeps_chooses_on_validation_and_reads_test_once(tmp_path):
    import json

    from experiments.gallery import main

    assert main(["--quick", "--only", "equinox_cnn", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gallery.json").read_text())["equinox_cnn"]
    assert result["configs"] == 4 and set(result["chosen"]) == {"dropout_rate", "weight_decay"}
    # Three epochs of the quick run: above chance (0.1), not converged.
    assert 0.2 < result["test_accuracy"] <= 1.0 and 0.2 < result["val_accuracy"] <= 1.0
