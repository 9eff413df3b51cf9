"""Shared fixtures: the cached MNIST-1D data, generated once per session."""

import os

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


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
