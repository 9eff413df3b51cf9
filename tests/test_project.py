"""The README's promises: two set-up commands, CI runs exactly the test one, the example works."""

import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _docs_conf() -> dict:
    """docs/conf.py's namespace, executed once (it imports every API module and writes
    docs/api.md)."""
    import runpy

    return runpy.run_path(str(ROOT / "docs" / "conf.py"), run_name="conf_check")


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 2
    tour_command, test_command = blocks
    assert "python -m experiments.tour" in tour_command and "pytest" in test_command
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
        "stats",
        "io",
        "calling",
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

    from experiments.study import format_table

    results = json.loads((ROOT / "docs" / "tour_results.json").read_text())
    assert results["config"]["seeds"] >= 5 and results["config"]["epochs"] >= 100
    assert results["protocol"]["test_reads"] >= len(results["rows"])
    assert format_table(results["rows"]) in (ROOT / "README.md").read_text()


def test_a_script_beside_a_clone_named_jaxreg_imports_the_package(tmp_path):
    """From the folder that holds a clone called ``jaxreg`` (no ``__init__.py`` at its top),
    Python must still import the installed package, not the clone folder as an empty
    namespace package. The README's editable install (``editable_mode=compat``) and a
    regular ``pip install .`` both ensure it."""
    import subprocess
    import sys

    clone = tmp_path / "jaxreg"
    clone.mkdir()
    (clone / "README.md").write_text("a clone's top folder\n")
    result = subprocess.run(
        [sys.executable, "-c", "import jaxreg; print(jaxreg.data.mnist1d.__name__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "mnist1d"


def test_every_public_module_is_in_the_api_reference():
    """docs/conf.py renders one page per public name of the modules it lists; a new public
    module must be listed too (or be a package whose names it re-exports)."""
    import importlib
    import pkgutil

    import jaxreg

    conf = _docs_conf()
    listed = set(conf["API_MODULES"])
    missing = []
    for info in pkgutil.walk_packages(jaxreg.__path__, "jaxreg."):
        name = info.name
        if any(p.startswith("_") for p in name.split(".")):
            continue
        module = importlib.import_module(name)
        if not getattr(module, "__all__", None):
            continue
        parent = name.rsplit(".", 1)[0]
        covered = name in listed or (
            parent in listed and set(module.__all__) <= set(conf["public_names"](parent))
        )
        if not covered:
            missing.append(name)
    assert not missing, missing
    assert (ROOT / "docs" / "api.md").exists()  # written by conf.py


def _attribute_doc(module_name: str, name: str) -> str:
    """The ``#:`` comment above ``name``'s assignment (what Sphinx's autodata renders)."""
    import importlib
    import inspect
    import re

    source = inspect.getsource(importlib.import_module(module_name)).split("\n")
    assignment = re.compile(rf"^{re.escape(name)}\s*[:=]")
    line = next(i for i, text in enumerate(source) if assignment.match(text))
    comment = []
    while line > 0 and source[line - 1].startswith("#:"):
        line -= 1
        comment.insert(0, source[line][3:])
    return "\n".join(comment)


def _api_names():
    import importlib

    conf = _docs_conf()
    for module_name in conf["API_MODULES"]:
        module = importlib.import_module(module_name)
        for name in conf["public_names"](module_name):
            obj = getattr(module, name)
            if isinstance(obj, type(module)):
                continue
            if conf["is_documented_object"](obj):
                yield f"{module_name}.{name}", obj.__doc__ or "", None
            else:
                where = conf["defining_module"](module_name, name)
                yield f"{module_name}.{name}", _attribute_doc(where, name), where


def test_every_public_name_has_a_docstring_example():
    """The API reference promises an example on every page; a new public name without one
    fails here. Functions' and classes' examples run as doctests (``--doctest-modules``)."""
    missing = [name for name, doc, _ in _api_names() if ">>>" not in doc]
    assert not missing, f"{len(missing)} public names without an example: {missing}"


def test_constant_and_alias_examples_run():
    """Constants and type aliases are documented by a ``#:`` comment, which doctest does not
    collect: run those examples here."""
    import doctest

    checked = 0
    for name, doc, where in _api_names():
        if where is None:
            continue
        test = doctest.DocTestParser().get_doctest(doc, {}, name, where, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0, name
        checked += 1
    assert checked >= 4


def test_the_readmes_laplace_numbers_are_the_recorded_benchmark():
    import json

    import numpy as np

    recorded = json.loads((ROOT / "benchmarks" / "results" / "laplace.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    ours = recorded["jaxreg_grid"]["seconds_first_call"]
    theirs = recorded["laplace_torch_grid_seconds_scaled"]
    assert f"takes jaxreg {ours:.0f} s" in readme
    assert f"against {theirs:.0f} s for laplace-torch's loop" in readme
    assert f"{theirs / ours:.1f}×" in readme
    worst = max(
        abs(a - b) / abs(b)
        for name in ("full", "diag", "kron", "last_layer")
        for key in ("log_marginal_likelihood", "test_nll_glm_probit")
        for a, b in zip(
            np.atleast_1d(recorded["jaxreg"][name][key]),
            np.atleast_1d(recorded["laplace_torch"]["agreement"][name][key]),
            strict=True,
        )
    )
    assert worst < 1e-13 and "KFAC and last-layer Laplace agree to within 1e-13 relative" in readme
    factors = recorded["kfac_jax"]["layers"]
    assert max(max(layer["inputs"], layer["output_grads"]) for layer in factors.values()) < 1e-15
    assert "equal kfac-jax's exact-GGN factors to within 1e-15 relative" in readme
    memory = recorded["memory"]
    for structure, shown in (
        ("diag", "{:.0f} kB for the diagonal"),
        ("kron", "{:.1f} kB for KFAC"),
    ):
        per_parameter = [row[f"{structure}_temp_bytes_per_parameter"] for row in memory]
        assert max(per_parameter) / min(per_parameter) < 1.1  # flat: O(P)
        assert shown.format(per_parameter[0] / 1e3) in readme


def test_the_mutation_testing_script_names_existing_modules_and_tests():
    """tools/mutation.py (run by hand, not in the suite) must not rot: every group's
    mutated files and selected tests exist, and its recorded scores are per group."""
    import glob
    import json
    import runpy

    script = runpy.run_path(str(ROOT / "tools" / "mutation.py"), run_name="mutation_check")
    for name, (mutate, tests) in script["GROUPS"].items():
        for pattern in mutate + tests:
            assert glob.glob(str(ROOT / pattern)), f"{name}: {pattern} matches nothing"
    scores = json.loads((ROOT / "tools" / "mutation_scores.json").read_text())
    assert set(scores) <= set(script["GROUPS"])
    for result in scores.values():
        assert result["killed"] + result["survived"] <= result["mutants"]
        assert result["score"] == round(result["killed"] / result["mutants"], 4)
