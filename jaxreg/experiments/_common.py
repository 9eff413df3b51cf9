"""Shared plumbing for the experiment scripts: output folder, verdict line, JSON result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("jaxreg-experiments")  # relative to where the command runs


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for JSON and figure")
    parser.add_argument(
        "--full", action="store_true", help="the full configuration (slower), where one exists"
    )
    return parser.parse_args()


def report(name: str, claim: str, evidence: dict[str, Any], passed: bool, out: Path) -> int:
    """Print the claim, the evidence and PASS/FAIL; write ``out/name.json``; return an exit code."""
    out.mkdir(parents=True, exist_ok=True)
    verdict = "PASS" if passed else "FAIL"
    print(f"claim: {claim}")
    for key, value in evidence.items():
        print(f"  {key}: {value}")
    print(f"{verdict}: {name}")
    result = {"name": name, "claim": claim, "evidence": evidence, "verdict": verdict}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    return 0 if passed else 1


def mnist1d_mlp(hyper, rngs):
    """The overfitting baseline, 40-100-100-10 (``hyper`` unused)."""
    from jaxreg.nn import MLP

    del hyper
    return MLP((40, 100, 100, 10), rngs=rngs)


def train_mnist1d(
    hyper, seeds: int, make_run, *, make_model=mnist1d_mlp, num_epochs: int = 100, key_seed: int = 0
):
    """Train a model on MNIST-1D for every value in ``hyper`` × ``seeds``, vmapped in one compile.

    ``make_model(h, rngs)`` builds the NNX model (``h`` may set e.g. a dropout
    rate); ``make_run(h)`` returns ``dict(optimizer=..., **fit_kwargs)``. Both get
    one traced hyperparameter value. Returns ``(history, params, dataset,
    apply)``, histories and params shaped ``(len(hyper), seeds, ...)``; ``apply``
    is for a model built with the first value of ``hyper``.
    """
    import jax
    import jax.numpy as jnp

    from jaxreg import data, fit
    from jaxreg.nn import init_params

    dataset = data.mnist1d()
    init_key, train_key = jax.random.split(jax.random.key(key_seed))
    init_keys = jax.random.split(init_key, seeds)
    keys = jax.random.split(train_key, seeds)

    def one(h, init_k, k):
        apply, params = init_params(lambda rngs: make_model(h, rngs), init_k[None])
        params = jax.tree.map(lambda a: a[0], params)
        options = dict(make_run(h))
        optimizer = options.pop("optimizer")
        result = fit(
            apply,
            params,
            optimizer,
            (dataset.x_train, dataset.y_train),
            key=k,
            num_epochs=num_epochs,
            batch_size=100,
            eval_data=(dataset.x_test, dataset.y_test),
            **options,
        )
        return result.history, result.params

    over_seeds = jax.vmap(one, in_axes=(None, 0, 0))
    history, trained = jax.jit(jax.vmap(over_seeds, in_axes=(0, None, None)))(
        jnp.asarray(hyper, jnp.float32), init_keys, keys
    )
    apply, _ = init_params(lambda rngs: make_model(hyper[0], rngs), init_keys[:1])
    return history, trained, dataset, apply


def rounded(values, digits: int = 4) -> list:
    """A JSON-friendly list of Python floats rounded to ``digits``."""
    import numpy as np

    return [round(float(v), digits) for v in np.ravel(values)]
