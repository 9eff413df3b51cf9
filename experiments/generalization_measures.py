"""Which measures rank the generalization gap? Kendall τ over a sweep of MNIST-1D MLPs.

After Jiang et al. (2020): MLPs of every depth × width in the grid are trained on
MNIST-1D's 4,000 training examples (AdamW, ``epochs`` epochs, no early stopping)
for every learning rate × dropout rate × weight decay × seed, as one
:func:`jaxreg.sweeps.run` per architecture and batch size (batch size is a
shape, so it cannot be traced). Each model's 23 measures
(:func:`jaxreg.generalization.measure_sweep`: norms, margin, path norm,
sharpness, Hessian λmax and trace, PAC-Bayes flatness, WeightWatcher's α, α̂ and
stable rank, gradient noise scale) are taken on the first ``measure_examples``
training examples; the optimization measure "steps to training loss 0.1" comes
from the history. The gap is train accuracy − test accuracy. This script selects
nothing, so test is unlocked at the start: it is the quantity studied.

For every measure: Kendall's τ with the gap, Jiang et al.'s granulated τ per
hyperparameter axis and their mean Ψ, with percentile bootstrap 95% intervals
over models (``resamples``). Three claims from the literature, each judged by one
measure fixed before any run:

- **flat minima generalize:** τ(PAC-Bayes flatness ``1/σ²``, gap) — the best
  sharpness measure in Jiang et al. — has a 95% lower bound above 0;
- **regularization shrinks norms:** the granulated τ of ``‖w‖²`` with the weight
  decay (other hyperparameters fixed) has a 95% upper bound below 0;
- **heavy-tailed spectra signal better generalization:** τ(mean layer α, gap)
  has a 95% lower bound above 0 (smaller α, heavier tails, smaller gap).

PASS needs all three. ``--control`` shuffles every measure across models before
the statistics (measures unrelated to the models), which must FAIL (tested); every
run also reports the control's verdicts (``control_claims``). Every model's measures,
gap and hyperparameters go to ``generalization_measures_models.json`` beside the result,
so the table can be recomputed.

``--quick`` (the test suite): one architecture, 16 models, 4 epochs.

Run: ``python -m experiments.generalization_measures [--out DIR] [--quick] [--control]``.
"""

from __future__ import annotations

import itertools
import sys

import jax
import numpy as np
import optax
from flax import nnx

from experiments.common import configuration, mnist1d_data, parse_args, report, rounded
from jaxreg import fit, generalization, sweeps
from jaxreg.data import batches
from jaxreg.io import write_json
from jaxreg.nn import MLP, from_nnx, init_params

NAME = "generalization_measures"
CLAIM = (
    "Over a sweep of MNIST-1D MLPs, PAC-Bayes flatness and the spectral exponent α rank the "
    "generalization gap (Kendall τ, 95% lower bound > 0) and weight decay shrinks the "
    "parameter norm (granulated τ, 95% upper bound < 0)"
)
FULL = {
    "depths": [1, 2],
    "widths": [32, 128],
    "batch_sizes": [32, 128],
    "learning_rates": [1e-3, 3e-3, 1e-2],
    "dropout_rates": [0.0, 0.2],
    "weight_decays": [0.0, 0.1],
    "seeds": 3,
    "epochs": 40,
    "measure_examples": 1000,
    "resamples": 1000,
}
QUICK = {
    "depths": [1],
    "widths": [16],
    "batch_sizes": [200],
    "learning_rates": [1e-3, 1e-2],
    "dropout_rates": [0.0, 0.3],
    "weight_decays": [0.0, 0.1],
    "seeds": 2,
    "epochs": 4,
    "measure_examples": 100,
    "resamples": 100,
}
#: The measure each claim is judged by, fixed before any run.
PRIMARY = {"flat_minima": "pac_bayes_inverse_sigma_sq", "heavy_tails": "alpha"}
LOSS_THRESHOLD = 0.1  # "steps to training loss 0.1" (Jiang et al.'s cross-entropy target)


def verdict(intervals, norm_by_decay) -> dict[str, bool]:
    """Each claim's verdict from the bootstrap intervals (see the module docstring)."""
    return {
        "flat_minima": intervals[PRIMARY["flat_minima"]]["tau"].low > 0,
        "regularization_shrinks_norms": norm_by_decay.high < 0,
        "heavy_tails": intervals[PRIMARY["heavy_tails"]]["tau"].low > 0,
    }


def _sizes(depth: int, width: int) -> tuple[int, ...]:
    return (40, *([width] * depth), 10)


def train_architecture(depth, width, batch_size, cfg, data, x_test, y_test):
    """One sweep over learning rate × dropout × weight decay × seed; params, init, history."""
    sizes = _sizes(depth, width)
    model = from_nnx(MLP(sizes, rngs=nnx.Rngs(0)))
    keys = jax.random.split(jax.random.key(cfg["seed"] + 17 * depth + width), cfg["seeds"])
    _, initial = init_params(lambda rngs: MLP(sizes, rngs=rngs), keys)

    def train_fn(config, key):
        params = jax.tree.map(lambda a: a[config["seed"]], initial)
        result = fit(
            model,
            params,
            lambda hp: optax.adamw(hp["learning_rate"], weight_decay=hp["weight_decay"]),
            (data.x_train, data.y_train),
            key=key,
            num_epochs=cfg["epochs"],
            batch_size=batch_size,
            eval_data=(x_test, y_test),
            hparams={k: config[k] for k in ("learning_rate", "weight_decay", "dropout_rate")},
        )
        return {"params": result.params, "history": result.history}

    grid = sweeps.grid(
        learning_rate=cfg["learning_rates"],
        dropout_rate=cfg["dropout_rates"],
        weight_decay=cfg["weight_decays"],
        seed=np.arange(cfg["seeds"]),
    )
    sweep = sweeps.run(train_fn, grid, key=jax.random.key(cfg["seed"]), progress=False)
    init = jax.tree.map(lambda a: a[np.asarray(sweep.configs["seed"])], initial)
    return model, sweep, init


def _axes(configs, depth, width, batch_size, count) -> dict[str, np.ndarray]:
    return {
        "learning_rate": np.asarray(configs["learning_rate"]),
        "batch_size": np.full(count, batch_size),
        "width": np.full(count, width),
        "depth": np.full(count, depth),
        "dropout_rate": np.asarray(configs["dropout_rate"]),
        "weight_decay": np.asarray(configs["weight_decay"]),
        "seed": np.asarray(configs["seed"]),
    }


def measure_all(cfg, data, x_test, y_test):
    """Train every architecture, measure every model; return measures, gap and axes."""
    measure_data = batches(
        data.x_train[: cfg["measure_examples"]], data.y_train[: cfg["measure_examples"]], 100
    )
    parts = []
    for depth, width in itertools.product(cfg["depths"], cfg["widths"]):
        runs = [
            train_architecture(depth, width, b, cfg, data, x_test, y_test)
            for b in cfg["batch_sizes"]
        ]
        model = runs[0][0]
        params = jax.tree.map(lambda *a: np.concatenate(a), *[r[1].metrics["params"] for r in runs])
        init = jax.tree.map(lambda *a: np.concatenate(a), *[r[2] for r in runs])
        measures = generalization.measure_sweep(
            model.bind(),
            params,
            measure_data,
            key=jax.random.key(cfg["seed"] + 1),
            init_params=init,
        )
        for (_, sweep, _), batch_size in zip(runs, cfg["batch_sizes"], strict=True):
            history = sweep.metrics["history"]
            count = len(sweep.failed)
            steps = len(data.y_train) // batch_size + (len(data.y_train) % batch_size > 0)
            reached = np.asarray(
                jax.vmap(generalization.steps_to_loss, in_axes=(0, None, None))(
                    history["train_loss"], LOSS_THRESHOLD, steps
                )
            )
            parts.append(
                {
                    "gap": history["train_accuracy"][:, -1] - history["eval_accuracy"][:, -1],
                    "train_accuracy": history["train_accuracy"][:, -1],
                    "test_accuracy": history["eval_accuracy"][:, -1],
                    # Never reached: one step past the run, tied with the other such models.
                    "steps_to_loss": np.where(
                        np.isinf(reached), steps * cfg["epochs"] + 1, reached
                    ),
                    "failed": np.asarray(sweep.failed),
                    "axes": _axes(sweep.configs, depth, width, batch_size, count),
                }
            )
        offset = 0
        for part in parts[-len(runs) :]:
            count = len(part["gap"])
            part["measures"] = {k: v[offset : offset + count] for k, v in measures.items()}
            offset += count
    return _concatenate(parts)


def _concatenate(parts):
    def join(get):
        return np.concatenate([np.asarray(get(p)) for p in parts])

    measures = {k: join(lambda p, k=k: p["measures"][k]) for k in parts[0]["measures"]}
    measures["steps_to_loss"] = join(lambda p: p["steps_to_loss"])
    axes = {k: join(lambda p, k=k: p["axes"][k]) for k in parts[0]["axes"]}
    other = {
        k: join(lambda p, k=k: p[k]) for k in ("gap", "train_accuracy", "test_accuracy", "failed")
    }
    return measures, axes, other


def main() -> int:
    args = parse_args(
        __doc__.splitlines()[0],
        control="shuffle every measure across models before the statistics (must FAIL)",
    )
    cfg = configuration(args, FULL, QUICK)
    data = mnist1d_data(validation=False)
    data.test.unlock()  # nothing is selected: the test gap is the quantity studied
    x_test, y_test = data.test.read()
    measures, axes, other = measure_all(cfg, data, x_test, y_test)
    keep = ~other["failed"]
    # A margin-normalized measure is undefined (NaN) for a model whose 10% margin is
    # negative (it misclassifies over 10% of its training set): such measures are left out.
    undefined = {k: int(np.sum(~np.isfinite(v[keep]))) for k, v in measures.items()}
    undefined = {k: n for k, n in undefined.items() if n}
    measures = {k: v[keep] for k, v in measures.items() if k not in undefined}
    axes = {k: v[keep] for k, v in axes.items()}
    gap = other["gap"][keep]
    intervals, norm_by_decay = statistics(measures, gap, axes, cfg)
    # The control: the same statistics with every measure shuffled across models.
    shuffle = np.random.default_rng(cfg["seed"]).permutation(len(gap))
    control = statistics({k: v[shuffle] for k, v in measures.items()}, gap, axes, cfg)
    verdicts, control_verdicts = verdict(*(intervals, norm_by_decay)), verdict(*control)
    evidence = _evidence(cfg, args, intervals, norm_by_decay, verdicts, other, keep)
    evidence["measures_left_out"] = undefined
    evidence["control_claims"] = {k: bool(v) for k, v in control_verdicts.items()}
    _figure(intervals, list(axes), args.out)
    write_json(  # every model, unrounded: rounding would create ties and change τ
        args.out / f"{NAME}_models.json",
        {
            "gap": [float(g) for g in gap],
            "axes": {k: v.tolist() for k, v in axes.items()},
            "measures": {k: [float(x) for x in v] for k, v in measures.items()},
        },
    )
    passed = all((control_verdicts if args.control else verdicts).values())
    return report(NAME, CLAIM, evidence, passed, args.out)


def statistics(measures, gap, axes, cfg):
    """τ intervals of every measure with the gap, and of ``‖w‖²`` with the weight decay."""
    key = jax.random.key(cfg["seed"] + 2)
    intervals = generalization.tau_intervals(
        measures, gap, key=key, axes=axes, num_resamples=cfg["resamples"]
    )
    norm_by_decay = generalization.tau_intervals(
        {"log_parameter_norm": measures["log_parameter_norm"]},
        axes["weight_decay"],
        key=key,
        axes=axes,
        num_resamples=cfg["resamples"],
    )["log_parameter_norm"]["weight_decay"]
    return intervals, norm_by_decay


def _evidence(cfg, args, intervals, norm_by_decay, verdicts, other, keep):
    def interval(iv):
        return rounded([iv.value, iv.low, iv.high], 3)

    axes = [c for c in next(iter(intervals.values())) if c not in ("tau", "mean")]
    return {
        "configuration": cfg["configuration"],
        "seed": cfg["seed"],
        "control": bool(args.control),
        "models": int(keep.sum()),
        "models_left_out": int((~keep).sum()),
        "mean_test_accuracy": round(float(np.mean(other["test_accuracy"][keep])), 4),
        "gap_range": rounded([other["gap"][keep].min(), other["gap"][keep].max()]),
        "pac_bayes_tau_lower_95": round(intervals[PRIMARY["flat_minima"]]["tau"].low, 3),
        "norm_by_decay_tau_upper_95": round(norm_by_decay.high, 3),
        "alpha_tau_lower_95": round(intervals[PRIMARY["heavy_tails"]]["tau"].low, 3),
        "claims": {k: bool(v) for k, v in verdicts.items()},
        "primary": PRIMARY,
        "norm_vs_weight_decay_granulated_tau": rounded(norm_by_decay, 3),
        "tau": {name: interval(row["tau"]) for name, row in intervals.items()},
        "granulated_mean": {name: interval(row["mean"]) for name, row in intervals.items()},
        "granulated_tau": {
            name: {a: round(row[a].value, 3) for a in axes} for name, row in intervals.items()
        },
    }


def _figure(intervals, axes, out) -> None:
    from jaxreg.plots import pyplot, save

    plt = pyplot()
    names = sorted(intervals, key=lambda n: intervals[n]["tau"].value)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(15, 0.32 * len(names) + 2.5), gridspec_kw={"width_ratios": [1, 1.4]}
    )
    taus = [intervals[n]["tau"] for n in names]
    rows = np.arange(len(names))
    left.errorbar(
        [t.value for t in taus],
        rows,
        xerr=[[t.value - t.low for t in taus], [t.high - t.value for t in taus]],
        fmt="o",
        capsize=3,
    )
    left.axvline(0, color="k", lw=0.8)
    left.set_yticks(rows, names)
    left.set_xlabel("Kendall τ with the generalization gap (95% bootstrap)")
    grid = np.array([[intervals[n][a].value for a in [*axes, "mean"]] for n in names])
    image = right.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", origin="lower")
    labels = [a.replace("_", " ") for a in [*axes, "Ψ (mean)"]]
    right.set_xticks(np.arange(len(axes) + 1), labels, rotation=60, ha="right", fontsize=8)
    right.set_yticks(rows, [])
    right.set_ylabel("measure (rows as on the left)")
    right.set_title("granulated τ per hyperparameter")
    fig.colorbar(image, ax=right, label="τ")
    fig.suptitle("Generalization measures vs the gap, MNIST-1D MLPs")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    save(fig, out / f"{NAME}.png")


if __name__ == "__main__":
    sys.exit(main())
