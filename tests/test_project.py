"""The README's promises: two set-up commands, CI runs exactly the test one, the example works."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 2
    tour_command, test_command = blocks
    assert "jaxreg tour" in tour_command and "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_public_api_is_reexported():
    import jaxreg

    for name in (
        "data",
        "nn",
        "training",
        "fit",
        "losses",
        "averaging",
        "jacobian",
        "penalties",
        "prox",
        "transforms",
        "masks",
        "evaluate",
        "augment",
        "labels",
        "noise",
        "metrics",
        "plots",
        "solvers",
        "sharpness",
        "landscape",
        "sweeps",
        "ensembles",
        "tasks",
    ):
        assert hasattr(jaxreg, name), name


def test_readme_example_runs_and_reports_a_gap(capsys):
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(code) == 1
    namespace: dict = {}
    exec(compile(code[0], "README.md", "exec"), namespace)
    history = namespace["history"]
    assert float(history["train_accuracy"][-1]) > 0.9
    assert 0.3 < float(history["eval_accuracy"][-1]) < 0.9
    assert "gap" in capsys.readouterr().out


def test_readme_table_is_the_recorded_full_tour():
    """The headline table is format_table of docs/tour_results.json (a real full run)."""
    import json

    from jaxreg.study import format_table

    results = json.loads((ROOT / "docs" / "tour_results.json").read_text())
    assert results["config"]["seeds"] >= 5 and results["config"]["epochs"] >= 100
    assert results["protocol"]["test_reads"] >= len(results["rows"])
    assert format_table(results["rows"]) in (ROOT / "README.md").read_text()
