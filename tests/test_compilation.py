"""The persistent compilation cache: one call turns it on, also after earlier compiles."""

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
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, check=True
    )
    written, after_disable = map(int, out.stdout.split())
    assert written >= 1 and after_disable == written
    again = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, check=True
    )
    assert int(again.stdout.split()[0]) == written  # loaded, not written twice


def test_a_negative_threshold_is_refused(tmp_path):
    import pytest

    import jaxreg

    with pytest.raises(ValueError, match="min_compile_seconds"):
        jaxreg.enable_compilation_cache(tmp_path, min_compile_seconds=-1.0)
