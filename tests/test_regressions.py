"""Regression tests for failures found off the straight path (jit, float64, padded data).

Each test reproduces a reported failure of jaxreg 0.1 and checks the fixed
behaviour against an independent reference.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreg import data, evaluate, fit, penalties, prox, sharpness
from jaxreg.augment import mix
from jaxreg.losses import classification_loss


def _linear(params, x, **_):
    return x @ params["w"] + params["b"]


@pytest.fixture(scope="module")
def padded():
    """10 examples in batches of 4: the last batch holds 2 real rows and 2 padding rows."""
    x = jax.random.normal(jax.random.key(0), (10, 3))
    y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    params = {
        "w": jax.random.normal(jax.random.key(1), (3, 3)) * 0.5,
        "b": jnp.zeros(3),
    }
    return x, y, params


def test_m_sharpness_ignores_padding_and_weights_partial_chunks(padded):
    x, y, params = padded
    loss_fn = classification_loss(_linear)
    batches = data.batches(x, y, 4)  # sub-batches of m=2: the last one is all padding
    value = sharpness.sam_sharpness(loss_fn, params, batches, 0.05, m=2)
    assert np.isfinite(float(value))
    # Reference: the plain mean over the five real pairs, each with its own perturbation.
    pairs = [
        sharpness.sam_sharpness(loss_fn, params, data.batches(x[i : i + 2], y[i : i + 2], 2), 0.05)
        for i in range(0, 10, 2)
    ]
    np.testing.assert_allclose(value, np.mean(pairs), rtol=1e-5)


def test_pac_bayes_flatness_runs_in_float64(padded):
    x, y, params = padded
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        batches = data.batches(jnp.asarray(x, jnp.float64), y, 5)
        sigma = sharpness.pac_bayes_flatness(
            classification_loss(_linear), params64, batches, key=jax.random.key(0), target=0.05
        )
        assert sigma.dtype == jnp.float64
        assert 0.0 < float(sigma) < 1.0


def test_gauss_newton_vp_ignores_a_batch_of_zero_weight(padded):
    x, y, params = padded
    weight = jnp.concatenate([jnp.ones(8), jnp.zeros(2)])  # the third batch of 4 gets weight 0
    with_empty = data.batches(x, y, 4, weight=weight)
    without = data.batches(x[:8], y[:8], 4)
    v = jax.tree.map(jnp.ones_like, params)
    got = sharpness.gauss_newton_vp(_linear, params, with_empty)(v)
    expected = sharpness.gauss_newton_vp(_linear, params, without)(v)
    chex.assert_tree_all_finite(got)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-7)


def test_group_lasso_gradient_at_an_all_zero_group_is_zero_not_nan():
    kernel = jnp.array([[0.0, 3.0], [0.0, 4.0]])  # column 0 is an all-zero group
    grads = jax.grad(lambda w: penalties.group_lasso({"w": w}))(kernel)
    np.testing.assert_allclose(grads, [[0.0, 0.6], [0.0, 0.8]], atol=1e-7)
    # The group produced by the proximal step is exactly such a group.
    shrunk = prox.group_lasso({"w": jnp.array([[0.1, 3.0], [0.1, 4.0]])}, 1.0)
    chex.assert_tree_all_finite(jax.grad(penalties.group_lasso)(shrunk))


def test_block_top_eigenvalues_can_be_jitted(padded):
    x, y, params = padded
    loss_fn = classification_loss(_linear)
    batches = data.batches(x, y, 5)
    eager = sharpness.block_top_eigenvalues(loss_fn, params, batches, key=jax.random.key(0))
    jitted = jax.jit(
        lambda p: sharpness.block_top_eigenvalues(loss_fn, p, batches, key=jax.random.key(0))
    )(params)
    chex.assert_trees_all_close(jitted, eager, rtol=1e-5)


def test_top_eigenvalues_refuses_more_eigenvalues_than_iterations(padded):
    x, y, params = padded
    batches = data.batches(x, y, 5)
    with pytest.raises(ValueError, match="num_iters"):
        sharpness.top_eigenvalues(
            classification_loss(_linear), params, batches, key=jax.random.key(0), k=4, num_iters=2
        )


def test_mixup_and_cutmix_with_alpha_zero_do_not_mix():
    key = jax.random.key(0)
    x = jax.random.normal(key, (6, 4))
    y = jnp.arange(6) % 3
    mixed, soft = mix.mixup(key, x, y, 0.0, num_classes=3)
    np.testing.assert_allclose(mixed, x)
    np.testing.assert_allclose(soft, jax.nn.one_hot(y, 3))
    images = jax.random.normal(key, (6, 8, 8, 1))
    cut, soft = mix.cutmix(key, images, y, 0.0, num_classes=3)
    chex.assert_tree_all_finite((cut, soft))
    np.testing.assert_allclose(soft, jax.nn.one_hot(y, 3))


def test_mixup_never_mixes_padding_or_out_of_bag_rows():
    x = jnp.eye(8)  # row i is e_i, so a mixed row reveals its partner
    y = jnp.arange(8) % 2
    weight = jnp.array([1.0, 2.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])  # rows 2, 5, 7 weigh nothing
    valid = np.asarray(weight) > 0
    for seed in range(20):
        mixed, _ = mix.mixup(jax.random.key(seed), x, y, 1.0, num_classes=2, weight=weight)
        mixed = np.asarray(mixed)
        np.testing.assert_allclose(mixed[~valid], np.eye(8)[~valid])  # padding untouched
        used = np.abs(mixed[valid]) > 1e-6  # which rows each valid row drew from
        assert not used[:, ~valid].any(), f"seed {seed}: a real row mixed with padding"
        np.testing.assert_allclose(mixed[valid].sum(1), 1.0, rtol=1e-6)


def test_a_zero_weight_batch_contributes_nothing_to_a_dataset_mean():
    batches = {
        "x": jnp.array([[1.0, 3.0], [5.0, 7.0]]),
        "weight": jnp.array([[1.0, 1.0], [0.0, 0.0]]),
    }

    def batch_mean(batch):
        return jnp.sum(batch["x"] * batch["weight"]) / jnp.sum(batch["weight"])  # NaN when empty

    np.testing.assert_allclose(data.mean_over_batches(batch_mean, batches), 2.0)
    empty = {**batches, "weight": jnp.zeros((2, 2))}
    np.testing.assert_allclose(data.mean_over_batches(batch_mean, empty), 0.0)


def test_evaluate_and_fit_name_bad_eval_data(padded):
    x, y, params = padded
    with pytest.raises(ValueError, match="eval_data"):
        fit(
            _linear,
            params,
            optax.sgd(0.1),
            (x, y),
            key=jax.random.key(0),
            num_epochs=1,
            batch_size=5,
            eval_data=(x,),
        )
    with pytest.raises(ValueError, match="labels outside"):
        evaluate(_linear, params, x, y + 3)


def test_a_mask_pattern_that_matches_nothing_is_an_error():
    from jaxreg import masks

    params = {"layers": [{"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}]}
    with pytest.raises(ValueError, match="kernal"):
        masks.resolve(masks.by_path(r"kernal$"), params)
    with pytest.raises(ValueError, match="kernal"):
        penalties.l2(params, mask=masks.by_path(r"kernal$"))
    with pytest.raises(ValueError, match="kernal"):
        masks.resolve(masks.by_path(r"kernel$", r"kernal$"), params)  # one of two typed wrong
    assert masks.resolve(masks.by_path(r"kernal$", allow_unmatched=True), params) == {
        "layers": [{"kernel": False, "bias": False}]
    }


def test_experiments_help_prints_usage_without_running_anything():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "--help"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--quick" in result.stdout and "PASS" not in result.stdout


def test_sweeps_refuse_unread_config_keys_and_string_axes():
    from flax import nnx

    from jaxreg import sweeps
    from jaxreg.nn import MLP, from_nnx

    def train_fn(config, key):
        return {"loss": (config["lr"] - 0.1) ** 2 + 0.0 * jax.random.normal(key)}

    with pytest.raises(ValueError, match="lrr"):
        sweeps.run(train_fn, sweeps.grid(lr=[0.1, 0.2], lrr=[1, 2]), key=jax.random.key(0))
    result = sweeps.run(
        train_fn,
        sweeps.grid(lr=[0.1, 0.2], lrr=[1, 2]),
        key=jax.random.key(0),
        allow_unused=True,
        progress=False,
    )
    assert result.metrics["loss"].shape == (4,)
    with pytest.raises(TypeError, match="optimizer"):
        sweeps.run(
            train_fn, {"lr": [0.1, 0.2], "optimizer": ["adam", "sgd"]}, key=jax.random.key(0)
        )

    # Keys forwarded to fit as hparams count as read only where something reads them.
    x = jax.random.normal(jax.random.key(0), (32, 4))
    y = (x[:, 0] > 0).astype(jnp.int32)
    model = from_nnx(MLP((4, 8, 2), rngs=nnx.Rngs(0)))

    def fit_fn(config, key):
        result = fit(
            model,
            model.params,
            lambda h: optax.sgd(h["learning_rate"]),
            (x, y),
            key=key,
            hparams=config,
            num_epochs=1,
            batch_size=16,
        )
        return {"loss": result.history["train_loss"][-1]}

    good = sweeps.grid(learning_rate=[0.1, 0.2], dropout_rate=[0.0, 0.5])
    assert sweeps.run(fit_fn, good, key=jax.random.key(0), progress=False).metrics[
        "loss"
    ].shape == (4,)
    typo = sweeps.grid(learning_rate=[0.1, 0.2], dropuot_rate=[0.0, 0.5])
    with pytest.raises(ValueError, match="dropuot_rate"):
        sweeps.run(fit_fn, typo, key=jax.random.key(0), progress=False)


def test_tour_with_an_unwritable_out_fails_at_once_naming_the_argument(tmp_path, capsys):
    from experiments.tour import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--quick", "--out", str(blocker / "report")]) == 2
    assert "--out" in capsys.readouterr().err


def test_dtypes_follow_float64_inputs():
    from jaxreg import ensembles, metrics
    from jaxreg.augment import signal
    from jaxreg.losses import accuracy_per_example
    from jaxreg.training import early_stopping

    with jax.enable_x64(True):
        probs = jnp.asarray(np.array([[0.9, 0.1], [0.4, 0.6]]), jnp.float64)
        labels = jnp.array([0, 0])
        assert metrics.accuracy(probs, labels).dtype == jnp.float64
        assert accuracy_per_example(probs, labels).dtype == jnp.float64
        preds = jnp.asarray(np.array([[0.0, 1.0], [1.0, 1.0]]), jnp.float64)
        out = metrics.bias_variance(preds, jnp.asarray([0.0, 1.0], jnp.float64), "0-1")
        assert {a.dtype for a in out} == {jnp.dtype(jnp.float64)}
        np.testing.assert_allclose(out.expected_loss, 0.25)
        x = jnp.ones((4, 3), jnp.float64)
        assert mix.mixup(jax.random.key(0), x, jnp.arange(4) % 2, 0.4, num_classes=2)[1].dtype == (
            jnp.float64
        )
        assert signal.random_shift(jax.random.key(0), jnp.ones((2, 8)), 2).dtype == jnp.float64
        assert ensembles.bootstrap_weights(jax.random.key(0), 2, 5).dtype == jnp.float64
        state = early_stopping.init({"w": jnp.zeros(2)}, patience=1)
        state = early_stopping.update(state, jnp.asarray(0.1, jnp.float64), {"w": jnp.ones(2)})
        assert state.best_metric.dtype == jnp.float64


def test_import_jaxreg_stays_light_and_plots_keep_a_chosen_backend(monkeypatch):
    import subprocess
    import sys
    import types

    code = (
        "import sys, jaxreg\n"
        "heavy = [m for m in ('orbax', 'matplotlib', 'pandas', 'tqdm') if m in sys.modules]\n"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

    import matplotlib

    from jaxreg import plots

    before = matplotlib.get_backend()
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    matplotlib.use("svg")
    try:
        plots.pyplot()
        assert matplotlib.get_backend().lower() == "svg"
    finally:
        matplotlib.use(before)


def test_mnist1d_augmentation_accepts_strengths_above_one_concrete_and_traced():
    """A strength of 1.36 (the tour's search range reaches 2) made the shift probability
    1.09: a concrete strength raised, a traced one silently passed."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxreg.augment import signal

    x = jax.random.normal(jax.random.key(0), (16, 40))
    concrete = signal.mnist1d_pipeline(1.36)(jax.random.key(1), x)
    traced = jax.jit(lambda s: signal.mnist1d_pipeline(s)(jax.random.key(1), x))(1.36)
    np.testing.assert_allclose(concrete, traced, rtol=1e-4, atol=1e-4)  # jit fuses differently
    assert bool(jnp.all(jnp.isfinite(concrete)))
