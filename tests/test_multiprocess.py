"""Two real processes under ``jax.distributed`` (loopback only, CPU collectives over gloo).

Each process has 2 CPU devices; together they form a 4-device mesh. Every
process must get the single-process result of a sweep (also when it resumes
from a shared ``out_dir``) and of ``top_eigenvalues`` on data sharded across
both processes.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

WORKER = textwrap.dedent(
    """
    import json, os, sys
    process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
        initialization_timeout=60,
    )
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from tests.test_multiprocess import problem, train_fn, CONFIGS
    from jaxreg import sharpness, sweeps

    assert jax.process_count() == 2 and jax.device_count() == 4
    first = sweeps.run(train_fn, CONFIGS, key=jax.random.key(0), seeds=2, mesh="auto",
                       chunk_size=4, out_dir=f"{out}/sweep", progress=False)
    again = sweeps.run(train_fn, CONFIGS, key=jax.random.key(0), seeds=2, mesh="auto",
                       chunk_size=4, out_dir=f"{out}/sweep", progress=False)
    loss_fn, params, batches = problem()
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
    sharded = jax.tree.map(
        lambda a: jax.make_array_from_callback(a.shape, sharding, lambda i, a=a: np.asarray(a)[i]),
        batches,
    )
    top = jax.jit(lambda b: sharpness.top_eigenvalues(
        loss_fn, params, b, key=jax.random.key(1), k=2)[0])(sharded)
    json.dump(
        {
            "first": np.asarray(first.metrics["loss"]).tolist(),
            "again": np.asarray(again.metrics["loss"]).tolist(),
            "top": np.asarray(top.addressable_data(0)).tolist(),
        },
        open(f"{out}/result_{process_id}.json", "w"),
    )
    print("WORKER OK", process_id)
    """
)


def train_fn(config, key):
    import jax.numpy as jnp

    noise = 0.01 * jax.random.normal(key)
    return {"loss": (config["x"] - 1.0) ** 2 + noise + 0.0 * jnp.sum(config["y"])}


CONFIGS = {"x": np.linspace(0.0, 3.0, 5), "y": np.arange(5.0)}


def problem():
    import jax.numpy as jnp

    from jaxreg import data
    from jaxreg.losses import classification_loss

    def apply(params, x, **_):
        return jnp.tanh(x @ params["w1"]) @ params["w2"]

    params = {
        "w1": jax.random.normal(jax.random.key(3), (5, 8)) * 0.5,
        "w2": jax.random.normal(jax.random.key(4), (8, 3)) * 0.5,
    }
    x = jax.random.normal(jax.random.key(5), (40, 5))
    y = jax.random.randint(jax.random.key(6), (40,), 0, 3)
    return classification_loss(apply), params, data.batches(x, y, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_get_the_single_process_results(tmp_path):
    from jaxreg import sharpness, sweeps

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    port = str(_free_port())
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), port, str(tmp_path)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            pytest.fail("the two processes did not finish in 240 s")
    for i, log in enumerate(logs):
        assert f"WORKER OK {i}" in log, log[-3000:]

    single = sweeps.run(train_fn, CONFIGS, key=jax.random.key(0), seeds=2, progress=False)
    loss_fn, params, batches = problem()
    top = sharpness.top_eigenvalues(loss_fn, params, batches, key=jax.random.key(1), k=2)[0]
    for i in range(2):
        result = json.loads((tmp_path / f"result_{i}.json").read_text())
        np.testing.assert_allclose(result["first"], single.metrics["loss"], rtol=1e-5)
        np.testing.assert_allclose(result["again"], result["first"], rtol=0)  # resumed from disk
        np.testing.assert_allclose(result["top"], top, rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "sweep").glob("chunk_*.npz")) == [
        "chunk_00000.npz",
        "chunk_00001.npz",
        "chunk_00002.npz",
    ]
