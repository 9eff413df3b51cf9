"""Strict JSON for every report the toolkit writes (NaN is not JSON)."""

import json
import math

import numpy as np
import pytest

from jaxreg.io import json_safe, write_json


def _strict_load(text: str):
    def reject(constant):
        raise ValueError(f"non-JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_json_safe_replaces_every_non_finite_float():
    value = {
        "nan": float("nan"),
        "inf": [1.5, -math.inf, (np.float32(np.nan), 2)],
        "array": np.array([[1.0, np.inf]]),
        "scalar": np.float64(0.25),
        "int": np.int32(3),
        "text": "NaN",
    }
    assert json_safe(value) == {
        "nan": None,
        "inf": [1.5, None, [None, 2]],
        "array": [[1.0, None]],
        "scalar": 0.25,
        "int": 3,
        "text": "NaN",
    }


def test_write_json_is_strict_json(tmp_path):
    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [np.float32(1.5)]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text
    assert _strict_load(text) == {"a": None, "b": [1.5]}


def test_experiment_reports_write_null_for_nan(tmp_path, capsys):
    from experiments.common import report

    assert report("demo", "a claim", {"bound": float("nan"), "effect": 0.5}, True, tmp_path) == 0
    written = _strict_load((tmp_path / "demo.json").read_text())
    assert written["evidence"] == {"bound": None, "effect": 0.5}
    assert "PASS: demo" in capsys.readouterr().out


def test_the_recorded_tour_results_are_strict_json():
    from pathlib import Path

    from experiments.study import format_table

    path = Path(__file__).resolve().parents[1] / "docs" / "tour_results.json"
    results = _strict_load(path.read_text())
    bagging = next(r for r in results["rows"] if r["name"] == "bagged ensemble")
    assert bagging["lambda_max"]["mean"] is None  # not measured for ensembles
    assert "| bagged ensemble |" in format_table(results["rows"])


def test_strict_loader_rejects_nan():
    with pytest.raises(ValueError, match="non-JSON"):
        _strict_load('{"a": NaN}')
