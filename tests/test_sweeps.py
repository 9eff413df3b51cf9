"""Sweeps against a plain loop of single runs; chunking, failures, resume, sharding."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit, sweeps
from jaxreg.nn import MLP, functional

X = jax.random.normal(jax.random.key(0), (96, 6))
Y = (X[:, 0] - X[:, 1] > 0).astype(jnp.int32)
APPLY, PARAMS = functional(MLP((6, 16, 2), rngs=nnx.Rngs(0)))


def train_fn(config, key):
    optimizer = optax.chain(optax.add_decayed_weights(config["wd"]), optax.sgd(config["lr"]))
    result = fit(APPLY, PARAMS, optimizer, (X, Y), key=key, num_epochs=4, batch_size=32)
    return {
        "accuracy": result.history["train_accuracy"][-1],
        "loss": result.history["train_loss"][-1],
    }


CONFIGS = sweeps.grid(lr=[0.01, 0.03, 0.1, 0.3], wd=[0.0, 1e-4, 1e-3, 1e-2])


def test_sweep_equals_a_loop_of_single_runs_and_traces_once():
    chex.clear_trace_counter()
    counted = chex.assert_max_traces(train_fn, n=1)
    result = sweeps.run(counted, CONFIGS, key=jax.random.key(1), seeds=2, progress=False)
    assert result.metrics["accuracy"].shape == (32,)
    seed_keys = jax.random.split(jax.random.key(1), 2)
    for m in range(32):
        i, s = m // 2, m % 2
        config = {k: jnp.asarray(v[i]) for k, v in CONFIGS.items()}
        single = jax.jit(train_fn)(config, seed_keys[s])
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, m=m: a[m], result.metrics), single, rtol=1e-5, atol=1e-6
        )
    chunked = sweeps.run(
        train_fn, CONFIGS, key=jax.random.key(1), seeds=2, chunk_size=5, progress=False
    )
    chex.assert_trees_all_close(chunked.metrics, result.metrics, rtol=1e-5, atol=1e-6)
    table = result.to_dataframe()
    assert list(table.columns[:4]) == ["lr", "wd", "seed", "failed"] and len(table) == 32
    best = result.best("accuracy", "max")
    assert best["accuracy"] == pytest.approx(
        table.groupby(result.config_index)["accuracy"].mean().max()
    )
    summary = result.summary()
    assert len(summary) == 16 and "accuracy_sd" in summary


def test_compiler_options_reach_the_compile_and_keep_the_results():
    chex.clear_trace_counter()
    plain = sweeps.run(train_fn, CONFIGS, key=jax.random.key(1), progress=False)
    counted = chex.assert_max_traces(train_fn, n=1)
    fast = sweeps.run(
        counted,
        CONFIGS,
        key=jax.random.key(1),
        progress=False,
        compiler_options={"xla_backend_optimization_level": 0},
    )
    chex.assert_trees_all_close(fast.metrics, plain.metrics, rtol=1e-5, atol=1e-6)
    # The options are the compiler's: a misspelt one fails instead of being ignored.
    with pytest.raises(Exception, match="xla_backend_optimisation_level"):
        sweeps.run(
            train_fn,
            CONFIGS,
            key=jax.random.key(1),
            progress=False,
            compiler_options={"xla_backend_optimisation_level": 0},
        )


def test_a_diverging_member_is_flagged_and_does_not_touch_the_others():
    configs = {"lr": np.array([0.01, 0.1, 1e12, 0.3]), "wd": np.zeros(4)}
    with_bad = sweeps.run(train_fn, configs, key=jax.random.key(1), progress=False)
    assert with_bad.failed.tolist() == [False, False, True, False]
    clean = {"lr": np.array([0.01, 0.1, 0.2, 0.3]), "wd": np.zeros(4)}
    without = sweeps.run(train_fn, clean, key=jax.random.key(1), progress=False)
    for m in (0, 1, 3):  # same chunk shapes: bitwise
        assert with_bad.metrics["loss"][m] == without.metrics["loss"][m]
    assert with_bad.best("accuracy")["lr"] != 1e12


def test_kill_and_resume_and_corrupted_chunks(tmp_path):
    calls = []

    def counting(config, key):
        jax.debug.callback(lambda: calls.append(1))
        return train_fn(config, key)

    reference = sweeps.run(train_fn, CONFIGS, key=jax.random.key(1), chunk_size=4, progress=False)
    sweeps.run(
        train_fn, CONFIGS, key=jax.random.key(1), chunk_size=4, out_dir=tmp_path, progress=False
    )
    files = sorted(tmp_path.glob("chunk_*.npz"))
    assert len(files) == 4
    files[2].unlink()  # "killed" before chunks 2 and 3 were written
    files[3].write_bytes(files[3].read_bytes()[:100])  # a half-written file
    resumed = sweeps.run(
        counting, CONFIGS, key=jax.random.key(1), chunk_size=4, out_dir=tmp_path, progress=False
    )
    assert len(calls) == 2  # one call per computed chunk: only the two missing ones ran
    chex.assert_trees_all_equal(resumed.metrics, reference.metrics)
    with pytest.raises(ValueError, match="different sweep"):
        sweeps.run(
            train_fn,
            sweeps.grid(lr=[0.5], wd=[0.0]),
            key=jax.random.key(1),
            chunk_size=4,
            out_dir=tmp_path,
            progress=False,
        )


def test_random_configs_and_bad_input():
    configs = sweeps.random(
        jax.random.key(0),
        50,
        lr=sweeps.LogUniform(1e-4, 1e-1),
        wd=sweeps.Uniform(0.0, 0.1),
        depth=sweeps.Choice([1, 2, 3]),
    )
    assert configs["lr"].min() >= 1e-4 and configs["lr"].max() < 1e-1
    assert set(configs["depth"].tolist()) == {1, 2, 3}
    with pytest.raises(ValueError, match="leading length"):
        sweeps.run(train_fn, {"lr": np.ones(3), "wd": np.ones(2)}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="chunk_size"):
        sweeps.run(train_fn, CONFIGS, key=jax.random.key(0), chunk_size=0)
    with pytest.raises(ValueError, match="seeds"):
        sweeps.run(train_fn, CONFIGS, key=jax.random.key(0), seeds=0)


def test_process_count_one_path():
    assert jax.process_count() == 1  # the multi-host path reduces to this in tests
    result = sweeps.run(
        train_fn,
        sweeps.grid(lr=[0.1], wd=[0.0]),
        key=jax.random.key(0),
        mesh="auto",
        progress=False,
    )
    assert result.metrics["accuracy"].shape == (1,)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    jax.config.update("jax_num_cpu_devices", 8)
    import tests.test_sweeps as t
    from jaxreg import sweeps
    assert jax.device_count() == 8, jax.devices()
    sharded = sweeps.run(t.train_fn, t.CONFIGS, key=jax.random.key(1), seeds=2, mesh="auto",
                         chunk_size=8, progress=False)
    plain = sweeps.run(t.train_fn, t.CONFIGS, key=jax.random.key(1), seeds=2, chunk_size=8,
                       progress=False)
    for name in ("accuracy", "loss"):
        np.testing.assert_allclose(sharded.metrics[name], plain.metrics[name], rtol=1e-5,
                                   atol=1e-6)
    print("SHARDED OK")
""")


def test_sharded_over_8_simulated_devices_equals_unsharded():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "SHARDED OK" in out.stdout, out.stdout + out.stderr


def test_a_second_run_with_the_same_train_fn_and_chunks_reuses_the_compiled_program():
    traces = []

    def train_fn(config, key):
        traces.append(1)  # runs at trace time only
        return {"loss": (config["x"] - 1.0) ** 2 + 0.0 * jax.random.normal(key)}

    first = sweeps.run(
        train_fn,
        sweeps.grid(x=[0.0, 1.0, 2.0]),
        key=jax.random.key(0),
        seeds=2,
        chunk_size=2,
        progress=False,
    )
    second = sweeps.run(
        train_fn, {"x": [5.0]}, key=jax.random.key(1), seeds=2, chunk_size=2, progress=False
    )
    assert len(traces) == 1
    np.testing.assert_allclose(first.metrics["loss"], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(second.metrics["loss"], [16.0, 16.0])
    with pytest.raises(ValueError, match="never reads"):  # the cached read set still checks
        sweeps.run(
            train_fn,
            {"x": [1.0], "typo": [2.0]},
            key=jax.random.key(1),
            seeds=2,
            chunk_size=2,
            progress=False,
        )


def test_fixed_values_reach_every_member_as_constants_and_typos_in_them_raise():
    seen = []

    def train_fn(config, key):
        seen.append(type(config["scale"]))
        return {"value": config["scale"] * config["x"] + 0.0 * jax.random.normal(key)}

    configs = sweeps.grid(x=[1.0, 2.0, 3.0])
    result = sweeps.run(
        train_fn, configs, key=jax.random.key(0), fixed={"scale": 10.0}, progress=False
    )
    np.testing.assert_allclose(result.metrics["value"], [10.0, 20.0, 30.0])
    assert seen == [float]  # traced once, the fixed value a Python number (not a tracer)
    as_array = sweeps.run(
        train_fn, configs, key=jax.random.key(0), fixed={"scale": jnp.float32(2.0)}, progress=False
    )
    np.testing.assert_allclose(as_array.metrics["value"], [2.0, 4.0, 6.0])
    assert seen[1] is np.float32  # a 0-d array arrives as a NumPy scalar of its dtype
    with pytest.raises(ValueError, match="scael"):
        sweeps.run(
            train_fn,
            configs,
            key=jax.random.key(0),
            fixed={"scale": 1.0, "scael": 2.0},
            progress=False,
        )
    with pytest.raises(ValueError, match=r"fixed and configs both set \['x'\]"):
        sweeps.run(train_fn, configs, key=jax.random.key(0), fixed={"x": 1.0, "scale": 1.0})
    with pytest.raises(ValueError, match=r"fixed\['scale'\] must be a number"):
        sweeps.run(train_fn, configs, key=jax.random.key(0), fixed={"scale": "big"})
