"""The persistent compilation cache: one call turns it on, also after earlier compiles."""

import os
import subprocess
import sys

SCRIPT = """
import sys, jax, jax.numpy as jnp
jax.jit(lambda x: x + 1)(1.0)  # a compile before the cache is enabled
import jaxreg
folder = jaxreg.enable_compilation_cache(sys.argv[1])
jax.jit(lambda x: jnp.sin(x) * 3)(1.0)
written = len(list(folder.iterdir()))
jaxreg.disable_compilation_cache()
jax.jit(lambda x: jnp.cos(x) * 5)(1.0)
print(written, len(list(folder.iterdir())))
"""


def test_the_cache_writes_after_earlier_compiles_and_stops_when_disabled(tmp_path):
    folder = tmp_path / "xla"
    # Without the suite's own cache (conftest.py): the first compile runs with none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", SCRIPT, str(folder)], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    written, after_disable = map(int, run().stdout.split())
    assert written >= 1 and after_disable == written
    again = run()
    assert int(again.stdout.split()[0]) == written  # loaded, not written twice


def test_a_negative_threshold_is_refused(tmp_path):
    import pytest

    import jaxreg

    with pytest.raises(ValueError, match="min_compile_seconds"):
        jaxreg.enable_compilation_cache(tmp_path, min_compile_seconds=-1.0)
