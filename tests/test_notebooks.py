"""The notebooks execute without error (quick settings).

The sharpness notebook is a docs tutorial, executed by the docs build in ``.ci/run``
(here under ``-m slow``). The tour notebook's study is the same
``run_tour`` path that ``tests/test_cli.py::test_quick_tour_end_to_end`` runs, so
that test renders the notebook on its own ``python -m experiments.tour --quick`` folder
(``JAXREG_TOUR_DIR``) instead of compiling every row a second time; the notebook
running its own quick study is ``-m slow``.
"""

import pytest


# CI executes the sharpness notebook in the docs build (a tutorial there; myst-nb fails the
# build on any error), so the default suite does not run it a second time.
@pytest.mark.slow
def test_sharpness_notebook_executes(tmp_path, execute_notebook):
    execute_notebook("sharpness", tmp_path)


@pytest.mark.slow
def test_tour_notebook_runs_its_own_quick_study(tmp_path, monkeypatch, execute_notebook):
    monkeypatch.delenv("JAXREG_TOUR_DIR", raising=False)
    execute_notebook("tour", tmp_path)
    assert (tmp_path / "tour_out" / "report.md").exists()
