"""Names available to the docstring examples run by ``pytest --doctest-modules``."""

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, optax=optax, nnx=nnx)
