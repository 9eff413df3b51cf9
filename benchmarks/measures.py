"""Generalization measures for a sweep in one call against one model at a time.

Workload: 200 MLPs 40-32-10 (independent initializations, 2 Adam epochs each so
that they differ), their 23 measures on 1,000 MNIST-1D training examples.

- **sweep:** :func:`jaxreg.generalization.measure_sweep` over the stack of 200,
  steady (a second call, the programs compiled).
- **one at a time:** each measure alone, jitted for one model, steady; the slowest
  measure's time × 200 (a lower bound for measuring the sweep model by model, one
  measure: the whole set costs more).

Target (issue 33): sweep ≤ 2 × (slowest measure alone × 200). Also reported: every
measure's one-model time, and the sweep's first call (compile included).

Run: ``python -m benchmarks.measures``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from benchmarks._machine import describe
from jaxreg import data, fit, generalization, sharpness
from jaxreg.generalization.measures import FAMILIES
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, init_params

MODELS, SIZES = 200, (40, 32, 10)
RESULT = Path(__file__).parent / "results" / "measures.json"


def _timed(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def _models(x, y):
    apply, initial = init_params(
        lambda r: MLP(SIZES, rngs=r), jax.random.split(jax.random.key(0), MODELS)
    )

    def train(params, key):
        return fit(
            apply, params, optax.adam(3e-3), (x, y), key=key, num_epochs=2, batch_size=100
        ).params

    trained = jax.jit(jax.vmap(train))(initial, jax.random.split(jax.random.key(1), MODELS))
    return apply, trained, initial


def _one_model_times(apply, params, init, batches, key) -> dict[str, float]:
    one = jax.tree.map(lambda a: a[0], params)
    first = jax.tree.map(lambda a: a[0], init)
    times = {}
    for family in [f for f in FAMILIES if f != "sharpness"]:
        program = jax.jit(
            lambda p, p0, k, f=family: generalization.generalization_measures(
                apply, p, batches, key=k, init_params=p0, families=(f,)
            )
        )
        times[family] = _timed(program, one, first, key)
    loss_fn = classification_loss(apply)
    # The five sharpness measures with measure_sweep's default settings, one at a time.
    alone = {
        "epsilon_sharpness": lambda p, k: sharpness.epsilon_sharpness(
            loss_fn, p, batches, 1e-3, num_steps=10
        ),
        "adaptive_sharpness": lambda p, k: sharpness.sam_sharpness(
            loss_fn, p, batches, 0.05, adaptive=True, num_steps=5, key=k
        ),
        "pac_bayes_flatness": lambda p, k: sharpness.pac_bayes_flatness(
            loss_fn, p, batches, key=k, target=0.1
        ),
        "lambda_max": lambda p, k: sharpness.top_eigenvalues(
            loss_fn, p, batches, key=k, num_iters=20, tol=0.0
        )[0],
        "hessian_trace": lambda p, k: sharpness.hessian_trace(
            loss_fn, p, batches, key=k, num_samples=24
        )[0],
    }
    for name, measure in alone.items():
        times[name] = _timed(jax.jit(measure), one, key)
    return times


def main() -> None:
    dataset = data.mnist1d()
    x, y = jnp.asarray(dataset.x_train[:1000]), jnp.asarray(dataset.y_train[:1000])
    apply, params, init = _models(x, y)
    batches = data.batches(x, y, 100)
    key = jax.random.key(2)

    def sweep():
        return generalization.measure_sweep(apply, params, batches, key=key, init_params=init)

    start = time.perf_counter()
    sweep()
    first = time.perf_counter() - start
    steady = min(_timed(sweep, repeats=1) for _ in range(2))
    alone = _one_model_times(apply, params, init, batches, key)
    slowest = max(alone, key=alone.get)
    ratio = steady / (alone[slowest] * MODELS)
    record = {
        "machine": describe(),
        "models": MODELS,
        "sizes": list(SIZES),
        "examples": 1000,
        "sweep_steady_s": round(steady, 3),
        "sweep_first_call_s": round(first, 3),
        "one_model_s": {k: round(v, 5) for k, v in alone.items()},
        "slowest_measure": slowest,
        "slowest_times_models_s": round(alone[slowest] * MODELS, 3),
        "all_measures_model_by_model_s": round(sum(alone.values()) * MODELS, 3),
        "ratio_sweep_over_slowest_times_models": round(ratio, 3),
    }
    print(json.dumps(record, indent=1))
    RESULT.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
