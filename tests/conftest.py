"""Shared fixtures: the cached MNIST-1D data, generated once per session."""

import os

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drop JAX's compiled programs after each test module.

    An xdist worker runs hundreds of modules in one process. Late in the suite, XLA:CPU
    sometimes segfaulted while compiling a Lanczos loop in a doctest (3 of 3 runs, never
    the same doctest, never when run alone). Holding no programs across modules keeps
    every worker as small as a fresh process.
    """
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def mnist1d_data():
    from jaxreg.data import mnist1d

    return mnist1d()


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats enabled (restored afterwards)."""
    import jax

    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # older jax
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


@pytest.fixture(scope="session")
def diabetes():
    """scikit-learn's diabetes data, standardized features and centered target (float64)."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float64), (y - y.mean()).astype(np.float64)


@pytest.fixture
def execute_notebook(monkeypatch):
    """``execute_notebook(name, workdir, **env)`` runs ``notebooks/{name}.ipynb`` in
    ``workdir`` (quick settings, Agg backend, ``env`` set) and returns its executed cells,
    asserting that no cell raised."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]

    def execute(name: str, workdir: Path, **env: str) -> list:
        monkeypatch.setenv("JAXREG_NOTEBOOK_QUICK", "1")
        monkeypatch.setenv("MPLBACKEND", "Agg")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        Path(workdir).mkdir(parents=True, exist_ok=True)
        notebook = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        client = NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute()
        errors = [
            o
            for cell in notebook.cells
            if cell.cell_type == "code"
            for o in cell.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, errors
        return notebook.cells

    return execute
