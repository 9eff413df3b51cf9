"""Early stopping inside jit/scan/vmap against a plain Python loop, and inside fit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit
from jaxreg.nn import MLP, functional
from jaxreg.training import EarlyStopping, HostOptions
from jaxreg.training import early_stopping as es


def python_early_stopping(metrics, params_seq, patience, min_delta=0.0, mode="min"):
    """Keras's rule, written as the obvious loop."""
    sign = 1 if mode == "min" else -1
    best, best_step, best_params, wait = np.inf, -1, params_seq[0], 0
    for step, (metric, params) in enumerate(zip(metrics, params_seq, strict=True)):
        if np.isfinite(metric) and sign * metric < best - min_delta:
            best, best_step, best_params, wait = sign * metric, step, params, 0
        else:
            wait += 1
            if wait >= patience:
                return best_step, best_params, step
    return best_step, best_params, -1


def test_scan_matches_the_python_loop_on_random_metric_sequences():
    rng = np.random.default_rng(0)
    for trial in range(20):
        metrics = rng.normal(size=30).cumsum() * 0.1 + np.linspace(3, 0, 30)
        metrics[rng.integers(0, 30)] = np.nan
        params_seq = [np.full(2, float(i)) for i in range(30)]
        patience = int(rng.integers(0, 6))
        min_delta = float(rng.choice([0.0, 0.05]))
        mode = "min" if trial % 2 else "max"

        def body(state, inputs):
            metric, params = inputs
            return es.update(state, metric, params), None

        state, _ = jax.lax.scan(
            body,
            es.init(jnp.zeros(2), patience, min_delta, mode),
            (jnp.asarray(metrics, jnp.float32), jnp.asarray(np.stack(params_seq), jnp.float32)),
        )
        best_step, best_params, stop_step = python_early_stopping(
            np.asarray(metrics, np.float32), params_seq, patience, min_delta, mode
        )
        assert int(state.best_step) == best_step
        assert int(state.stop_step) == stop_step
        assert bool(state.stopped) == (stop_step >= 0)
        np.testing.assert_array_equal(state.best_params, best_params)


def test_mode_max_min_delta_and_nan():
    state = es.init(jnp.zeros(()), patience=2, min_delta=0.1, mode="max")
    for acc in [0.5, 0.55, 0.7, jnp.nan, 0.75]:
        state = es.update(state, acc, jnp.asarray(acc))
    assert float(state.best_metric) == pytest.approx(0.7)  # 0.55 and 0.75 are within min_delta
    assert int(state.best_step) == 2 and bool(state.stopped) and int(state.stop_step) == 4
    nan_state = es.update(es.init(jnp.zeros(()), 3), jnp.nan, jnp.ones(()))
    assert int(nan_state.best_step) == -1 and np.isinf(float(nan_state.best_metric))


def _problem():
    x = jax.random.normal(jax.random.key(0), (200, 6))
    y = (x[:, 0] + 0.8 * jax.random.normal(jax.random.key(1), (200,)) > 0).astype(jnp.int32)
    xv = jax.random.normal(jax.random.key(2), (100, 6))
    yv = (xv[:, 0] + 0.8 * jax.random.normal(jax.random.key(3), (100,)) > 0).astype(jnp.int32)
    apply, params = functional(MLP((6, 64, 2), rngs=nnx.Rngs(0)))
    return apply, params, (x, y), (xv, yv)


def test_vmapped_fit_over_8_configs_equals_each_config_alone():
    apply, params, train, val = _problem()
    patiences = jnp.array([1, 2, 3, 5, 1, 2, 3, 100], jnp.float32)
    rates = jnp.array([0.3, 0.3, 0.1, 0.1, 0.03, 0.03, 0.01, 0.3])

    def run(patience, lr):
        return fit(
            apply,
            params,
            optax.adam(lr),
            train,
            key=jax.random.key(4),
            num_epochs=25,
            batch_size=50,
            eval_data=val,
            early_stopping=EarlyStopping(patience),
        )

    chex.clear_trace_counter()
    swept = jax.jit(jax.vmap(chex.assert_max_traces(run, n=1)))(patiences, rates)
    stops = np.asarray(swept.early_stopping.stop_step)
    assert len(set(stops.tolist())) > 2  # members really stop at different epochs
    run_alone = jax.jit(run)  # one compile for the 8 unbatched references
    for i in range(8):
        alone = run_alone(patiences[i], rates[i])
        member = jax.tree.map(lambda a, i=i: a[i], swept)
        assert int(member.early_stopping.stop_step) == int(alone.early_stopping.stop_step)
        assert int(member.early_stopping.best_step) == int(alone.early_stopping.best_step)
        chex.assert_trees_all_close(member.params, alone.params, rtol=1e-5, atol=1e-6)
        # Independent check of the best epoch from the history itself.
        eval_loss = np.asarray(member.history["eval_loss"])
        stop = int(member.early_stopping.stop_step)
        upto = eval_loss[: stop + 1] if stop >= 0 else eval_loss
        assert int(member.early_stopping.best_step) == int(np.argmin(upto))


def test_stopped_members_stay_bitwise_frozen():
    apply, params, train, val = _problem()
    result = fit(
        apply,
        params,
        optax.adam(0.3),
        train,
        key=jax.random.key(4),
        num_epochs=30,
        batch_size=50,
        eval_data=val,
        early_stopping=EarlyStopping(1),
    )
    stop = int(result.early_stopping.stop_step)
    assert 0 <= stop < 29
    history = {k: np.asarray(v) for k, v in result.history.items()}
    for name in ("eval_loss", "train_accuracy"):
        assert np.all(history[name][stop:] == history[name][stop])
    assert history["stopped"][stop:].all() and not history["stopped"][:stop].any()
    plain = fit(
        apply,
        params,
        optax.adam(0.3),
        train,
        key=jax.random.key(4),
        num_epochs=30,
        batch_size=50,
        eval_data=val,
    )
    assert not np.all(
        np.asarray(plain.history["eval_loss"])[stop:]
        == np.asarray(plain.history["eval_loss"])[stop]
    )


def test_host_loop_ends_early_when_stopped():
    apply, params, train, val = _problem()
    result = fit(
        apply,
        params,
        optax.adam(0.3),
        train,
        key=jax.random.key(4),
        num_epochs=200,
        batch_size=50,
        eval_data=val,
        early_stopping=EarlyStopping(1),
        host=HostOptions(epochs_per_chunk=5),
    )
    stop = int(result.early_stopping.stop_step)
    assert len(result.history["eval_loss"]) == 5 * (stop // 5 + 1) < 200


def test_bad_input():
    with pytest.raises(ValueError, match="patience"):
        es.init(jnp.zeros(2), -1)
    with pytest.raises(ValueError, match="mode"):
        es.init(jnp.zeros(2), 3, mode="best")
    with pytest.raises(ValueError, match="min_delta"):
        es.init(jnp.zeros(2), 3, min_delta=-0.1)
    apply, params, train, _ = _problem()
    with pytest.raises(ValueError, match="monitor"):
        fit(
            apply,
            params,
            optax.sgd(0.1),
            train,
            key=jax.random.key(0),
            num_epochs=2,
            batch_size=50,
            early_stopping=EarlyStopping(3, monitor="eval_loss"),
        )
