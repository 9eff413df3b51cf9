"""The study's protocol and statistics: test data locked until every choice is made,
choices on validation, intervals against scipy, rows wired to their hyperparameters."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments.study import (
    Row,
    StudyConfig,
    choose,
    confidence_interval,
    default_rows,
    extended_rows,
    format_table,
    paired_difference,
    prepare_data,
    run_row,
)
from experiments.study.runner import Trained
from experiments.study.spec import LEARNING_RATE
from jaxreg import data as data_lib
from jaxreg.data import HeldOut

# XLA's level 0: these runs are a few steps long, and compiling is most of their time.
TINY = StudyConfig(
    seeds=2, tune_seeds=1, epochs=2, wide_epochs=1, cnn_epochs=1, search_configs=2, search_seeds=2,
    compile_level=0,
)  # fmt: skip


def test_held_out_refuses_reads_until_unlocked():
    held = HeldOut(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(RuntimeError, match="validation"):
        held.read()
    assert held.reads == 0
    held.unlock()
    x, y = held.read()
    assert x.shape == (3, 2) and y.shape == (3,) and held.reads == 1


def test_validation_split_is_fixed_disjoint_and_documented_size():
    dataset = data_lib.mnist1d()
    first = prepare_data(dataset, TINY)
    second = prepare_data(dataset, TINY)
    np.testing.assert_array_equal(first.x_val, second.x_val)
    assert len(first.y_val) == TINY.val_size
    assert len(first.y_train) + len(first.y_val) == len(dataset.y_train)
    train_rows = {row.tobytes() for row in first.x_train}
    assert not any(row.tobytes() in train_rows for row in first.x_val)
    other = prepare_data(dataset, dataclasses.replace(TINY, split_seed=1))
    assert not np.array_equal(first.x_val, other.x_val)
    with pytest.raises(ValueError, match="val_size"):
        prepare_data(dataset, dataclasses.replace(TINY, val_size=0))


def test_a_row_is_tuned_without_reading_test_and_its_strength_matters():
    data = prepare_data(data_lib.mnist1d(), TINY)
    row = Row("dropout", "dropout", search={"dropout_rate": (0.0, 0.9)})  # two far-apart strengths
    outcome = run_row(row, data, TINY, key=jax.random.key(0), final_key=jax.random.key(1))
    assert data.test.reads == 0 and data.test.locked  # reading would have raised
    tuning = outcome["tuning"]
    assert sorted(np.unique(tuning.configs["dropout_rate"]).tolist()) == [0.0, 0.9]
    # The strength reaches the model: the two configs train to different weights.
    kernels = np.asarray(jax.tree.leaves(tuning.params)[1])
    assert not np.allclose(kernels[0], kernels[1])
    assert outcome["chosen"]["dropout_rate"] in (0.0, 0.9)
    assert outcome["final"].val_accuracy.shape == (TINY.seeds,)


@pytest.mark.parametrize(
    "typo",
    [
        {"search": {"dropuot_rate": (0.0, 0.5)}},
        {"search": {"dropout_rate": (0.0, 0.5)}, "fixed": {"learnig_rate": 3e-3}},
    ],
    ids=["swept", "fixed"],
)
def test_a_row_with_a_misspelt_key_fails_before_training(typo, monkeypatch):
    """A key no part of training reads raises from sweeps.run before any member trains."""
    from jaxreg import sweeps

    trained = []
    original = sweeps.run

    def spy(train_fn, *args, **kwargs):
        def counted(config, key):
            trained.append(True)  # traced once when sweeps.run checks the keys
            return train_fn(config, key)

        return original(counted, *args, **kwargs)

    monkeypatch.setattr(sweeps, "run", spy)
    data = prepare_data(data_lib.mnist1d(), TINY)
    misspelt = next(iter(typo.get("fixed", typo["search"])))
    row = Row("typo", "a misspelt key", **typo)
    with pytest.raises(ValueError, match=misspelt):
        run_row(row, data, TINY, key=jax.random.key(0), final_key=jax.random.key(1))
    assert len(trained) == 1 and data.test.reads == 0


def test_the_compile_level_reaches_every_sweep(monkeypatch):
    from jaxreg import sweeps

    seen = []
    original = sweeps.run

    def spy(*args, **kwargs):
        seen.append(kwargs.get("compiler_options"))
        return original(*args, **kwargs)

    monkeypatch.setattr(sweeps, "run", spy)
    config = dataclasses.replace(TINY, compile_level=0)
    data = prepare_data(data_lib.mnist1d(), config)
    row = Row("dropout", "dropout", search={"dropout_rate": (0.0, 0.5)})
    run_row(row, data, config, key=jax.random.key(0), final_key=jax.random.key(1))
    expected = {"xla_backend_optimization_level": 0}
    assert seen == [expected, expected]  # tuning and final sweep


@pytest.mark.parametrize("row", extended_rows(), ids=lambda row: row.name)
def test_each_extended_row_is_tuned_on_validation_and_its_value_reaches_training(row):
    """The newer regularizers' rows, at the two ends of their grids (the full grids are
    checked for length below): each value trains to different weights, the choice is one
    of them, and no test data is read."""
    data = prepare_data(data_lib.mnist1d(), TINY)
    (name, grid), *others = row.search.items()
    assert not others and len(grid) >= 6
    ends = dataclasses.replace(row, search={name: (grid[0], grid[-1])})
    outcome = run_row(ends, data, TINY, key=jax.random.key(0), final_key=jax.random.key(1))
    assert data.test.reads == 0
    kernels = np.asarray(jax.tree.leaves(outcome["tuning"].params)[1])
    assert np.all(np.isfinite(kernels)) and not np.allclose(kernels[0], kernels[1])
    assert outcome["chosen"][name] in (grid[0], grid[-1])
    assert outcome["final"].val_accuracy.shape == (TINY.seeds,)


def test_a_rows_final_params_hook_chooses_what_is_evaluated():
    """SWA and EMA rows evaluate the average their optimizer state holds: the runner
    evaluates (and returns) whatever ``final_params`` picks from the fit result."""
    data = prepare_data(data_lib.mnist1d(), TINY)
    zeros = Row(
        "zeroed", "", final_params=lambda result: jax.tree.map(jnp.zeros_like, result.params)
    )
    outcome = run_row(zeros, data, TINY, key=jax.random.key(0), final_key=jax.random.key(1))
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(outcome["final"].params))
    # All-zero weights predict class 0 everywhere.
    np.testing.assert_allclose(outcome["final"].val_accuracy, np.mean(data.y_val == 0))


def test_the_tour_unlocks_test_only_after_every_choice(monkeypatch, tmp_path):
    """Replace the training by fakes that record whether test was locked when they ran."""
    import experiments.tour as tour

    calls = []
    seen = {}

    def fake(row, data, *args, **kwargs):
        calls.append((row.name, data.test.locked))
        seen["data"] = data
        return {"row": row, "chosen": {}, "tuning": None, "final": None}

    class Stop(Exception):
        pass

    def measure(outcome, data, config, programs):
        seen["locked_at_measure"] = data.test.locked
        seen["rows_before_measure"] = len(calls)
        raise Stop

    monkeypatch.setattr(tour, "run_row", fake)
    monkeypatch.setattr(tour, "search", fake)
    monkeypatch.setattr(tour, "transfer", lambda row, chosen, data, config, **k: fake(row, data))
    monkeypatch.setattr(tour, "_measure", measure)
    with pytest.raises(Stop):
        tour.run_tour(tmp_path, TINY)
    trained = [row.name for row in default_rows() if not row.derived_from]  # derived: reused
    assert len(calls) == len(trained) + 2
    assert all(locked for _, locked in calls)  # every selection ran with test locked
    assert seen["locked_at_measure"] is False and seen["rows_before_measure"] == len(calls)
    calls.clear()
    with pytest.raises(Stop):
        tour.run_tour(tmp_path, TINY, extended=True)
    names = [name for name, _ in calls]
    assert names[: len(trained)] == trained
    assert names[len(trained) : -2] == [row.name for row in extended_rows()]
    assert all(locked for _, locked in calls)


def _trained(val, failed, config_index):
    n = len(val)
    return Trained(
        apply=None,
        params=None,
        configs={"strength": np.repeat([0.1, 1.0, 10.0], n // 3)},
        config_index=np.asarray(config_index),
        val_accuracy=np.asarray(val, float),
        train_accuracy=np.zeros(n),
        val_curve=np.zeros((n, 1)),
        train_curve=np.zeros((n, 1)),
        failed=np.asarray(failed),
        members_per_seed=1,
    )


def test_choose_takes_the_best_mean_and_skips_diverged_configs():
    index = [0, 0, 1, 1, 2, 2]
    val = [0.60, 0.62, 0.70, 0.50, 0.64, 0.64]  # means 0.61, 0.60, 0.64
    best, values = choose(_trained(val, [False] * 6, index))
    assert best == 2 and values == {"strength": 10.0}
    # The best config loses if one of its members diverged (its mean would be NaN-poisoned).
    best, values = choose(_trained(val, [False, False, False, False, True, False], index))
    assert best == 0 and values == {"strength": 0.1}
    with pytest.raises(FloatingPointError):
        choose(_trained(val, [True] * 6, index))


@pytest.mark.parametrize("values", [[0.61, 0.64, 0.66, 0.60, 0.63], [0.5, 0.7]])
def test_confidence_interval_matches_scipy(values):
    ci = confidence_interval(values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    np.testing.assert_allclose(
        [ci["mean"] - ci["half_width"], ci["mean"] + ci["half_width"]], [low, high], rtol=1e-12
    )
    assert np.isnan(confidence_interval([0.5])["half_width"])


def test_paired_difference_uses_the_pairing():
    baseline = np.array([0.60, 0.70, 0.65, 0.55, 0.62])
    better = baseline + np.array([0.010, 0.012, 0.011, 0.009, 0.010])  # tiny but consistent
    diff = paired_difference(better, baseline)
    assert diff["significant"] and diff["low"] > 0
    result = stats.ttest_rel(better, baseline)
    assert result.pvalue < 0.05  # scipy's paired t-test agrees
    noisy = baseline + np.array([0.05, -0.04, 0.03, -0.05, 0.02])
    assert not paired_difference(noisy, baseline)["significant"]
    assert stats.ttest_rel(noisy, baseline).pvalue > 0.05


def test_table_marks_significant_rows_and_shows_choices():
    ci = confidence_interval([0.6, 0.62, 0.61])
    row = {
        "name": "dropout",
        "chosen": {"dropout_rate": 0.3},
        "train_accuracy": ci,
        "val_accuracy": ci,
        "test_accuracy": ci,
        "gap": ci,
        "test_nll": ci,
        "ece": ci,
        "lambda_max": ci,
        "zero_fraction": 0.0,
        "num_params": 10,
        "difference": paired_difference([0.7, 0.71, 0.72], [0.6, 0.6, 0.61]),
    }
    table = format_table([row])
    assert "dropout_rate 0.3" in table and " *" in table


def test_every_default_row_searches_at_least_six_values_and_names_a_known_model():
    for row in default_rows():
        assert row.model in {"mlp", "wide_mlp", "cnn"}
        for name, values in row.search.items():
            assert len(values) >= 6, (row.name, name)
            assert list(values) == sorted(values)


def test_combination_search_includes_the_single_rows_choices():
    from experiments.study.runner import combination_row, search

    data = prepare_data(data_lib.mnist1d(), TINY)
    anchors = {"dropout_rate": 0.2, "augment_strength": 1.0}
    outcome = search(
        combination_row("combo", "test"),
        data,
        TINY,
        key=jax.random.key(0),
        final_key=jax.random.key(1),
        anchors=anchors,
    )
    tuning = outcome["tuning"]
    # Every candidate is trained on search_seeds seeds; configs are listed per member.
    labels, first = np.unique(tuning.config_index, return_index=True)
    assert TINY.search_seeds == 2
    assert np.all(np.bincount(tuning.config_index) == TINY.search_seeds)
    configs = {k: v[first] for k, v in tuning.configs.items()}
    # The random candidates, both anchors together, each alone, together under cosine decay.
    assert len(configs["dropout_rate"]) == TINY.search_configs + 1 + len(anchors) + 1
    single_schedule = (configs["learning_rate"] == LEARNING_RATE) & (configs["lr_decay"] == 0.0)
    together = (configs["dropout_rate"] == 0.2) & (configs["augment_strength"] == 1.0)
    assert (together & single_schedule).sum() == 1
    assert (together & (configs["lr_decay"] == 1.0)).sum() == 1
    assert np.all(configs["weight_decay"][together] == 0.0)
    alone = (configs["dropout_rate"] == 0.2) & (configs["augment_strength"] == 0.0)
    assert (alone & single_schedule).sum() == 1
    assert data.test.reads == 0
    # The choice is the best validation accuracy averaged over each candidate's seeds.
    means = [tuning.val_accuracy[tuning.config_index == c].mean() for c in labels]
    best = int(np.argmax(means))
    assert outcome["chosen"] == {k: float(v[best]) for k, v in configs.items()}


def test_search_refuses_anchors_that_are_not_combinable_strengths():
    from experiments.study.runner import combination_row, search

    data = prepare_data(data_lib.mnist1d(), TINY)
    with pytest.raises(ValueError, match="mixup_alpha"):
        search(
            combination_row("combo", "test"),
            data,
            TINY,
            key=jax.random.key(0),
            final_key=jax.random.key(1),
            anchors={"mixup_alpha": 0.2},
        )


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_combined_optimizer_schedule_matches_optax(decay):
    """Adam under ``peak·(1 - decay·(1 - cos(π·t/T))/2)``: optax's constant Adam at 0,
    optax's cosine decay schedule at 1, Adam with the closed-form rate in between (past
    ``T`` the rate stays at its end value)."""
    import optax

    from experiments.study.spec import combined_optimizer

    steps, peak = 10, 3e-3
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]])}
    grads = [{"w": jnp.full((2, 2), 0.1 * (i + 1)) * jnp.array([1.0, -1.0])} for i in range(12)]
    ours = combined_optimizer(
        {"learning_rate": peak, "lr_decay": decay, "weight_decay": 0.0}, steps
    )

    def reference_rate(count):
        return peak * (1 - decay * (1 - np.cos(np.pi * min(count / steps, 1.0))) / 2)

    if decay == 0.0:
        reference = optax.adam(peak)
    elif decay == 1.0:
        reference = optax.adam(optax.cosine_decay_schedule(peak, steps))
    else:
        reference = optax.adam(reference_rate)
    state, ref_state = ours.init(params), reference.init(params)
    for count, g in enumerate(grads):
        update, state = ours.update(g, state, params)
        ref_update, ref_state = reference.update(g, ref_state, params)
        chex.assert_trees_all_close(
            update, ref_update, rtol=1e-5, atol=1e-8, custom_message=f"{count}"
        )


def test_transfer_retunes_only_the_named_values_on_validation():
    from experiments.study.runner import combination_row, transfer

    data = prepare_data(data_lib.mnist1d(), TINY)
    chosen = {
        "weight_decay": 1e-4,
        "dropout_rate": 0.1,
        "augment_strength": 0.5,
        "noise_std": 0.05,
        "label_smoothing": 0.02,
        "learning_rate": 1e-3,
        "lr_decay": 0.0,
    }
    outcome = transfer(
        combination_row("wide", "test"),
        chosen,
        data,
        TINY,
        final_key=jax.random.key(1),
        retune={"learning_rate": (1e-3, 4e-3), "lr_decay": (0.0, 1.0)},
        key=jax.random.key(0),
    )
    assert data.test.reads == 0
    tuning = outcome["tuning"]
    assert set(tuning.configs) == {"learning_rate", "lr_decay"}
    assert len(np.unique(tuning.config_index)) == 4
    picked = outcome["chosen"]
    assert list(picked) == list(chosen)
    assert {k: picked[k] for k in list(chosen)[:5]} == {k: chosen[k] for k in list(chosen)[:5]}
    best = choose(tuning)[1]
    assert picked["learning_rate"] == best["learning_rate"]
    assert picked["lr_decay"] == best["lr_decay"]
    with pytest.raises(ValueError, match="key"):
        transfer(
            combination_row("wide", "test"),
            chosen,
            data,
            TINY,
            final_key=jax.random.key(1),
            retune={"learning_rate": (1e-3,)},
        )


def test_rows_have_unique_stable_keys_and_the_tour_checks_them_before_training():
    from experiments.tour import FEATURED, row_names

    rows = default_rows() + extended_rows()
    names = row_names(rows)
    assert len({row.key for row in rows}) == len(rows)
    assert all(key in names for key in FEATURED)
    renamed = [dataclasses.replace(row, name=row.name + " (renamed)") for row in rows]
    assert row_names(renamed)["cnn"] == "CNN1D (parameter sharing) (renamed)"
    clash = [*rows, dataclasses.replace(rows[3], name="another")]
    with pytest.raises(ValueError, match="repeated"):
        row_names(clash)
    with pytest.raises(ValueError, match="label_smoothing"):
        row_names([row for row in rows if row.key != "label_smoothing"])


def test_a_penalty_with_its_own_strength_trains_bitwise_like_penalty_strength():
    """The study's rows name their strengths (l2_strength, ...) instead of sharing
    penalty_strength; the objective loss + 1.0·(s·penalty) trains the same bits as
    loss + s·penalty, so the recorded table still holds for these rows."""
    import optax
    from flax import nnx

    from experiments.study.spec import scaled_by
    from jaxreg import fit, masks, penalties
    from jaxreg.nn import MLP, functional

    x = jax.random.normal(jax.random.key(0), (64, 6))
    y = (x[:, 0] > 0).astype(jnp.int32)
    apply, params = functional(MLP((6, 16, 2), rngs=nnx.Rngs(0)))

    def l2(p):
        return penalties.l2(p, mask=masks.weights_only)

    def train(penalty, **kwargs):
        return fit(
            apply,
            params,
            optax.adam(1e-2),
            (x, y),
            key=jax.random.key(1),
            num_epochs=3,
            batch_size=16,
            penalty=penalty,
            **kwargs,
        ).params

    shared = train(l2, hparams={"penalty_strength": 0.03})
    named = train(scaled_by("l2_strength", l2), penalty_strength=1.0, hparams={"l2_strength": 0.03})
    chex.assert_trees_all_equal(shared, named)
    unpenalized = train(None)
    assert not np.allclose(jax.tree.leaves(named)[1], jax.tree.leaves(unpenalized)[1])


def test_transfer_without_retune_trains_the_transferred_learning_rate(monkeypatch):
    """A transferred learning rate is the one trained (it once lost silently to the
    default 1e-3 the final sweep swept), and every other value travels as fixed."""
    from experiments.study import transfer
    from jaxreg import sweeps

    seen = []
    original = sweeps.run

    def spy(train_fn, configs, **kwargs):
        seen.append(({k: list(map(float, v)) for k, v in configs.items()}, kwargs["fixed"]))
        return original(train_fn, configs, **kwargs)

    monkeypatch.setattr(sweeps, "run", spy)
    data = prepare_data(data_lib.mnist1d(), TINY)
    chosen = {"learning_rate": 0.002, "dropout_rate": 0.1}
    out = transfer(Row("moved", "", key="moved"), chosen, data, TINY, final_key=jax.random.key(1))
    assert seen == [({"learning_rate": [0.002]}, {"dropout_rate": 0.1})]
    assert out["chosen"] == chosen and out["tuning"] is None
