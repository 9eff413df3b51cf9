"""Each experiment script runs from a clean checkout and reaches its verdict."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name",
    [
        "l1_vs_l2",
        "noise_equals_l2",
        pytest.param("label_smoothing", marks=pytest.mark.slow),
        pytest.param("augmentation", marks=pytest.mark.slow),
        pytest.param("dropout", marks=pytest.mark.slow),
        pytest.param("parameter_sharing", marks=pytest.mark.slow),
        "early_stopping_vs_l2",
        pytest.param("batch_size", marks=pytest.mark.slow),
        pytest.param("sharp_vs_flat", marks=pytest.mark.slow),
        pytest.param("ensembles", marks=pytest.mark.slow),
        pytest.param("bias_variance", marks=pytest.mark.slow),
    ],
)
def test_experiment_passes(name, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", f"jaxreg.experiments.{name}", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASS: {name}" in result.stdout
    written = json.loads((tmp_path / f"{name}.json").read_text())
    assert written["verdict"] == "PASS"
    assert (tmp_path / f"{name}.png").stat().st_size > 1000


FAKES = {
    "passes": "PASS",
    "fails": "FAIL",
}


def test_runner_reports_crashes_and_missing_results_as_errors(tmp_path, monkeypatch, capsys):
    from jaxreg.experiments import __main__ as runner

    package = tmp_path / "fake_experiments"
    package.mkdir()
    (package / "__init__.py").write_text("")
    writer = (
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "verdict = {verdict!r}\n"
        "result = json.dumps({{'verdict': verdict, 'claim': 'c'}})\n"
        "open(f'{{out}}/{name}.json', 'w').write(result)\n"
        "sys.exit(0 if verdict == 'PASS' else 1)\n"
    )
    for name, verdict in FAKES.items():
        (package / f"{name}.py").write_text(writer.format(verdict=verdict, name=name))
    (package / "crashes.py").write_text("raise RuntimeError('boom')\n")
    (package / "silent.py").write_text("print('no result')\n")
    out = tmp_path / "out"
    out.mkdir()
    # A stale result from an earlier run must not be read as this run's verdict.
    (out / "silent.json").write_text('{"verdict": "PASS", "claim": "stale"}')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(runner, "PACKAGE", "fake_experiments")

    assert runner._run("crashes", out)[0] == "ERROR"
    assert "RuntimeError: boom" in runner._run("crashes", out)[2]
    assert runner._run("silent", out)[0] == "ERROR"
    assert runner._run("fails", out)[0] == "FAIL"
    assert runner._run("passes", out)[0] == "PASS"

    def status(names):
        monkeypatch.setattr(runner, "EXPERIMENTS", names)
        return runner.main(["--out", str(out)])

    assert status(["passes"]) == 0
    assert status(["passes", "crashes"]) == 2
    assert status(["passes", "crashes", "fails"]) == 1
    assert "1 passed, 1 failed, 1 could not run" in capsys.readouterr().out


def test_early_stopping_mapping_verdict_fails_for_a_mapping_off_by_ten():
    """The negative controls: claiming α = 10/(ηt) or 0.1/(ηt) must FAIL, α = 1/(ηt) PASS."""
    from jaxreg.experiments import early_stopping_vs_l2 as experiment

    _, curves, _ = experiment.least_squares_paths(scales=(0.01, 0.1, 1.0, 10.0, 100.0))
    distances = {c: float(curve.mean()) for c, curve in curves.items()}
    assert experiment.mapping_verdict(distances, claimed=1.0)
    assert not experiment.mapping_verdict(distances, claimed=10.0)
    assert not experiment.mapping_verdict(distances, claimed=0.1)


def test_dropout_verdict_needs_a_significant_paired_gain():
    """Negative controls: the rate-0 pipeline against itself (gain exactly 0) and a gain that
    one bad seed makes insignificant must FAIL; a consistent gain PASSes."""
    from jaxreg.experiments.dropout import verdict

    zero = np.array([0.60, 0.62, 0.58, 0.61, 0.59])
    gaps = dict(gap_chosen=[0.2] * 5, gap_zero=[0.4] * 5, mi_test=0.1, mi_noise=0.3)
    assert not verdict(zero, zero, **gaps)[0]
    assert not verdict(zero + np.array([0.06, 0.05, -0.08, 0.05, 0.04]), zero, **gaps)[0]
    passed, bound = verdict(zero + np.array([0.05, 0.06, 0.04, 0.05, 0.06]), zero, **gaps)
    assert passed and bound > 0.03
    assert not verdict(zero + 0.05, zero, **{**gaps, "mi_noise": 0.05})[0]


def test_augmentation_verdict_fails_without_a_consistent_gain():
    from jaxreg.experiments.augmentation import verdict

    plain = np.array([0.60, 0.62, 0.58, 0.61, 0.59])
    assert not verdict(plain, plain)[0]  # strength 0 against itself
    assert not verdict(plain + np.array([0.1, -0.1, 0.1, -0.1, 0.02]), plain)[0]
    assert verdict(plain + np.array([0.1, 0.09, 0.11, 0.1, 0.12]), plain)[0]


def test_label_smoothing_verdict_fails_without_a_consistent_ece_reduction():
    from jaxreg.experiments.label_smoothing import verdict

    plain = np.array([0.25, 0.24, 0.26, 0.25, 0.27])
    assert not verdict(plain, plain)[0]  # ε = 0 against itself
    assert not verdict(plain - np.array([0.05, -0.04, 0.05, -0.05, 0.01]), plain)[0]
    assert verdict(plain - np.array([0.06, 0.05, 0.07, 0.06, 0.05]), plain)[0]


def test_batch_size_verdict_fails_without_a_consistent_gain():
    from jaxreg.experiments.batch_size import verdict

    large = np.array([0.61, 0.61, 0.62, 0.60, 0.59])
    assert not verdict(large, large)[0]  # a batch size against itself
    assert not verdict(large + np.array([0.05, -0.06, 0.04, -0.05, 0.01]), large)[0]
    assert verdict(large + np.array([0.05, 0.03, 0.03, 0.04, 0.04]), large)[0]


def test_ensembles_verdict_needs_accuracy_and_nll_gains():
    from jaxreg.experiments.ensembles import verdict

    acc_1, nll_1 = np.array([0.60, 0.61, 0.59, 0.60, 0.62]), np.array([1.6, 1.5, 1.7, 1.6, 1.5])
    assert not verdict(acc_1, acc_1, nll_1, nll_1)[0]  # k = 1 against itself
    better_acc, better_nll = acc_1 + 0.05, nll_1 - 0.4
    assert verdict(acc_1, better_acc + np.array([0, 0.01, 0, 0.01, 0]), nll_1, better_nll)[0]
    assert not verdict(acc_1, better_acc, nll_1, nll_1 + np.array([0.1, -0.1, 0.1, -0.1, 0]))[0]
