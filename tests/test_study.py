"""The study's protocol and statistics: test data locked until every choice is made,
choices on validation, intervals against scipy, rows wired to their hyperparameters."""

import dataclasses

import jax
import numpy as np
import pytest
from scipy import stats

from jaxreg import data as data_lib
from jaxreg.study import (
    HeldOut,
    Row,
    StudyConfig,
    choose,
    confidence_interval,
    default_rows,
    format_table,
    paired_difference,
    prepare_data,
    run_row,
)
from jaxreg.study.runner import Trained

TINY = StudyConfig(seeds=2, tune_seeds=1, epochs=2, wide_epochs=1, cnn_epochs=1, search_configs=2)


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


def test_the_tour_unlocks_test_only_after_every_choice(monkeypatch, tmp_path):
    """Replace the training by fakes that record whether test was locked when they ran."""
    import jaxreg.tour as tour

    calls = []
    seen = {}

    def fake(row, data, *args, **kwargs):
        calls.append((row.name, data.test.locked))
        seen["data"] = data
        return {"row": row, "chosen": {}, "tuning": None, "final": None}

    class Stop(Exception):
        pass

    def measure(outcome, data, config, curvature):
        seen["locked_at_measure"] = data.test.locked
        seen["rows_before_measure"] = len(calls)
        raise Stop

    monkeypatch.setattr(tour, "run_row", fake)
    monkeypatch.setattr(tour, "search", fake)
    monkeypatch.setattr(tour, "transfer", lambda row, chosen, data, config, **k: fake(row, data))
    monkeypatch.setattr(tour, "_measure", measure)
    with pytest.raises(Stop):
        tour.run_tour(tmp_path, TINY)
    assert len(calls) == len(default_rows()) + 2
    assert all(locked for _, locked in calls)  # every selection ran with test locked
    assert seen["locked_at_measure"] is False and seen["rows_before_measure"] == len(calls)


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
    from jaxreg.study.runner import combination_row, search

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
    assert len(configs["dropout_rate"]) == TINY.search_configs + 1 + len(anchors)
    together = (configs["dropout_rate"] == 0.2) & (configs["augment_strength"] == 1.0)
    assert together.sum() == 1 and configs["weight_decay"][together][0] == 0.0
    alone = (configs["dropout_rate"] == 0.2) & (configs["augment_strength"] == 0.0)
    assert alone.sum() == 1
    assert data.test.reads == 0
    # The choice is the best validation accuracy averaged over each candidate's seeds.
    means = [tuning.val_accuracy[tuning.config_index == c].mean() for c in labels]
    best = int(np.argmax(means))
    assert outcome["chosen"] == {k: float(v[best]) for k, v in configs.items()}
