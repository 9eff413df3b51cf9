"""Names available to the docstring examples run by ``pytest --doctest-modules``; the
suite's XLA compile level and its shared compilation cache."""

import atexit
import os
import shutil
import tempfile

# The suite compiles hundreds of small programs and runs each briefly: at XLA's backend
# optimization level 1 (the study's own level) it took 1-5% less time, measured per
# file group on 2 cores, with every test passing the same. Set before JAX starts its backend;
# subprocess tests inherit it; a level already in the caller's XLA_FLAGS is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        "--xla_backend_optimization_level=1 " + os.environ.get("XLA_FLAGS", "")
    ).strip()

# Many tests compile a program another test (a parametrization, a reference, a worker, a
# subprocess) already compiled. One persistent cache per run, shared through the environment
# by both xdist workers and every subprocess, and removed at exit, loads those instead: the
# default run took 14:54 against 16:41 on 2 cores (five curvature files 15-20% less), every
# test passing the same. A run always starts cold, so no test sees another run's programs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _SUITE_CACHE = tempfile.mkdtemp(prefix="jaxreg-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SUITE_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")
    atexit.register(shutil.rmtree, _SUITE_CACHE, ignore_errors=True)

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache

_CACHE_SETTINGS = {
    "jax_compilation_cache_dir": os.environ["JAX_COMPILATION_CACHE_DIR"],
    "jax_persistent_cache_min_compile_time_secs": float(
        os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")
    ),
}


@pytest.fixture(autouse=True)
def _suite_cache_restored():
    """A test that turns the cache off or elsewhere (``jaxreg.compilation``'s examples) does
    so for itself, not for the rest of its worker."""
    yield
    if any(getattr(jax.config, name) != value for name, value in _CACHE_SETTINGS.items()):
        for name, value in _CACHE_SETTINGS.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, optax=optax, nnx=nnx)
