import json
import math
import subprocess
import sys

import pytest

from experiments.study import StudyConfig
from experiments.tour import build_parser, main


def test_help_describes_the_tour():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.tour", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--quick" in result.stdout and "MNIST-1D" in result.stdout


def test_tour_arguments():
    args = build_parser().parse_args(["--quick", "--seeds", "2", "--out", "x"])
    assert args.quick and args.seeds == 2 and args.out == "x"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--seeds", "0"])


def _check_report(out, results):
    from experiments.tour import COMBINATION, WIDE, default_rows

    report = (out / "report.md").read_text()
    names = [row.name for row in default_rows()] + [COMBINATION, WIDE]
    for name in names:
        assert f"| {name} |" in report, name
    for figure in (
        "paths",
        "accuracy",
        "learning_curves",
        "reliability",
        "spectral_density",
        "landscape",
        "weights",
    ):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure
        assert f"({figure}.png)" in report
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    rows = {row["name"]: row for row in written["rows"]}
    assert set(rows) == set(names)
    specs = {row.name: row for row in default_rows()}
    for row in rows.values():
        spec = specs.get(row["name"])
        for metric in ("train_accuracy", "test_accuracy", "gap", "ece", "test_nll"):
            assert math.isfinite(row[metric]["mean"]), (row["name"], metric)
        if spec is not None and spec.evidence is not None:  # validation was training data
            assert row["val_accuracy"]["mean"] is None and row["chosen_by"] == "evidence"
        else:
            assert math.isfinite(row["val_accuracy"]["mean"]), row["name"]
        if spec is None or (spec.ensemble_members == 1 and not spec.derived_from):
            assert math.isfinite(row["lambda_max"]["mean"]), row["name"]
        assert len(row["per_seed"]["test"]) == written["config"]["seeds"]
    # The Bayesian rows: predictives on other rows' networks, and their paired comparisons.
    assert rows["MC dropout"]["chosen"] == rows["dropout"]["chosen"]
    assert (
        rows["last-layer Laplace (baseline)"]["per_seed"]["train"]
        == rows["baseline"]["per_seed"]["train"]
    )  # the baseline's own networks
    assert len(written["bayesian"]) == 6 and "## The Bayesian reading" in report
    assert rows["baseline"]["num_params"] == 15210
    # The run's conclusions, recomputed with scipy and Holm's rule from its per-seed values,
    # are the ones it wrote, and its table shows them.
    from test_conclusions import check_against_reference

    reference = check_against_reference(written)
    for name, (mean, *_, significant) in reference.items():
        delta = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        delta = delta.split(" | ")[5].split(" vs ")[0]
        assert delta.endswith(" *") == bool(significant) and (mean > 0) == delta.startswith("+")
    # Every tuned row reports its choice, and the choice is a grid value.
    for row in default_rows():
        for name, values in row.search.items():
            assert rows[row.name]["chosen"][name] in values, (row.name, name)
    # The protocol: validation carved from training, test read only after the choices.
    protocol = written["protocol"]
    assert protocol["train"] + protocol["validation"] == 4000 and protocol["test"] == 1000
    assert protocol["test_reads"] >= len(rows)
    assert set(written["paths"]) == {r.name for r in default_rows() if len(r.search) == 1}
    return rows


def test_quick_tour_end_to_end(tmp_path, execute_notebook):
    """`python -m experiments.tour --quick` as a user runs it: the overfitting baseline and
    every row; then the tour notebook renders that run (its table, DataFrame and every figure)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.tour",
            "--quick",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _check_report(tmp_path, json.loads((tmp_path / "results.json").read_text()))
    assert rows["baseline"]["gap"]["mean"] > 0.05
    assert rows["CNN1D (parameter sharing)"]["test_accuracy"]["mean"] > 0.5
    assert rows["L1 (proximal)"]["zero_fraction"] >= 0.0
    written = json.loads((tmp_path / "results.json").read_text())
    assert all(row["seconds"] > 0 for row in rows.values())  # each row's own wall time
    phases = written["phase_seconds"]
    assert set(phases) == {"choices_and_training", "test_metrics_and_curvature", "figures"}
    assert sum(phases.values()) <= written["elapsed_seconds"]
    assert "tour: " in result.stderr and " rows (" in result.stderr  # progress, as plain lines
    assert "test metrics and curvature: " in result.stderr and "\r" not in result.stderr
    assert "figure check" not in result.stderr, result.stderr  # plots.save's reviewer checks
    report = (tmp_path / "report.md").read_text()
    assert report.splitlines()[2].startswith(
        "> **Smoke test, not findings.** This is a reduced run"
    )
    assert "target is not judged in a reduced run" in report and "misses the" not in report

    cells = execute_notebook("tour", tmp_path / "notebook", JAXREG_TOUR_DIR=str(tmp_path))
    outputs = [o for cell in cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 7  # every figure of the report
    text = "".join(o.get("text", "") + str(o.get("data", {})) for o in outputs)
    assert f"{len(rows)} rows" in text and "best combination" in text
    assert not (tmp_path / "notebook" / "tour_out").exists()  # read, not re-run


def test_main_runs_the_tour(tmp_path, monkeypatch):
    import experiments.tour

    seen = {}
    monkeypatch.setattr(
        experiments.tour,
        "run_tour",
        lambda out, config, seed, extended: seen.update(
            out=out, config=config, seed=seed, extended=extended
        ),
    )
    assert main(["--quick", "--out", str(tmp_path), "--seeds", "2"]) == 0
    assert seen["config"] == StudyConfig.quick(2) and seen["extended"] is False
    assert seen["seed"] == 0
    assert main(["--quick", "--out", str(tmp_path), "--confirm"]) == 0
    assert seen["seed"] == 1000  # fresh seeds: no recorded run used them
    monkeypatch.chdir(tmp_path)
    assert main(["--quick"]) == 0
    assert seen["out"] == "jaxreg-tour-quick" and seen["config"] == StudyConfig.quick()
    assert main([]) == 0
    assert seen["out"] == "jaxreg-tour" and seen["config"] == StudyConfig()
    assert main(["--extended"]) == 0
    assert seen["extended"] is True and seen["config"] == StudyConfig()


def test_clear_argument_errors(capsys):
    with pytest.raises(SystemExit):
        main(["--seeds", "abc"])
    error = capsys.readouterr().err
    assert "--seeds" in error and "positive integer" in error and "_positive_int" not in error


def test_experiments_without_sklearn_say_how_to_get_it(capsys, monkeypatch):
    import importlib.util

    from experiments import __main__ as runner

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    assert runner.main(["--quick"]) == 2
    assert "pip install 'jaxreg[sklearn]'" in capsys.readouterr().err


def test_experiments_quick_runs_every_script_reduced(monkeypatch, tmp_path):
    from experiments import __main__ as runner

    calls = []

    def fake_run(name, out, *flags):
        calls.append((name, flags))
        return "PASS", 0.0, "claim"

    monkeypatch.setattr(runner, "_run", fake_run)
    assert runner.main(["--quick", "--out", str(tmp_path)]) == 0
    assert [name for name, _ in calls] == runner.EXPERIMENTS
    assert all(flags == ("--quick",) for _, flags in calls)
