"""The tour: the regularization study on MNIST-1D, tuned on validation, run end to end.

Run it from a clone: ``python -m experiments.tour`` (``--quick`` for a smoke run,
``--extended`` for the newer regularizers, ``--seeds N``, ``--out DIR``).

The rows are data (:mod:`experiments.study.spec`); the runner (:mod:`experiments.study.runner`)
turns each into a tuning sweep on validation and a final sweep over shared
seeds; only then is the test split unlocked and read once per final model;
:mod:`experiments.study.report` computes intervals, paired differences and the
sentences. ``report.md``, ``results.json`` and figures go to one folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import CONFIRMATORY_SEED, provenance
from experiments.study import report as report_lib
from experiments.study.runner import (
    StudyConfig,
    StudyData,
    combination_row,
    compiler_options,
    epochs_for,
    prepare_data,
    run_row,
    search,
    training_data,
    transfer,
)
from experiments.study.spec import Row, default_rows, extended_rows
from jaxreg import data as data_lib
from jaxreg import landscape, masks, metrics, sharpness
from jaxreg.io import write_json
from jaxreg.losses import classification_loss
from jaxreg.nn import count_params
from jaxreg.progress import progress_bar
from jaxreg.stats import finite, holm

__all__ = [
    "BAYESIAN_COMPARISONS",
    "FEATURED",
    "bayesian_comparisons",
    "build_parser",
    "epoch_budgets",
    "findings",
    "is_reduced",
    "main",
    "reference_note",
    "render_report",
    "row_names",
    "run_tour",
    "smoke_test_banner",
    "table_legend",
    "with_differences",
]

COMBINATION = "best combination"
WIDE = "wide MLP + combination"
#: What the wide MLP re-tunes for itself (a wider net wants its own step size); the
#: regularization strengths are the small MLP's combination, transferred. The schedule
#: is fixed to a full cosine decay, which an earlier 3 × 2 grid (rates 1e-3, 2e-3, 4e-3 ×
#: decay 0 or 1) chose on validation. The wide MLP is the tour's most expensive row (a
#: member costs ~25 small-MLP members), so its re-tuning runs on WIDE_RETUNE_SEEDS seeds.
WIDE_RETUNE = {"learning_rate": (2e-3, 4e-3), "lr_decay": (1.0,)}
WIDE_RETUNE_SEEDS = 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_reduced(config: StudyConfig) -> bool:
    """True for a run shorter or with fewer seeds than the study's (e.g. ``--quick``): a
    smoke test whose numbers are not findings.

    Example:
      >>> is_reduced(StudyConfig.quick()), is_reduced(StudyConfig())
      (True, False)
    """
    full = StudyConfig()
    sizes = ("seeds", "epochs", "wide_epochs", "cnn_epochs", "search_configs", "tune_seeds")
    return any(getattr(config, name) < getattr(full, name) for name in sizes)


def smoke_test_banner(config: StudyConfig) -> list[str]:
    """The lines a reduced run's report opens with (none for the full study).

    Example:
      >>> smoke_test_banner(StudyConfig())
      []
      >>> smoke_test_banner(StudyConfig.quick())[0][:40]
      '> **Smoke test, not findings.** This is '
    """
    if not is_reduced(config):
        return []
    return [
        f"> **Smoke test, not findings.** This is a reduced run ({config.seeds} seeds, "
        f"{config.epochs} epochs, {config.search_configs} search configurations): it checks "
        "that every row and section runs. Its numbers are not comparable with the full "
        "tour's and its targets are not judged; `python -m experiments.tour` runs the study.",
        "",
    ]


def _target(accuracy: dict, target: float, judged: bool = True) -> str:
    """A target judged by the 95% interval's lower bound, not by the mean."""
    if not judged:
        return f"the {100 * target:.0f}% target is not judged in a reduced run"
    mean, low = accuracy["mean"], accuracy["mean"] - accuracy["half_width"]
    if np.isfinite(low) and low >= target:
        return f"target {100 * target:.0f}% met: the 95% interval's lower bound is {100 * low:.1f}%"
    if mean >= target:
        return (
            f"mean above the {100 * target:.0f}% target, but the 95% interval reaches down "
            f"to {100 * low:.1f}%: not shown"
        )
    return f"misses the {100 * target:.0f}% target by {100 * (target - mean):.2f} points"


def _softmax_outputs(apply, params, x):
    return jax.vmap(lambda p: jax.nn.softmax(apply(p, x)))(params)


class _Programs(NamedTuple):
    """The tour's two measurement programs, jitted once per run at the study's compile level
    (the ``apply`` functions are static: rows of one model share the compiled program)."""

    probabilities: Callable
    curvature: Callable


def _programs(config: StudyConfig) -> _Programs:
    options = compiler_options(config)
    return _Programs(
        jax.jit(_softmax_outputs, static_argnums=(0,), compiler_options=options),
        jax.jit(_curvature, static_argnums=(0, 3), compiler_options=options),
    )


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str):
    """Record the wall time of the ``with`` block as ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start


def _probabilities(programs: _Programs, apply, params, x, seeds: int) -> np.ndarray:
    """Ensemble-mean class probabilities per seed, ``(seeds, n, classes)``."""
    probs = programs.probabilities(apply, params, x)
    return np.asarray(probs, np.float64).reshape(seeds, -1, *probs.shape[1:]).mean(1)


def _predictive_probabilities(row: Row, final, data: StudyData, x_test, hparams) -> np.ndarray:
    """``row.predictive``'s class probabilities per seed (ensemble members averaged), one
    member at a time (a Laplace fit per member), ``(seeds, n, classes)``."""
    x, y = (jnp.asarray(a) for a in training_data(row, data))
    members = jax.tree.leaves(final.params)[0].shape[0]
    keys = jax.random.split(jax.random.key(PREDICTIVE_SEED), members)

    @jax.jit
    def predict(params, key):
        return row.predictive(final.apply, params, x, y, x_test, key=key, hparams=hparams)

    probs = jax.lax.map(lambda args: predict(*args), (final.params, keys))
    probs = np.asarray(probs, np.float64)
    return probs.reshape(-1, final.members_per_seed, *probs.shape[1:]).mean(1)


#: Seed of the predictives' own randomness (MC dropout's masks), the same in every run.
PREDICTIVE_SEED = 17
CURVATURE_EXAMPLES = 1000


def _curvature_batches(data: StudyData):
    """The first 1,000 training examples: curvature of the training loss on a fixed subset
    (the full 3,500 cost minutes per row for the CNN and the wide MLP on 2 cores)."""
    n = CURVATURE_EXAMPLES
    return data_lib.batches(data.x_train[:n], data.y_train[:n], 500)


def _curvature(apply, params, batches, iters: int):
    """Top Hessian eigenvalue and Hutch++ trace of the training loss, per stacked member."""
    loss_fn = classification_loss(apply)

    def measure(p):
        top, _, _ = sharpness.top_eigenvalues(
            loss_fn, p, batches, key=jax.random.key(7), num_iters=iters
        )
        trace, _ = sharpness.hessian_trace(
            loss_fn, p, batches, key=jax.random.key(8), num_samples=iters
        )
        return top[0], trace

    # One member at a time: vmapped convolutions become grouped convolutions, slow on CPU.
    return jax.lax.map(measure, params)


def _measure(outcome: dict, data: StudyData, config: StudyConfig, programs: _Programs) -> dict:
    """Test metrics per seed (reads the unlocked test split once) and curvature of seed 0's
    first member per seed."""
    row: Row = outcome["row"]
    final = outcome["final"]
    seeds = config.seeds
    x_test, y_test = data.test.read()
    if row.predictive is None:
        probs = _probabilities(programs, final.apply, final.params, jnp.asarray(x_test), seeds)
    else:
        hparams = {**row.fixed, **outcome["chosen"]}
        probs = _predictive_probabilities(row, final, data, jnp.asarray(x_test), hparams)
    test_acc = [float(metrics.accuracy(p, y_test)) for p in probs]
    nll = [float(metrics.nll(p, y_test)) for p in probs]
    ece = [float(metrics.ece(p, y_test)) for p in probs]
    train_acc = np.asarray(final.train_accuracy)
    val_acc = np.asarray(final.val_accuracy)
    firsts = jax.tree.map(lambda a: a[:: final.members_per_seed], final.params)
    lam = trace = {"mean": float("nan"), "sd": float("nan")}
    if final.members_per_seed == 1 and not row.derived_from:  # a derived row: same weights
        batches = _curvature_batches(data)
        tops, traces = programs.curvature(final.apply, firsts, batches, config.sharpness_iters)
        lam = report_lib.confidence_interval(np.asarray(tops))
        trace = report_lib.confidence_interval(np.asarray(traces))
    first = jax.tree.map(lambda a: a[0], firsts)
    selected = masks.resolve(masks.weights_only, first)
    kernels = [
        leaf
        for leaf, keep in zip(jax.tree.leaves(first), jax.tree.leaves(selected), strict=True)
        if keep
    ]
    zeros = sum(float(jnp.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    gap = train_acc - np.asarray(test_acc)
    return {
        "name": row.name,
        "key": row.key,
        "reference": row.reference,
        "chosen_by": "validation" if row.evidence is None else "evidence",
        "description": row.description,
        "note": row.note,
        "chosen": outcome["chosen"],
        "num_params": count_params(first) * final.members_per_seed,
        "train_accuracy": report_lib.confidence_interval(train_acc),
        "val_accuracy": report_lib.confidence_interval(val_acc),
        "test_accuracy": report_lib.confidence_interval(test_acc),
        "gap": report_lib.confidence_interval(gap),
        "test_nll": report_lib.confidence_interval(nll),
        "ece": report_lib.confidence_interval(ece),
        "lambda_max": lam,
        "trace": trace,
        "zero_fraction": zeros,
        "per_seed": {
            "train": train_acc.tolist(),
            "val": val_acc.tolist(),
            "test": test_acc,
            "test_nll": nll,
            "ece": ece,
        },
        "_probs": probs[0],
        "_first": first,
        "_apply": final.apply,
        "_curves": {
            "train_accuracy": final.train_curve[:: final.members_per_seed],
            "eval_accuracy": final.val_curve[:: final.members_per_seed],
        },
    }


def _path(outcome: dict, data: StudyData, programs: _Programs) -> dict | None:
    """Validation and test accuracy per grid value (mean, sd over tuning seeds)."""
    tuning = outcome["tuning"]
    row: Row = outcome["row"]
    if tuning is None or len(row.search) != 1:
        return None
    (name,) = row.search
    x_test, y_test = data.test.read()
    seeds = len(tuning.val_accuracy)
    probs = _probabilities(programs, tuning.apply, tuning.params, jnp.asarray(x_test), seeds)
    test = np.mean(np.argmax(probs, -1) == np.asarray(y_test)[None], axis=1)
    values = np.unique(tuning.configs[name])
    out = {"parameter": name, "values": values.tolist(), "chosen": outcome["chosen"][name]}
    for split, acc in (("val", tuning.val_accuracy), ("test", test)):
        means = [float(np.mean(acc[tuning.configs[name] == v])) for v in values]
        sds = [float(np.std(acc[tuning.configs[name] == v])) for v in values]
        out[f"{split}_mean"], out[f"{split}_sd"] = means, sds
    return out


#: The rows the report and figures single out, by stable :attr:`Row.key` (never by name).
#:
#: Example:
#:   >>> from experiments.tour import FEATURED
#:   >>> "cnn" in FEATURED and "baseline" in FEATURED
#:   True
FEATURED = ("baseline", "weight_decay", "l1", "label_smoothing", "cnn")


def run_tour(
    out_dir: str | Path,
    config: StudyConfig | None = None,
    *,
    seed: int = 0,
    extended: bool = False,
) -> dict[str, Any]:
    """Run the study and write ``report.md``, ``results.json`` and figures to ``out_dir``.

    ``extended`` appends :func:`~experiments.study.spec.extended_rows` (max-norm, spectral
    norm, orthogonality, SWA, EMA, input-gradient penalty, R-Drop, SAM as a transform)
    to the single-regularizer rows;
    the default rows keep their keys and seeds, so the flag does not change what they train.

    Returns:
      The results dict written to ``results.json``.

    Example:
      >>> from experiments.study import StudyConfig
      >>> results = run_tour("tour_out", StudyConfig.quick())  # doctest: +SKIP
      >>> [row["name"] for row in results["rows"]][:2]  # doctest: +SKIP
      ['baseline', 'weight decay']

      The quick run above is what ``python -m experiments.tour --quick`` does (a few
      minutes on two CPU cores; tested end to end in the suite); ``run_tour("tour_out")``
      is the full study.
    """
    config = config or StudyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = default_rows() + (extended_rows() if extended else [])
    names = row_names(rows)
    launched = provenance(0.0)  # the code as it was when the run began
    start = time.perf_counter()
    data = _load_data(config)
    outcomes, seconds = _choose_and_train(rows, data, config, jax.random.key(seed))
    _log(
        f"[tour] every choice made on validation ({time.perf_counter() - start:.0f} s); "
        "evaluating on test once"
    )
    data.test.unlock()
    phases = {"choices_and_training": sum(seconds.values())}
    with _timed(phases, "test_metrics_and_curvature"):
        programs = _programs(config)
        measured = _measure_all(outcomes, data, config, programs)
        paths = {name: _path(o, data, programs) for name, o in outcomes.items()}
        paths = {k: v for k, v in paths.items() if v is not None}
    for name, row in measured.items():
        row["seconds"] = seconds[name]
    _log(f"[tour] measured ({time.perf_counter() - start:.0f} s); drawing figures")
    with _timed(phases, "figures"):
        _draw_figures(measured, paths, data, config, names, out)
    elapsed = time.perf_counter() - start
    results = with_differences(
        {
            "config": config.__dict__,
            "protocol": {
                "train": len(data.y_train),
                "validation": len(data.y_val),
                "test": len(data.test),
                "test_reads": data.test.reads,
            },
            "elapsed_seconds": elapsed,
            "phase_seconds": phases,
            "device": jax.devices()[0].device_kind,
            "seed": seed,
            "provenance": {**launched, "elapsed_seconds": round(elapsed, 1)},
            "rows": [
                {k: v for k, v in r.items() if not k.startswith("_")} for r in measured.values()
            ],
            "paths": paths,
        }
    )
    write_json(out / "results.json", results)
    table, report = render_report(results)
    (out / "report.md").write_text(report)
    print(table)
    _log(f"[tour] wrote {out / 'report.md'} in {elapsed:.1f}s")
    return results


def row_names(rows: list[Row]) -> dict[str, str]:
    """Display name by stable key, for every row and the two the tour adds; raises at once
    (before any training) when a row the report needs is missing or two rows share a key.

    Example:
      >>> names = row_names(default_rows())
      >>> names["cnn"], names["combination"]
      ('CNN1D (parameter sharing)', 'best combination')
      >>> row_names(default_rows()[1:])  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: the tour needs rows with the keys ['baseline'] ...
    """
    keys = [row.key for row in rows]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated or not all(keys):
        raise ValueError(f"every row needs its own non-empty key; repeated: {repeated}")
    names = {row.key: row.name for row in rows} | {"combination": COMBINATION, "wide": WIDE}
    missing = [key for key in FEATURED if key not in names]
    if missing:
        raise ValueError(f"the tour needs rows with the keys {missing} (its report features them)")
    return names


def _load_data(config: StudyConfig) -> StudyData:
    if data_lib.mnist1d_cache_path().exists():
        _log(f"[tour] loading MNIST-1D from {data_lib.mnist1d_cache_path()}")
    else:
        _log("[tour] generating MNIST-1D (cached after the first run)")
    return prepare_data(data_lib.mnist1d(), config)


def _wide_config(config: StudyConfig) -> StudyConfig:
    return dataclasses.replace(config, tune_seeds=min(config.tune_seeds, WIDE_RETUNE_SEEDS))


def _combination_rows() -> tuple[Row, Row]:
    """The two rows the tour adds after the single ones: the searched combination and the
    wide MLP that takes its strengths."""
    combo = combination_row(
        COMBINATION,
        "random search over the combinable strengths, learning rate and cosine decay (plus "
        "the single rows' choices)",
        key="combination",
        reference="tuned_baseline",
    )
    wide = combination_row(
        WIDE,
        "MLP 40-512-512-512-10 with the combination's strengths; its learning rate "
        "re-tuned on validation (full cosine decay)",
        model="wide_mlp",
        key="wide",
        reference="tuned_baseline",
    )
    return combo, wide


def _choose_and_train(rows: list[Row], data: StudyData, config: StudyConfig, key: jax.Array):
    """Every row's choice on validation and its final seeds; then the combination and the
    wide MLP. Returns outcomes and wall seconds by display name."""
    final_key = jax.random.fold_in(key, 10_000)  # shared by every row: paired seeds
    outcomes: dict[str, dict] = {}
    seconds: dict[str, float] = {}  # wall time of each row's sweeps (tuning and final)
    bar = progress_bar(len(rows) + 2, desc="tour", unit="row")
    by_key = {row.key: row for row in rows}
    for index, row in enumerate(rows):
        bar.set_postfix_str(row.name)
        with _timed(seconds, row.name):
            if row.derived_from:  # the source's members, predicting through row.predictive
                source = outcomes[by_key[row.derived_from].name]
                outcomes[row.name] = {**source, "row": row, "tuning": None}
            else:
                outcomes[row.name] = run_row(
                    row, data, config, key=jax.random.fold_in(key, index), final_key=final_key
                )
        bar.update()
    bar.set_postfix_str(COMBINATION)
    combo, wide = _combination_rows()
    anchors = {
        name: value
        for row in rows
        if row.combinable
        for name, value in outcomes[row.name]["chosen"].items()
    }
    with _timed(seconds, COMBINATION):
        outcomes[COMBINATION] = search(
            combo,
            data,
            config,
            key=jax.random.fold_in(key, 1000),
            final_key=final_key,
            anchors=anchors,
        )
    bar.update()
    bar.set_postfix_str(WIDE)
    with _timed(seconds, WIDE):
        outcomes[WIDE] = transfer(
            wide,
            outcomes[COMBINATION]["chosen"],
            data,
            _wide_config(config),
            final_key=final_key,
            retune=WIDE_RETUNE,
            key=jax.random.fold_in(key, 2000),
        )
    bar.update()
    bar.close()
    return outcomes, seconds


def _measure_all(outcomes: dict, data: StudyData, config: StudyConfig, programs):
    """Test metrics and curvature of every row (differences: :func:`with_differences`)."""
    bar = progress_bar(len(outcomes), desc="test metrics and curvature", unit="row")
    measured = {}
    for name, outcome in outcomes.items():
        bar.set_postfix_str(name)
        measured[name] = _measure(outcome, data, config, programs)
        bar.update()
    bar.close()
    return measured


def _draw_figures(measured, paths, data: StudyData, config: StudyConfig, names, out: Path):
    from jaxreg import plots

    baseline, combination = names["baseline"], names["combination"]
    plots.regularization_paths(paths, out / "paths.png")
    plots.learning_curves(
        {name: measured[name]["_curves"] for name in (baseline, combination)},
        out / "learning_curves.png",
        eval_name="validation",
    )
    ordered = list(measured.values())
    plots.error_bars(
        [r["name"] for r in ordered],
        np.array([100 * r["test_accuracy"]["mean"] for r in ordered]),
        np.array([100 * r["test_accuracy"]["half_width"] for r in ordered]),
        out / "accuracy.png",
        ylabel="test accuracy (%)",
        title="Test accuracy per row, mean ± 95% CI over seeds",
        limits=(0.0, 100.0),
    )
    _, y_test = data.test.read()  # labels for the reliability bins of the measured rows
    reliability = {}
    for name in (baseline, names["label_smoothing"]):
        bins = metrics.reliability_bins(measured[name]["_probs"], y_test)
        reliability[name] = {
            **{k: np.asarray(v) for k, v in bins.items()},
            "ece": measured[name]["ece"]["mean"],
        }
    plots.reliability_diagram(reliability, out / "reliability.png")
    densities, slices = _curvature_figures(measured, data, config, (baseline, combination))
    plots.spectral_density(densities, out / "spectral_density.png")
    plots.landscapes(slices, out / "landscape.png")
    kernels = {
        name: np.concatenate(
            [np.ravel(leaf) for leaf in jax.tree.leaves(measured[name]["_first"]) if leaf.ndim >= 2]
        )
        for name in (names["weight_decay"], names["l1"])
    }
    plots.weight_histograms(kernels, out / "weights.png")


def _curvature_figures(measured, data: StudyData, config: StudyConfig, shown: tuple[str, ...]):
    """Hessian spectral densities and 2-D loss slices of the ``shown`` rows' first members."""
    train_batches = _curvature_batches(data)
    densities, slices = {}, {}
    for name in shown:
        loss_fn = classification_loss(measured[name]["_apply"])
        density = sharpness.spectral_density(
            loss_fn,
            measured[name]["_first"],
            train_batches,
            key=jax.random.key(9),
            num_iters=2 * config.sharpness_iters,
            num_runs=2,
        )
        densities[name] = (density.grid, density.density)
        slices[name] = landscape.slice_2d(
            loss_fn,
            measured[name]["_first"],
            train_batches,
            key=jax.random.key(10),
            resolution=21 if config.epochs >= 100 else 11,
        )
    return densities, slices


def with_differences(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with every row's difference to its reference recomputed from its per-seed
    test accuracies (:func:`~experiments.study.report.compare_to_references`, Holm-marked),
    and the Bayesian comparisons (:func:`bayesian_comparisons`) when their rows are there.

    A row's reference is the row named by its ``reference`` key (the baseline for a run
    recorded before rows had one).

    Example:
      >>> results = {"rows": [{"name": "baseline", "per_seed": {"test": [0.60, 0.61, 0.59]}},
      ...                     {"name": "dropout", "per_seed": {"test": [0.66, 0.65, 0.66]}}]}
      >>> difference = with_differences(results)["rows"][1]["difference"]
      >>> round(difference["mean"], 3), round(difference["p_holm"], 3), difference["significant"]
      (0.057, 0.023, True)
    """
    rows = [dict(row) for row in results["rows"]]
    baseline = row_names(default_rows() + extended_rows())["baseline"]
    names = {row.get("key", row["name"]): row["name"] for row in rows}
    unknown = sorted({r.get("reference", "baseline") for r in rows} - set(names) - {"baseline"})
    if unknown:
        raise ValueError(f"rows name references {unknown} that are not rows of this run")
    references = {
        row["name"]: names.get(row.get("reference", "baseline"), baseline)
        for row in rows
        if row["name"] != baseline
    }
    per_seed_test = {row["name"]: row["per_seed"]["test"] for row in rows}
    differences = report_lib.compare_to_references(per_seed_test, references)
    for row in rows:
        if row["name"] in differences:
            row["difference"] = differences[row["name"]]
    out = {**results, "rows": rows}
    out.pop("bayesian", None)
    comparisons = bayesian_comparisons(rows)
    return {**out, "bayesian": comparisons} if comparisons else out


#: The Bayesian comparisons by row key: (row, compared with), each on test accuracy, NLL
#: and ECE, Holm-corrected over all of them together.
#:
#: Example:
#:   >>> from experiments.tour import BAYESIAN_COMPARISONS
#:   >>> BAYESIAN_COMPARISONS[0], len(BAYESIAN_COMPARISONS) * 3  # tests in the family
#:   (('evidence_l2', 'l2'), 18)
BAYESIAN_COMPARISONS = (
    ("evidence_l2", "l2"),
    ("laplace", "baseline"),
    ("mc_dropout", "dropout"),
    ("deep_ensemble", "baseline"),
    ("laplace", "mc_dropout"),
    ("laplace", "deep_ensemble"),
)
BAYESIAN_METRICS = ("test", "test_nll", "ece")


def bayesian_comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences (row − compared row, over the shared seeds) in test accuracy, NLL
    and ECE for :data:`BAYESIAN_COMPARISONS`, Holm-marked as one family; empty when the
    run has none of their rows (a run recorded before them).

    Example:
      >>> def row(key, test, nll, ece):
      ...     return {"key": key, "name": key, "per_seed": {"test": test, "test_nll": nll,
      ...                                                   "ece": ece}}
      >>> rows = [row("baseline", [.60, .61, .59], [1.7, 1.8, 1.6], [.25, .24, .26]),
      ...         row("laplace", [.60, .61, .59], [1.2, 1.25, 1.1], [.05, .06, .04])]
      >>> [(c["row"], c["compared_with"]) for c in bayesian_comparisons(rows)]
      [('laplace', 'baseline')]
      >>> round(bayesian_comparisons(rows)[0]["test_nll"]["mean"], 3)
      -0.517
    """
    by_key = {row.get("key"): row for row in rows}
    pairs = [
        (by_key[a], by_key[b])
        for a, b in BAYESIAN_COMPARISONS
        if a in by_key and b in by_key and "test_nll" in by_key[a]["per_seed"]
    ]
    comparisons = [
        {
            "row": row["name"],
            "compared_with": other["name"],
            **{
                metric: report_lib.paired_difference(
                    row["per_seed"][metric], other["per_seed"][metric]
                )
                for metric in BAYESIAN_METRICS
            },
        }
        for row, other in pairs
    ]
    tests = [c[metric] for c in comparisons for metric in BAYESIAN_METRICS]
    for test, p_holm in zip(tests, holm([t["p_value"] for t in tests]), strict=True):
        test["p_holm"] = float(p_holm)
        test["significant"] = bool(np.isfinite(p_holm) and p_holm < report_lib.ALPHA)
    return comparisons


def render_report(results: dict[str, Any]) -> tuple[str, str]:
    """The table and ``report.md`` of a tour from its results alone (no training).

    ``results`` carries each row's difference to the baseline (:func:`with_differences`
    adds them), so a recorded run can be re-read under the current statistics
    (``python -m experiments.tour --from-results results.json``).

    Example:
      >>> import json
      >>> results = json.loads(open("docs/tour_results.json").read())  # doctest: +SKIP
      >>> table, report = render_report(results)  # doctest: +SKIP
    """
    measured = {row["name"]: row for row in results["rows"]}
    names = row_names(default_rows() + extended_rows())
    table = report_lib.format_table(list(measured.values()))
    config = StudyConfig(**results["config"])
    report = "\n".join(
        [
            "# jaxreg tour: regularization on MNIST-1D",
            "",
            *smoke_test_banner(config),
            _protocol(results, config),
            "",
            table,
            "",
            epoch_budgets(config, default_rows() + extended_rows()),
            "",
            *findings(measured, names, judge_targets=not is_reduced(config)),
            "",
            *_bayesian_section(results),
            *report_lib.sentences(measured),
            *_featured(measured, config, names),
            "",
            *_figure_captions(measured, names),
        ]
    )
    return table, report


def _bayesian_section(results: dict[str, Any]) -> list[str]:
    if not results.get("bayesian"):
        return []
    return [
        "## The Bayesian reading",
        "",
        "Paired differences over the shared seeds (row − compared row), 95% intervals; `*` "
        "where Holm's adjusted p-value over these "
        f"{3 * len(results['bayesian'])} tests is below {report_lib.ALPHA}:",
        "",
        report_lib.format_comparisons(results["bayesian"]),
        "",
        *bayesian_findings(results),
        "",
    ]


def _protocol(results, config: StudyConfig) -> str:
    sizes = results["protocol"]
    comparisons = len(results["rows"]) - 1
    return (
        f"Protocol: {sizes['train']} training and {sizes['validation']} validation examples "
        f"(a fixed split of MNIST-1D's training set, seed {config.split_seed}); every strength "
        f"is chosen on validation by a sweep over its grid × {config.tune_seeds} seed(s); the "
        f"choice is then trained on {config.seeds} seeds shared by all rows (the combination: "
        f"a random search of {config.search_configs} configs plus the single rows' choices × "
        f"{config.search_seeds} seed(s)); the "
        f"{sizes['test']} test examples are read only after every choice is made. Accuracies "
        "are mean ± 95% t-interval over seeds; Δ is the paired difference to the baseline "
        "with its 95% interval, * where Holm's adjusted p-value over the "
        f"{comparisons} comparisons is below {report_lib.ALPHA}. λmax: top Hessian "
        "eigenvalue of the training loss on "
        f"{CURVATURE_EXAMPLES} training examples. {config.epochs} epochs (wide MLP "
        f"{config.wide_epochs}, CNN {config.cnn_epochs}); run time "
        f"{results['elapsed_seconds']:.0f} s on {results['device']}."
    )


def _single_rows(rows: dict[str, dict], names: dict[str, str]) -> dict[str, dict]:
    """The rows that add one regularizer to the baseline MLP (not the baseline itself, the
    CNN, the combination or the wide MLP)."""
    keys = ("baseline", "combination", "wide", "cnn", *NOT_SINGLE)
    grouped = {names[key] for key in keys if key in names}
    return {n: r for n, r in rows.items() if n not in grouped}


#: Rows that are not one regularizer added to the baseline's training: the tuned-rate
#: baseline, the predictives on other rows' networks, and the row trained on more data.
NOT_SINGLE = ("tuned_baseline", "laplace", "mc_dropout", "evidence_l2")


def findings(
    measured: dict[str, dict], names: dict[str, str], *, judge_targets: bool = True
) -> list[str]:
    """What the numbers support, as Markdown bullets computed from the rows (the README's list).

    Significance is each row's Holm-corrected mark; targets are judged by the 95%
    interval's lower bound; every superlative is a max/min over the table.

    Example:
      >>> import json
      >>> recorded = Path(__file__).resolve().parents[1] / "docs" / "tour_results.json"
      >>> rows = with_differences(json.loads(recorded.read_text()))["rows"]
      >>> lines = findings({r["name"]: r for r in rows}, row_names(default_rows()))
      >>> lines[0]
      '- The baseline MLP overfits: 100.0% train, 60.3% test.'
      >>> lines[3][:56]
      '- Worse than their reference: large batch (1000) (-6.7 v'
    """
    base = measured[names["baseline"]]
    others = {n: r for n, r in measured.items() if n != names["baseline"]}

    def listed(rows: dict[str, dict]) -> str:
        def against(difference: dict) -> str:
            reference = difference.get("reference", names["baseline"])
            return "" if reference == names["baseline"] else f" vs {reference}"

        return ", ".join(
            f"{n} ({100 * r['difference']['mean']:+.1f}{against(r['difference'])})"
            for n, r in rows.items()
        )

    better = {n: r for n, r in others.items() if r["difference"]["significant"]}
    worse = {n: r for n, r in better.items() if r["difference"]["mean"] < 0}
    better = {n: r for n, r in better.items() if n not in worse}
    unclear = {n: r for n, r in others.items() if n not in better and n not in worse}
    single = _single_rows(measured, names)
    best = max(single, key=lambda n: single[n]["test_accuracy"]["mean"])
    combo, wide, cnn = (measured[names[k]] for k in ("combination", "wide", "cnn"))
    nll = max(measured, key=lambda n: measured[n]["test_nll"]["mean"])
    curvature = {n: r for n, r in measured.items() if finite(r["lambda_max"]["mean"])}
    flattest = min(curvature, key=lambda n: curvature[n]["lambda_max"]["mean"])
    return [
        f"- The baseline MLP overfits: {100 * base['train_accuracy']['mean']:.1f}% train, "
        f"{100 * base['test_accuracy']['mean']:.1f}% test.",
        f"- Better than their reference (the baseline unless named; Holm-corrected over "
        f"{len(others)} comparisons; Δ in points): {listed(better) or 'none'}.",
        f"- Not distinguishable from their reference: {listed(unclear) or 'none'}.",
        f"- Worse than their reference: {listed(worse) or 'none'}.",
        f"- The best single regularizer on test is {best} "
        f"({100 * single[best]['test_accuracy']['mean']:.1f}%); the searched combination "
        f"reaches {100 * combo['test_accuracy']['mean']:.1f}% "
        f"({100 * (combo['test_accuracy']['mean'] - single[best]['test_accuracy']['mean']):+.1f}"
        " points).",
        f"- The flattest solution (smallest λmax) is {flattest} "
        f"({curvature[flattest]['lambda_max']['mean']:.2f}; baseline "
        f"{base['lambda_max']['mean']:.2f}); the highest test NLL is {nll}'s "
        f"({measured[nll]['test_nll']['mean']:.2f}; baseline {base['test_nll']['mean']:.2f}).",
        f"- The wide MLP with the combination: {100 * wide['test_accuracy']['mean']:.1f} ± "
        f"{100 * wide['test_accuracy']['half_width']:.1f}% "
        f"({_target(wide['test_accuracy'], 0.90, judge_targets)}"
        f"); CNN1D (parameter sharing): {100 * cnn['test_accuracy']['mean']:.1f} ± "
        f"{100 * cnn['test_accuracy']['half_width']:.1f}% "
        f"({_target(cnn['test_accuracy'], 0.97, judge_targets)}).",
    ]


def table_legend(results: dict[str, Any]) -> str:
    """What the table's Δ and marks mean, with the number of comparisons (the README's
    sentence above the table).

    Example:
      >>> results = {"rows": [{"name": "baseline"}, {"name": "dropout"}, {"name": "mixup"}]}
      >>> "over the table's 2 comparisons is below 0.05" in table_legend(results)
      True
    """
    comparisons = len(results["rows"]) - 1
    return (
        "Mean ± 95% t-interval over seeds; Δ is the paired difference to the row's reference "
        "with its 95% interval: the baseline, unless the Δ names another row (the rows that "
        "tune the learning rate: the baseline that tunes it too; L2 by marginal likelihood: "
        "the L2 row chosen on validation; MC dropout: the dropout row's own networks). `*` "
        f"where Holm's adjusted p-value over the table's {comparisons} comparisons is below "
        f"{report_lib.ALPHA} (a row's own interval excluding 0 is not enough):"
    )


def bayesian_findings(results: dict[str, Any]) -> list[str]:
    """ "Marginal likelihood or validation?" and "which predictive?", answered from the
    Bayesian comparisons (Markdown bullets; empty for a run without those rows).

    Example:
      >>> def row(key, name, test, nll, ece, chosen=None):
      ...     return {"key": key, "name": name, "chosen": chosen or {}, "per_seed": {
      ...         "test": test, "test_nll": nll, "ece": ece}}
      >>> rows = [row("l2", "L2", [.62, .63, .61], [1.0, 1.1, .9], [.06, .07, .05],
      ...             {"l2_strength": 0.0046}),
      ...         row("evidence_l2", "L2 by ML", [.52, .54, .53], [1.3, 1.4, 1.2],
      ...             [.02, .03, .02], {"l2_strength": 0.1})]
      >>> results = {"bayesian": bayesian_comparisons(rows), "rows": rows}
      >>> print(bayesian_findings(results)[0])  # doctest: +NORMALIZE_WHITESPACE
      - Marginal likelihood or validation? The evidence chose l2_strength 0.1 from the
      training data alone, validation l2_strength 0.0046: test accuracy -9.0 points
      [-11.5, -6.5] against the validation choice, so validation wins on MNIST-1D.
    """
    comparisons = {(c["row"], c["compared_with"]): c for c in results.get("bayesian", [])}
    by_key = {row.get("key"): row for row in results["rows"]}
    lines = []
    if "evidence_l2" in by_key and "l2" in by_key:
        evidence, validation = by_key["evidence_l2"], by_key["l2"]
        test = comparisons[(evidence["name"], validation["name"])]["test"]
        if not test["significant"]:
            answer = "neither route is distinguishable from the other over these seeds"
        else:
            answer = f"so {'the evidence' if test['mean'] > 0 else 'validation'} wins on MNIST-1D"
        chosen = report_lib.format_chosen
        lines.append(
            "- Marginal likelihood or validation? The evidence chose "
            f"{chosen(evidence['chosen'])} from the training data alone, validation "
            f"{chosen(validation['chosen'])}: test accuracy {100 * test['mean']:+.1f} points "
            f"[{100 * test['low']:+.1f}, {100 * test['high']:+.1f}] against the validation "
            f"choice, {answer}."
        )
    predictives = [by_key[k] for k in ("baseline", "laplace", "mc_dropout", "deep_ensemble")
                   if k in by_key and "test_nll" in by_key[k]["per_seed"]]  # fmt: skip
    if len(predictives) > 1:

        def best(metric: str) -> str:
            row = min(predictives, key=lambda r: float(np.mean(r["per_seed"][metric])))
            return f"{row['name']} ({float(np.mean(row['per_seed'][metric])):.3f})"

        if "laplace" in by_key and "baseline" in by_key:
            lines.append(_laplace_finding(by_key["laplace"], by_key["baseline"]))
        lines.append(
            f"- Lowest test NLL among the baseline's MAP and the three predictives: "
            f"{best('test_nll')}; lowest ECE: {best('ece')} (means over seeds; the table "
            "above says which differences survive Holm's correction)."
        )
    return lines


def _laplace_finding(laplace_row: dict, baseline: dict) -> str:
    def mean(row: dict, metric: str) -> float:
        return float(np.mean(row["per_seed"][metric]))

    same_errors = mean(laplace_row, "test") <= mean(baseline, "test") + 0.005
    return (
        f"- The last-layer Laplace predictive, on the baseline's own networks, moves test NLL "
        f"from {mean(baseline, 'test_nll'):.3f} to {mean(laplace_row, 'test_nll'):.3f} and ECE "
        f"from {mean(baseline, 'ece'):.3f} to {mean(laplace_row, 'ece'):.3f}, at "
        f"{100 * mean(laplace_row, 'test'):.1f}% test accuracy (the MAP: "
        f"{100 * mean(baseline, 'test'):.1f}%)"
        + (": it corrects the MAP's confidence, not its errors." if same_errors else ".")
    )


def epoch_budgets(config: StudyConfig, rows: list[Row]) -> str:
    """Which rows train for a different number of epochs than the baseline, from the
    configuration and the rows' specifications (the README's sentence under the table).

    Example:
      >>> config = StudyConfig(epochs=100, wide_epochs=150)
      >>> epoch_budgets(config, default_rows())
      'Epochs: 100 for every row except SAM (200), wide MLP + combination (150).'
    """
    rows = [*rows, *_combination_rows()]
    budgets = {row.name: epochs_for(row, config) for row in rows}
    base = budgets[row_names(rows)["baseline"]]
    others = ", ".join(f"{name} ({n})" for name, n in budgets.items() if n != base)
    return f"Epochs: {base} for every row" + (f" except {others}." if others else ".")


def reference_note(measured: dict[str, dict], names: dict[str, str]) -> str:
    """Which rows are compared with the tuned-rate baseline, and what it chose and reached
    (the README's sentence under the table), from the rows' recorded references.

    Example:
      >>> ci = lambda mean: {"mean": mean}
      >>> measured = {
      ...     "baseline": {"test_accuracy": ci(0.597), "chosen": {}},
      ...     "tuned": {"test_accuracy": ci(0.656), "chosen": {"learning_rate": 0.0096},
      ...               "difference": {"reference": "baseline"}},
      ...     "SWA": {"test_accuracy": ci(0.669), "chosen": {"learning_rate": 0.015},
      ...             "difference": {"reference": "tuned"}}}
      >>> print(reference_note(measured, {"baseline": "baseline", "tuned_baseline": "tuned"}))
      ... # doctest: +NORMALIZE_WHITESPACE
      The rows that tune Adam's learning rate (SWA) are compared with the baseline that
      tunes it too: it chose 0.0096 and reached 65.6% on test, against 59.7% at 1e-3.
      Every other row keeps 1e-3 and is compared with the 1e-3 baseline (or with the row
      named beside its Δ), so each Δ isolates what the row adds.
    """
    tuned = measured[names["tuned_baseline"]]
    base = measured[names["baseline"]]
    compared = [
        name
        for name, row in measured.items()
        if row.get("difference", {}).get("reference") == names["tuned_baseline"]
    ]
    return (
        f"The rows that tune Adam's learning rate ({', '.join(compared)}) are compared with "
        f"the baseline that tunes it too: it chose {tuned['chosen']['learning_rate']:.2g} and "
        f"reached {100 * tuned['test_accuracy']['mean']:.1f}% on test, against "
        f"{100 * base['test_accuracy']['mean']:.1f}% at 1e-3. Every other row keeps 1e-3 and "
        "is compared with the 1e-3 baseline (or with the row named beside its Δ), so each Δ "
        "isolates what the row adds."
    )


def _featured(measured, config: StudyConfig, names) -> list[str]:
    combo_row, wide_row = measured[names["combination"]], measured[names["wide"]]
    cnn_row = measured[names["cnn"]]
    judged = not is_reduced(config)
    return [
        f"- **Regularization lets the model grow**: the wide MLP with the combination's "
        f"strengths (its learning rate re-tuned on validation: "
        f"{len(WIDE_RETUNE['learning_rate'])} rates × "
        f"{_wide_config(config).tune_seeds} seed, full cosine decay) reaches "
        f"{100 * wide_row['test_accuracy']['mean']:.1f}% "
        f"({_target(wide_row['test_accuracy'], 0.90, judged)}); the small MLP with the "
        f"combination {100 * combo_row['test_accuracy']['mean']:.1f}%.",
        f"- **Parameter sharing**: CNN1D reaches {100 * cnn_row['test_accuracy']['mean']:.1f}% "
        f"({_target(cnn_row['test_accuracy'], 0.97, judged)}); "
        "the MNIST-1D paper reports 94% for its CNN and 96% for humans.",
    ]


def _figure_captions(measured, names) -> list[str]:
    base, combo = measured[names["baseline"]], measured[names["combination"]]
    smoothing, l1 = measured[names["label_smoothing"]], measured[names["l1"]]
    decay = measured[names["weight_decay"]]
    return [
        "![paths](paths.png)",
        "",
        "*Regularization paths: validation (solid) and test (dashed) accuracy against each "
        "strength, mean ± sd over the tuning seeds; the marker is the choice made on validation.*",
        "",
        "![accuracy](accuracy.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "*Learning curves of the baseline and the best combination (dashed: train, solid: "
        "validation).*",
        "",
        "![reliability](reliability.png)",
        "",
        f"*Reliability diagrams: ECE {base['ece']['mean']:.3f} (baseline) vs "
        f"{smoothing['ece']['mean']:.3f} (label smoothing).*",
        "",
        "![density](spectral_density.png) ![landscape](landscape.png)",
        "",
        f"*Hessian spectral density and filter-normalized 2-D loss slices (one colour scale), "
        f"baseline (λmax {base['lambda_max']['mean']:.2f}) vs best combination "
        f"(λmax {combo['lambda_max']['mean']:.2f}).*",
        "",
        "![weights](weights.png)",
        "",
        f"*Weight histograms: proximal L1 leaves "
        f"{100 * l1['zero_fraction']:.1f}% exact zeros, weight decay "
        f"{100 * decay['zero_fraction']:.1f}%.*",
        "",
    ]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


_positive_int.__name__ = "positive integer"  # argparse names the type in its error message


def build_parser() -> argparse.ArgumentParser:
    """The tour's command line: ``python -m experiments.tour [--quick] [--extended] ...``.

    Example:
      >>> build_parser().parse_args(["--quick", "--seeds", "3"]).seeds
      3
    """
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tour",
        description="Train the overfitting MLP baseline and the regularized variants on "
        "MNIST-1D (generated offline) and write report.md, results.json and figures.",
    )
    parser.add_argument("--quick", action="store_true", help="shorter training, same sections")
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: jaxreg-tour, or jaxreg-tour-quick with --quick)",
    )
    parser.add_argument(
        "--extended",
        action="store_true",
        help="also the newer regularizers (max-norm, spectral norm, orthogonality, SWA, EMA, "
        "input-gradient penalty, R-Drop, SAM as a transform), each tuned like the others",
    )
    parser.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="final seeds per row (default: 5, or 2 with --quick)",
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help=f"confirmatory run: the pre-registered study on fresh seeds (every key from "
        f"seed {CONFIRMATORY_SEED} instead of 0)",
    )
    parser.add_argument(
        "--from-results",
        default=None,
        metavar="RESULTS_JSON",
        help="no training: re-read a recorded run's results.json under the current statistics "
        "and write its results.json and report.md to --out",
    )
    return parser


def _writable_folder(path: str) -> str | None:
    """Why ``path`` cannot hold the report (checked before minutes of training), or None."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create {folder}: {error.strerror or error}"
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the tour from the command line; 0 on success, 2 for an unusable ``--out``.

    Example:
      >>> import tempfile
      >>> blocker = Path(tempfile.mkdtemp()) / "a file"
      >>> _ = blocker.write_text("not a folder")
      >>> main(["--quick", "--out", str(blocker / "report")])  # checked before any training
      2
    """
    args = build_parser().parse_args(argv)
    out = args.out or ("jaxreg-tour-quick" if args.quick else "jaxreg-tour")
    problem = _writable_folder(out)
    if problem is not None:
        print(f"python -m experiments.tour: --out: {problem}", file=sys.stderr)
        return 2
    if args.from_results is not None:
        results = with_differences(json.loads(Path(args.from_results).read_text()))
        write_json(Path(out) / "results.json", results)
        table, report = render_report(results)
        (Path(out) / "report.md").write_text(report)
        print(table)
        return 0
    if args.quick:
        config = StudyConfig.quick() if args.seeds is None else StudyConfig.quick(args.seeds)
    else:
        config = StudyConfig() if args.seeds is None else StudyConfig(seeds=args.seeds)
    seed = CONFIRMATORY_SEED if args.confirm else 0
    run_tour(out, config, seed=seed, extended=args.extended)
    return 0


if __name__ == "__main__":
    sys.exit(main())
