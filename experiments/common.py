"""Shared plumbing for the experiment scripts: output folder, verdict line, JSON result."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxreg.io import write_json

DEFAULT_OUT = Path("jaxreg-experiments")  # relative to where the command runs
#: ``--confirm`` adds this to every training key: seeds no recorded run has used before.
CONFIRMATORY_SEED = 1000


def parse_args(description: str, *, control: str | None = None) -> argparse.Namespace:
    """The experiments' command line: ``--out``, ``--quick``/``--full`` and, where the
    script has one, ``--control`` (its negative control, described by ``control``)."""
    parser = argparse.ArgumentParser(description=description)
    if control is not None:
        parser.add_argument("--control", action="store_true", help=control)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for JSON and figure")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="the reduced configuration the test suite runs (fewer epochs, rates or members)",
    )
    mode.add_argument(
        "--full", action="store_true", help="extra parts beyond the report's configuration"
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help=f"confirmatory run: the pre-registered configuration on fresh seeds (every "
        f"training key offset by {CONFIRMATORY_SEED})",
    )
    args = parser.parse_args()
    args.seed = CONFIRMATORY_SEED if args.confirm else 0
    return args


def configuration(args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]) -> dict:
    """``quick`` under ``--quick``, else ``full``; the chosen name is under ``"configuration"``
    and the seed base (0, or :data:`CONFIRMATORY_SEED` with ``--confirm``) under ``"seed"``."""
    chosen = quick if args.quick else full
    return {**chosen, "configuration": "quick" if args.quick else "full", "seed": args.seed}


#: Exit status of an experiment whose claim FAILed: it ran to its verdict. Distinct from 1,
#: the status of a Python crash, so a script or CI can tell a failed claim from a failure to
#: run (PASS exits 0).
EXIT_FAIL = 3


def report(name: str, claim: str, evidence: dict[str, Any], passed: bool, out: Path) -> int:
    """Print the claim, the evidence and PASS/FAIL; write ``out/name.json``; return the exit
    status (0 PASS, :data:`EXIT_FAIL` FAIL)."""
    out.mkdir(parents=True, exist_ok=True)
    verdict = "PASS" if passed else "FAIL"
    print(f"claim: {claim}")
    for key, value in evidence.items():
        print(f"  {key}: {value}")
    print(f"{verdict}: {name}")
    result = {"name": name, "claim": claim, "evidence": evidence, "verdict": verdict}
    write_json(out / f"{name}.json", result)
    return 0 if passed else EXIT_FAIL


def mnist1d_mlp(hyper, rngs):
    """The overfitting baseline, 40-100-100-10 (``hyper`` unused)."""
    from jaxreg.nn import MLP

    del hyper
    return MLP((40, 100, 100, 10), rngs=rngs)


class MNIST1D(NamedTuple):
    """An experiment's MNIST-1D: training data, a validation split or None, test behind a lock.

    ``test`` is a :class:`jaxreg.data.HeldOut`: ``test.read()`` raises until the script
    calls ``test.unlock()``, which it does once its choices are made (or at the start,
    saying why, when it makes none). No experiment reads test any other way.
    """

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    test: Any


def mnist1d_data(*, validation: bool) -> MNIST1D:
    """MNIST-1D with the tour's validation split (500 of the 4,000 training examples, fixed
    seed) when ``validation``, else all 4,000 for training; test locked either way."""
    from experiments.study import StudyConfig, prepare_data
    from jaxreg import data

    dataset = data.mnist1d()
    test = data.HeldOut(np.asarray(dataset.x_test), np.asarray(dataset.y_test))
    if not validation:
        return MNIST1D(dataset.x_train, dataset.y_train, None, None, test)
    split = prepare_data(dataset, StudyConfig())
    return MNIST1D(split.x_train, split.y_train, split.x_val, split.y_val, test)


def train_mnist1d(
    hyper,
    seeds: int,
    make_run,
    *,
    data: MNIST1D,
    make_model=mnist1d_mlp,
    num_epochs: int = 100,
    key_seed: int = 0,
):
    """Train a model on MNIST-1D for every value in ``hyper`` × ``seeds``: one
    :func:`jaxreg.sweeps.run` over the grid ``hyper × seed``, so one compile.

    ``make_model(h, rngs)`` builds the NNX model (``h`` may set e.g. a dropout
    rate); ``make_run(h)`` returns ``dict(optimizer=..., **fit_kwargs)``. Both get
    one traced hyperparameter value. Returns ``(history, params, apply)``, histories and
    params shaped ``(len(hyper), seeds, ...)``; ``apply`` is for a model built with the
    first value of ``hyper``. Training uses ``data``'s training part; the history's
    ``eval_*`` is its validation split when it has one (select on it, unlock and read test
    once at the end), otherwise its test split, which must then be unlocked already (a
    script that chooses nothing). Seed ``s`` initializes from ``split(init_key, seeds)[s]``
    and trains with ``split(train_key, seeds)[s]`` (both from ``key_seed``) for every
    value, so values are compared on the same seeds.
    """
    import jax

    from jaxreg import fit, sweeps
    from jaxreg.nn import init_params

    x_train, y_train = data.x_train, data.y_train
    if data.x_val is not None:
        x_eval, y_eval = data.x_val, data.y_val
    else:
        x_eval, y_eval = data.test.read()
    init_key, train_key = jax.random.split(jax.random.key(key_seed))
    init_keys = jax.random.split(init_key, seeds)
    train_keys = jax.random.split(train_key, seeds)

    def train_fn(config, key):
        del key  # each seed's keys come from key_seed (above), the same for every value
        h, seed = config["hyper"], config["seed"]
        apply, params = init_params(lambda rngs: make_model(h, rngs), init_keys[seed][None])
        params = jax.tree.map(lambda a: a[0], params)
        options = dict(make_run(h))
        optimizer = options.pop("optimizer")
        result = fit(
            apply,
            params,
            optimizer,
            (x_train, y_train),
            key=train_keys[seed],
            num_epochs=num_epochs,
            batch_size=100,
            eval_data=(x_eval, y_eval),
            **options,
        )
        return {"history": result.history, "params": result.params}

    configs = sweeps.grid(hyper=np.asarray(hyper, np.float32), seed=np.arange(seeds))
    sweep = sweeps.run(train_fn, configs, key=init_key, progress=False)
    by_value = jax.tree.map(lambda a: a.reshape(len(hyper), seeds, *a.shape[1:]), sweep.metrics)
    apply, _ = init_params(lambda rngs: make_model(hyper[0], rngs), init_keys[:1])
    return by_value["history"], by_value["params"], apply


def train_members(run, *member_args):
    """``run(*args_i)`` for every member ``i`` of ``member_args`` (pytrees with a leading
    member axis: initial params, keys, bootstrap weights, ...), as one :func:`jaxreg.sweeps.run`.

    The member index is the sweep's one config axis, so member ``i`` trains from exactly
    its own slices (the seeds a script fixed stay its seeds) and the whole set is one
    compile. Returns ``run``'s outputs stacked along the member axis (host arrays).
    """
    import jax

    from jaxreg import sweeps

    count = len(jax.tree.leaves(member_args[0])[0])

    def train_fn(config, key):
        del key  # each member's randomness is its own slice of member_args
        index = config["member"]
        return run(*jax.tree.map(lambda a: a[index], member_args))

    configs = sweeps.grid(member=np.arange(count))
    return sweeps.run(train_fn, configs, key=jax.random.key(0), progress=False).metrics


def vmapped_curvature(loss_fn, batches, *, keys: tuple[int, int] = (1, 2), iterations: int = 30):
    """``(top_eigenvalue, trace)``: jitted functions of stacked params (leading member axis)
    giving each member's λmax (Lanczos, ``iterations`` steps) and Hutch++ trace
    (``iterations`` probes) of ``loss_fn`` over ``batches``, keyed by ``keys``.

    Each is a vmapped jit of its own: several loops in one vmapped program over 3+ models
    deadlock XLA:CPU (jaxlib 0.10.2; docs/conventions.md).
    """
    import jax

    from jaxreg import sharpness

    top_key, trace_key = keys
    top = jax.jit(
        jax.vmap(
            lambda p: sharpness.top_eigenvalues(
                loss_fn, p, batches, key=jax.random.key(top_key), num_iters=iterations
            )[0][0]
        )
    )
    trace = jax.jit(
        jax.vmap(
            lambda p: sharpness.hessian_trace(
                loss_fn, p, batches, key=jax.random.key(trace_key), num_samples=iterations
            )[0]
        )
    )
    return top, trace


def rounded(values, digits: int = 4) -> list:
    """A JSON-friendly list of Python floats rounded to ``digits``."""
    return [round(float(v), digits) for v in np.ravel(values)]


def provenance(elapsed: float) -> dict:
    """Commit (and whether the tree had changes), UTC date, host and library versions."""
    import datetime
    import os
    import platform
    from importlib import metadata

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "commit": git("rev-parse", "HEAD"),
        # Results written by this very recording do not count as changes to the code.
        "uncommitted_changes": bool(
            git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!*results/*.json")
        ),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "versions": versions,
        "elapsed_seconds": round(elapsed, 1),
    }
