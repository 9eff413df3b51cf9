"""Names available to the docstring examples run by ``pytest --doctest-modules``; the
suite's XLA compile level."""

import os

# The suite compiles hundreds of small programs and runs each briefly: at XLA's backend
# optimization level 1 (the study's own level) it took 1-5% less time, measured per
# file group on 2 cores, with every test passing the same. Set before JAX starts its backend;
# subprocess tests inherit it; a level already in the caller's XLA_FLAGS is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        "--xla_backend_optimization_level=1 " + os.environ.get("XLA_FLAGS", "")
    ).strip()

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, optax=optax, nnx=nnx)
