"""Curvature, sharpness and landscapes on data sharded over 8 simulated CPU devices.

The data's example axis (axis 1 of ``(num_batches, batch_size, ...)``) is split
over a device mesh with ``NamedSharding``; every function must give the
single-device result. Runs in a subprocess, since the device count is fixed
when JAX starts.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import chex
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxreg import data, landscape, sharpness
    from jaxreg.losses import classification_loss
    from jaxreg.nn import MLP, functional

    assert jax.device_count() == 8, jax.devices()
    apply, params = functional(MLP((8, 16, 4), activation="tanh", rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (120, 8))
    y = jax.random.randint(jax.random.key(2), (120,), 0, 4)
    batches = data.batches(x, y, 32)  # 120 = 3·32 + 24: a padded last batch
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.device_put(batches, NamedSharding(mesh, PartitionSpec(None, "data")))
    assert len(sharded["x"].sharding.device_set) == 8
    loss_fn = classification_loss(apply)
    key = jax.random.key(0)
    v = jax.tree.map(jnp.ones_like, params)
    fns = {
        "hvp": lambda b: sharpness.hvp(loss_fn, params, b)(v),
        "top_eigenvalues": lambda b: sharpness.top_eigenvalues(
            loss_fn, params, b, key=key, k=3)[0],
        "hessian_trace": lambda b: sharpness.hessian_trace(
            loss_fn, params, b, key=key, num_samples=9)[0],
        "spectral_density": lambda b: sharpness.spectral_density(
            loss_fn, params, b, key=key, num_iters=12, num_runs=2)[1],
        "sam_sharpness": lambda b: sharpness.sam_sharpness(loss_fn, params, b, 0.05),
        "slice_1d": lambda b: landscape.slice_1d(loss_fn, params, b, key=key, resolution=5)[1],
    }
    for name, fn in fns.items():
        chex.assert_trees_all_close(
            jax.jit(fn)(sharded), jax.jit(fn)(batches), rtol=2e-4, atol=1e-6
        )
        print(name, "ok")
    print("DATA PARALLEL OK")
    """
)


def test_sharded_data_gives_the_single_device_result():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "DATA PARALLEL OK" in out.stdout, out.stdout + out.stderr
