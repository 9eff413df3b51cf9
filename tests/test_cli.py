import json
import subprocess
import sys

import pytest

from jaxreg.cli import build_parser, main
from jaxreg.tour import TourConfig, run_tour


def test_help_lists_the_tour():
    result = subprocess.run(
        [sys.executable, "-m", "jaxreg.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "tour" in result.stdout


def test_tour_arguments():
    args = build_parser().parse_args(["tour", "--quick", "--seeds", "2", "--out", "x"])
    assert args.quick and args.seeds == 2 and args.out == "x"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tour", "--seeds", "0"])


def test_tiny_tour_writes_report_results_and_figure(tmp_path, capsys):
    results = run_tour(tmp_path, TourConfig(seeds=2, mlp_epochs=3, cnn_epochs=2))
    report = (tmp_path / "report.md").read_text()
    assert "| MLP (baseline) |" in report and "| CNN1D" in report
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["rows"][0]["num_params"] == 15210
    assert written == json.loads(json.dumps(results))
    for row in written["rows"]:
        assert 0.0 <= row["test_accuracy"]["mean"] <= 1.0
    assert "MLP (baseline)" in capsys.readouterr().out


def test_main_runs_the_tour(tmp_path, monkeypatch):
    import jaxreg.tour

    seen = {}
    monkeypatch.setattr(
        jaxreg.tour, "run_tour", lambda out, config: seen.update(out=out, config=config)
    )
    assert main(["tour", "--quick", "--out", str(tmp_path), "--seeds", "2"]) == 0
    assert seen["config"] == TourConfig.quick(2)
