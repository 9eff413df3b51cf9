"""Each experiment script runs from a clean checkout and reaches its verdict."""

import json
import subprocess
import sys
from pathlib import Path

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
        pytest.param("early_stopping_vs_l2", marks=pytest.mark.slow),
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
