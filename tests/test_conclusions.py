"""The tour's conclusions, recomputed independently from the per-seed numbers.

References: scipy's paired t-test and t-interval, and Holm's procedure written as its
sequential rejection rule (not as adjusted p-values, which the library computes).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from experiments import tour
from experiments.study import format_table
from experiments.study import report as report_lib
from experiments.study.report import ALPHA, compare_to_baseline
from experiments.study.runner import StudyConfig
from experiments.study.spec import default_rows, extended_rows
from jaxreg.stats import holm, paired_difference

ROOT = Path(__file__).resolve().parents[1]
RECORDED = json.loads((ROOT / "docs" / "tour_results.json").read_text())
NAMES = tour.row_names(tour.default_rows() + tour.extended_rows())


def holm_rejections(p_values, alpha):
    """Holm (1979): reject the k smallest while p_(k) <= alpha / (m - k + 1), 1-based."""
    p = np.asarray(p_values, float)
    rejected = np.zeros(p.size, bool)
    for k, index in enumerate(np.argsort(p, kind="stable")):
        if p[index] > alpha / (p.size - k):
            break
        rejected[index] = True
    return rejected


def scipy_paired(values, base):
    """(mean, low, high, p) of ``values − base`` by scipy's t-interval and paired t-test."""
    values, base = np.asarray(values, float), np.asarray(base, float)
    diff = values - base
    if np.ptp(diff) == 0:  # every seed moved alike: scipy's interval is NaN, the point is it
        return diff.mean(), diff.mean(), diff.mean(), 1.0 if diff[0] == 0 else 0.0
    low, high = stats.t.interval(0.95, diff.size - 1, loc=diff.mean(), scale=stats.sem(diff))
    return diff.mean(), low, high, stats.ttest_rel(values, base).pvalue


def reference_differences(rows, baseline, references=None):
    """scipy's paired differences of each row to its reference (default: ``baseline``)."""
    references = references or {name: baseline for name in rows if name != baseline}
    out = {name: scipy_paired(rows[name], rows[ref]) for name, ref in references.items()}
    rejected = holm_rejections([v[3] for v in out.values()], ALPHA)
    return {name: (*v, r) for (name, v), r in zip(out.items(), rejected, strict=True)}


def check_against_reference(results):
    """Every row's Δ, interval, p-value and mark in ``results`` equal the scipy/Holm ones."""
    per_seed = {row["name"]: row["per_seed"]["test"] for row in results["rows"]}
    references = {
        row["name"]: NAMES[row["reference"]]
        for row in results["rows"]
        if row["name"] != NAMES["baseline"]
    }
    reference = reference_differences(per_seed, NAMES["baseline"], references)
    rows = {row["name"]: row for row in results["rows"]}
    for name, (mean, low, high, p_value, significant) in reference.items():
        got = rows[name]["difference"]
        np.testing.assert_allclose([got["mean"], got["low"], got["high"]], [mean, low, high],
                                   rtol=1e-9, atol=1e-12, err_msg=name)  # fmt: skip
        np.testing.assert_allclose(got["p_value"], p_value, rtol=1e-7, err_msg=name)
        assert got["significant"] == significant, name
    return reference


def test_the_recorded_tour_marks_equal_scipy_and_holms_rule():
    recomputed = tour.with_differences(RECORDED)
    reference = check_against_reference(recomputed)
    check_against_reference(RECORDED)  # the recorded file holds what the code computes
    marked = {name for name, v in reference.items() if v[4]}
    # Holm matters here: these rows' own 95% intervals exclude 0, yet they are not marked.
    unadjusted = {name for name, v in reference.items() if v[3] < 0.05}
    assert {"weight decay", "L2 penalty", "label smoothing"} <= unadjusted - marked
    assert "dropout" in marked and "1-D augmentation" in marked
    # Against its own reference: large batch is worse than the tuned-rate baseline.
    assert reference["large batch (1000)"][0] < 0 and "large batch (1000)" in marked
    # The recomputation is what the table shows, star for star and sign for sign.
    table = format_table(recomputed["rows"]).splitlines()[2:]
    for line in table:
        name, delta = line.split(" | ")[0][2:], line.split(" | ")[5]
        if name == NAMES["baseline"]:
            continue
        delta = delta.split(" vs ")[0]  # the reference's name follows, when not the baseline
        assert delta.endswith(" *") == (name in marked), name
        assert delta.startswith("+" if reference[name][0] > 0 else "-"), name
    assert format_table(RECORDED["rows"]) in (ROOT / "README.md").read_text()


def test_a_significantly_worse_row_is_marked_and_reported_as_worse():
    rng = np.random.default_rng(0)
    base = 0.60 + 0.01 * rng.standard_normal(5)
    per_seed = {"baseline": base, "better": base + 0.05 + 0.003 * rng.standard_normal(5),
                "worse": base - 0.04 + 0.003 * rng.standard_normal(5),
                "same": base + 0.01 * rng.standard_normal(5)}  # fmt: skip
    differences = compare_to_baseline(per_seed, "baseline")
    reference = reference_differences(per_seed, "baseline")
    assert [differences[n]["significant"] for n in reference] == [v[4] for v in reference.values()]
    assert differences["worse"]["significant"] and differences["worse"]["mean"] < 0
    assert not differences["same"]["significant"]
    ci = {"mean": 0.6, "half_width": 0.01, "sd": 0.01, "n": 5}
    rows = [{"name": n, "chosen": {}, "difference": differences.get(n), "zero_fraction": 0.0,
             "num_params": 1, **{m: ci for m in ("train_accuracy", "val_accuracy",
             "test_accuracy", "gap", "test_nll", "ece", "lambda_max")}}
            for n in per_seed]  # fmt: skip
    worse_line = next(line for line in format_table(rows).splitlines() if "| worse |" in line)
    assert worse_line.split(" | ")[5].startswith("-") and worse_line.split(" | ")[5].endswith("*")


def test_the_readmes_findings_are_generated_from_the_recorded_results():
    measured = {row["name"]: row for row in tour.with_differences(RECORDED)["rows"]}
    lines = tour.findings(measured, NAMES)
    assert "\n".join(lines) in (ROOT / "README.md").read_text()
    marked = {n: r["difference"] for n, r in measured.items() if "difference" in r}
    worse = [n for n, d in marked.items() if d["significant"] and d["mean"] < 0]
    assert sorted(worse) == ["L2 by marginal likelihood", "large batch (1000)"]
    assert lines[3].startswith("- Worse than their reference: large batch (1000) (-6.7 vs ")
    nll = max(measured, key=lambda n: measured[n]["test_nll"]["mean"])
    assert f"the highest test NLL is {nll}'s" in lines[5]
    wide = measured[NAMES["wide"]]["test_accuracy"]
    assert wide["mean"] < 0.90 and "misses the 90% target" in lines[6]
    cnn = measured[NAMES["cnn"]]["test_accuracy"]
    assert cnn["mean"] > 0.97 > cnn["mean"] - cnn["half_width"]  # the mean is not the claim
    assert "not shown" in lines[6]


@pytest.mark.parametrize("seed", range(5))
def test_holm_adjusted_p_values_reject_what_holms_rule_rejects(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.02, 4), rng.uniform(0, 1, 8)])
    adjusted = holm(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    for alpha in (0.01, 0.05, 0.1):
        np.testing.assert_array_equal(adjusted <= alpha, holm_rejections(p, alpha))


def test_paired_p_value_is_scipys_paired_t_test():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 10):
        a, b = rng.uniform(0.5, 0.7, n), rng.uniform(0.5, 0.7, n)
        expected = stats.ttest_rel(a, b).pvalue
        np.testing.assert_allclose(paired_difference(a, b)["p_value"], expected, rtol=1e-9)
    assert paired_difference([0.6, 0.6], [0.6, 0.6])["p_value"] == 1.0
    assert np.isnan(paired_difference([0.6], [0.5])["p_value"])


def test_the_readmes_reference_sentence_is_the_recorded_run():
    measured = {row["name"]: row for row in tour.with_differences(RECORDED)["rows"]}
    note = tour.reference_note(measured, NAMES)
    assert note in (ROOT / "README.md").read_text()
    tuning_the_rate = [
        r.name for r in default_rows() + extended_rows() if r.reference == "tuned_baseline"
    ]
    assert all(name in note for name in [*tuning_the_rate, tour.COMBINATION, tour.WIDE])
    assert "weight decay" not in note.split(")")[0]  # a row at 1e-3 is not listed
    tuned = measured[NAMES["tuned_baseline"]]
    assert f"{100 * tuned['test_accuracy']['mean']:.1f}%" in note


def test_the_readme_says_which_rows_train_for_other_epoch_budgets():
    config = StudyConfig(**RECORDED["config"])
    rows = default_rows() + extended_rows()
    sentence = tour.epoch_budgets(config, rows)
    assert sentence in (ROOT / "README.md").read_text()
    sam = next(row for row in rows if row.key == "sam")
    assert f"{sam.name} ({config.epochs * sam.epoch_factor})" in sentence
    assert f"{tour.WIDE} ({config.wide_epochs})" in sentence
    shorter_cnn = dataclasses.replace(config, cnn_epochs=config.epochs // 2)
    assert f"CNN1D (parameter sharing) ({config.epochs // 2})" in tour.epoch_budgets(
        shorter_cnn, rows
    )


def test_the_full_report_has_no_smoke_test_banner_and_judges_its_targets():
    _, report = tour.render_report(tour.with_differences(RECORDED))
    assert "Smoke test" not in report and "not judged" not in report
    quick = {**RECORDED, "config": {**RECORDED["config"], "seeds": 2, "epochs": 12}}
    _, reduced = tour.render_report(tour.with_differences(quick))
    assert reduced.splitlines()[2].startswith("> **Smoke test, not findings.**")
    assert "the 90% target is not judged in a reduced run" in reduced


def test_the_recorded_reports_sentences_are_generated_from_its_rows():
    measured = {row["name"]: row for row in tour.with_differences(RECORDED)["rows"]}
    lines = report_lib.sentences(measured)
    assert "\n".join(lines) in (ROOT / "docs" / "tour_report.md").read_text()
    assert len(lines) == len(measured)


def test_compare_to_baseline_records_holms_adjusted_p_values():
    per_seed = {"baseline": [0.60, 0.61, 0.59], "a": [0.70, 0.71, 0.70], "b": [0.61, 0.63, 0.60]}
    differences = compare_to_baseline(per_seed, "baseline")
    raw = [paired_difference(per_seed[n], per_seed["baseline"])["p_value"] for n in ("a", "b")]
    np.testing.assert_allclose([differences[n]["p_holm"] for n in ("a", "b")], holm(raw))
    assert all(isinstance(d["p_holm"], float) for d in differences.values())


def test_statistics_edge_cases():
    from jaxreg.stats import one_sided_lower_bound, rank_correlation

    constant = paired_difference([0.7, 0.7, 0.7], [0.6, 0.6, 0.6])  # every seed +0.1
    assert constant["p_value"] == 0.0 and constant["significant"]
    assert one_sided_lower_bound([0.1]) == float("-inf")
    two = [0.02, 0.04]
    expected = np.mean(two) - stats.t.ppf(0.95, 1) * np.std(two, ddof=1) / np.sqrt(2)
    assert one_sided_lower_bound(two) == pytest.approx(expected)
    rho, p = rank_correlation([0.0, 0.5, 1.0, 0.25], [1.0, 2.0, 4.0, 1.5], "greater")
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 24)  # x spans exactly 1
    assert all(np.isnan(v) for v in rank_correlation([1, 2, 3], [5, 5, 5], "less"))
    with pytest.raises(ValueError, match=r"^alternative must be 'greater' or 'less'"):
        rank_correlation([1, 2, 3], [1, 2, 3], "two-sided")


def test_the_table_shows_percentages_of_the_recorded_values():
    rows = tour.with_differences(RECORDED)["rows"]
    l1 = next(row for row in rows if row["name"] == "L1 (proximal)")
    line = next(x for x in format_table(rows).splitlines() if x.startswith("| L1 (proximal) |"))
    assert f"| {100 * l1['zero_fraction']:.1f}% |" in line
    assert f"| {100 * l1['test_accuracy']['mean']:.1f} ± " in line


def _row(name, test, chosen, *, zero_fraction=0.0, baseline=(0.59, 0.60, 0.61)):
    metrics = ("train_accuracy", "val_accuracy", "test_accuracy", "gap", "test_nll", "ece",
               "lambda_max")  # fmt: skip
    from jaxreg.stats import confidence_interval

    values = {m: confidence_interval([0.9, 0.9, 0.9][: len(test)]) for m in metrics}
    values["test_accuracy"] = confidence_interval(test)
    values["gap"] = confidence_interval([0.9 - t for t in test])
    difference = paired_difference(test, baseline[: len(test)]) if name != "baseline" else None
    return {**values, "name": name, "chosen": chosen, "difference": difference,
            "zero_fraction": zero_fraction, "num_params": 10}  # fmt: skip


def test_sentences_word_each_kind_of_row_from_its_numbers():
    rows = {
        "baseline": _row("baseline", [0.59, 0.60, 0.61], {}),
        "worse": _row("worse", [0.49, 0.50, 0.51], {"x": 1.0}),
        "sparse": _row("sparse", [0.60, 0.62, 0.60], {}, zero_fraction=0.3456),
    }
    rows["worse"]["difference"]["significant"] = True  # as Holm's correction marks it
    rows["single"] = _row("single", [0.64], {}, baseline=(0.60,))
    lines = report_lib.sentences(rows)
    assert lines[0].startswith("- **baseline**: the MLP reaches 90.0% on its training data")
    assert "- **worse** lowers test accuracy by 10.0 points" in lines[1]
    assert "changes test accuracy by +0.7 points, not distinguishable" in lines[2]
    assert "34.6% of the weights exactly zero" in lines[2]
    assert "- **single** changes test accuracy by +4.0 points (one seed)" in lines[3]


def test_table_cells_show_missing_values_and_means_without_intervals():
    rows = [_row("baseline", [0.59, 0.60, 0.61], {}), _row("one", [0.64], {}, baseline=(0.6,))]
    rows[1]["difference"]["significant"] = False
    rows[1]["ece"] = {"mean": float("nan"), "half_width": float("nan")}
    rows[1]["zero_fraction"] = 0.5
    line = next(x for x in format_table(rows).splitlines() if x.startswith("| one |"))
    cells = [cell.strip() for cell in line.split("|")]
    assert "64.0" in cells and "50.0%" in cells


def test_the_readmes_legend_and_bayesian_section_are_generated_from_the_recorded_run():
    results = tour.with_differences(RECORDED)
    readme = (ROOT / "README.md").read_text()
    assert tour.table_legend(results) in readme
    assert f"{len(results['rows']) - 1} comparisons" in tour.table_legend(results)
    assert report_lib.format_comparisons(results["bayesian"]) in readme
    assert "\n".join(tour.bayesian_findings(results)) in readme
    assert results["bayesian"] == tour.with_differences(RECORDED)["bayesian"]
    assert RECORDED["seed"] == 1000 and not RECORDED["provenance"]["uncommitted_changes"]
