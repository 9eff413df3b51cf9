"""The notebooks execute without error (quick settings)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


# The sharpness notebook runs in the default suite. The tour notebook compiles every
# tour row again (~2 minutes on 2 cores): the same run_tour path that
# tests/test_cli.py::test_quick_tour_end_to_end runs by default, so it is `-m slow`.
@pytest.mark.parametrize("name", [pytest.param("tour", marks=pytest.mark.slow), "sharpness"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREG_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        o
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
