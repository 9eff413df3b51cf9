"""Shared fixtures: the cached MNIST-1D data, generated once per session."""

import os

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@pytest.fixture(scope="session")
def mnist1d_data():
    from jaxreg.data import mnist1d

    return mnist1d()
