"""``jaxreg tour``: the regularization study on MNIST-1D, run end to end from one command.

Every row trains several seeds at once (``vmap`` over initial parameters and
keys: one compile per row) and is measured on the same footing: accuracy,
gap, NLL, ECE, top Hessian eigenvalue and trace, fraction of exact zeros.
The report (``report.md``), ``results.json`` and figures go to one folder.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxreg import data as data_lib
from jaxreg import ensembles, labels, landscape, masks, metrics, noise, penalties, sharpness
from jaxreg import transforms as tx
from jaxreg.augment import mixup, signal
from jaxreg.losses import classification_loss
from jaxreg.nn import CNN1D, MLP, count_params, init_params
from jaxreg.training import EarlyStopping, fit

__all__ = ["Arm", "TourConfig", "default_arms", "format_table", "run_arm", "run_tour"]

LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class TourConfig:
    """Sizes of a tour run; ``quick()`` keeps every section but shortens training."""

    seeds: int = 3
    epochs: int = 100
    cnn_epochs: int = 50
    batch_size: int = 100
    sharpness_iters: int = 30
    ensemble_members: int = 5

    @classmethod
    def quick(cls, seeds: int = 3) -> TourConfig:
        return cls(seeds=seeds, epochs=30, cnn_epochs=8, sharpness_iters=10, ensemble_members=3)


@dataclass(frozen=True)
class Arm:
    """One row of the study. Fields left at their defaults mean "as the baseline"."""

    name: str
    description: str
    model: str = "mlp"  # "mlp" or "cnn"
    dropout: float = 0.0
    optimizer: Callable[[], optax.GradientTransformation] | None = None
    extra_transforms: tuple[Callable[[], optax.GradientTransformation], ...] = ()
    penalty: Callable[[Any], jax.Array] | None = None
    penalty_strength: float = 0.0
    batch_transforms: tuple[Callable[[jax.Array, dict], dict], ...] = ()
    batch_size: int | None = None
    early_stopping: bool = False
    ensemble: bool = False
    combinable: bool = True
    ingredients: tuple[str, ...] = field(default_factory=tuple)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _augment_pipeline():
    augment = signal.mnist1d_pipeline()
    return lambda k, b: {**b, "x": augment(k, b["x"])}


def _sam():
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(0.05))
    return optax.contrib.sam(optax.adam(LEARNING_RATE), adversary, sync_period=2)


def default_arms() -> list[Arm]:
    """The rows of the study: the baseline, each regularizer alone, and parameter sharing."""
    return [
        Arm(
            "baseline",
            "MLP 40-100-100-10, Adam 1e-3, batch 100, no regularization",
            combinable=False,
        ),
        Arm(
            "weight decay",
            "decoupled weight decay 5e-5 per step on weights",
            extra_transforms=(lambda: tx.decoupled_weight_decay(5e-5, mask=masks.weights_only),),
        ),
        Arm(
            "L2 penalty",
            "0.5·Σw² on weights, strength 1e-3",
            penalty=lambda p: penalties.l2(p, mask=masks.weights_only),
            penalty_strength=1e-3,
        ),
        Arm(
            "L1 (proximal)",
            "proximal L1 step, strength 0.1, exact zeros",
            extra_transforms=(lambda: tx.proximal_l1(0.1, LEARNING_RATE, mask=masks.weights_only),),
        ),
        Arm(
            "elastic net (proximal)",
            "proximal elastic net, strength 0.1, l1_ratio 0.5",
            extra_transforms=(
                lambda: tx.proximal_elastic_net(0.1, 0.5, LEARNING_RATE, mask=masks.weights_only),
            ),
        ),
        Arm(
            "input noise",
            "Gaussian input noise σ = 0.3",
            batch_transforms=(lambda k, b: {**b, "x": noise.gaussian_input_noise(k, b["x"], 0.3)},),
        ),
        Arm(
            "1-D augmentation",
            "shift ±4, scale 0.8-1.2, stretch ±10%, jitter 0.05",
            batch_transforms=(_augment_pipeline(),),
        ),
        Arm(
            "mixup",
            "mixup α = 0.2 on inputs and labels",
            batch_transforms=(
                lambda k, b: dict(
                    zip(("x", "y"), mixup(k, b["x"], b["y"], 0.2, num_classes=10), strict=True),
                    weight=b["weight"],
                ),
            ),
        ),
        Arm(
            "label smoothing",
            "ε = 0.1 (off-target convention)",
            batch_transforms=(lambda k, b: {**b, "y": labels.smooth(b["y"], 10, 0.1)},),
        ),
        Arm("dropout", "dropout 0.1 after every hidden layer", dropout=0.1),
        Arm(
            "early stopping",
            "patience 10 on the loss of a 10% validation split",
            early_stopping=True,
            combinable=False,
        ),
        Arm(
            "bagged ensemble", "mean of bootstrap-trained members", ensemble=True, combinable=False
        ),
        Arm("small batch (16)", "batch size 16", batch_size=16, combinable=False),
        Arm("large batch (1000)", "batch size 1000", batch_size=1000, combinable=False),
        Arm("SAM", "optax.contrib.sam, ρ = 0.05", optimizer=_sam, combinable=False),
        Arm(
            "CNN1D (parameter sharing)",
            "the MNIST-1D paper's CNN, Adam 1e-2",
            model="cnn",
            optimizer=lambda: optax.adam(1e-2),
            combinable=False,
        ),
    ]


def combine(arms: list[Arm], name: str = "best combination") -> Arm:
    """Merge several combinable arms into one (transforms, penalties, dropout stacked)."""
    penalty_arms = [a for a in arms if a.penalty is not None]

    def penalty(p):
        return sum(a.penalty_strength * a.penalty(p) for a in penalty_arms)

    return Arm(
        name,
        " + ".join(a.name for a in arms),
        dropout=max(a.dropout for a in arms),
        extra_transforms=tuple(t for a in arms for t in a.extra_transforms),
        penalty=penalty if penalty_arms else None,
        penalty_strength=1.0 if penalty_arms else 0.0,
        batch_transforms=tuple(t for a in arms for t in a.batch_transforms),
        ingredients=tuple(a.name for a in arms),
    )


def _make_model(arm: Arm):
    if arm.model == "cnn":
        return lambda rngs: CNN1D(rngs=rngs)
    return lambda rngs: MLP((40, 100, 100, 10), dropout_rate=arm.dropout, rngs=rngs)


def _optimizer(arm: Arm) -> optax.GradientTransformation:
    base = arm.optimizer() if arm.optimizer is not None else optax.adam(LEARNING_RATE)
    return optax.chain(base, *(make() for make in arm.extra_transforms))


def _batch_transform(arm: Arm):
    if not arm.batch_transforms:
        return None

    def transform(key, batch):
        for index, fn in enumerate(arm.batch_transforms):
            batch = fn(jax.random.fold_in(key, index), batch)
        return batch

    return transform


def _mean_sd(values) -> dict[str, float]:
    values = np.asarray(values, np.float64)
    return {"mean": float(np.mean(values)), "sd": float(np.std(values))}


def run_arm(arm: Arm, dataset: data_lib.Dataset, *, key: jax.Array, config: TourConfig) -> dict:
    """Train ``config.seeds`` copies of ``arm`` in one vmapped run and measure them."""
    init_key, train_key, split_key = jax.random.split(key, 3)
    seeds = config.seeds
    members = config.ensemble_members if arm.ensemble else 1
    apply, params = init_params(_make_model(arm), jax.random.split(init_key, seeds * members))
    epochs = config.cnn_epochs if arm.model == "cnn" else config.epochs
    x, y = dataset.x_train, dataset.y_train
    eval_data = (dataset.x_test, dataset.y_test)
    if arm.early_stopping:
        x, y, x_val, y_val = data_lib.train_val_split(split_key, x, y, 0.1)
        eval_data = (x_val, y_val)
    n = len(y)
    weights = (
        ensembles.bootstrap_weights(split_key, seeds * members, n)
        if arm.ensemble
        else jnp.ones((seeds * members, n))
    )

    def train(p, k, w):
        return fit(
            apply,
            p,
            _optimizer(arm),
            (x, y, w),
            key=k,
            num_epochs=epochs,
            batch_size=arm.batch_size or config.batch_size,
            eval_data=eval_data,
            penalty=arm.penalty,
            penalty_strength=arm.penalty_strength,
            batch_transform=_batch_transform(arm),
            early_stopping=EarlyStopping(10) if arm.early_stopping else None,
        )

    result = jax.jit(jax.vmap(train))(params, jax.random.split(train_key, seeds * members), weights)
    trained = result.params
    loss_fn = classification_loss(apply)
    train_batches = data_lib.batches(dataset.x_train, dataset.y_train, 500)

    def probabilities(stacked, x_eval):
        logits = jax.vmap(lambda p: apply(p, x_eval))(stacked)
        probs = jax.nn.softmax(logits, axis=-1).reshape(seeds, members, len(x_eval), -1)
        return np.asarray(jnp.mean(probs, axis=1), np.float64)  # ensemble mean per seed

    train_probs = probabilities(trained, dataset.x_train)
    test_probs = probabilities(trained, dataset.x_test)
    rows = {"train_accuracy": [], "test_accuracy": [], "test_nll": [], "ece": []}
    for s in range(seeds):
        rows["train_accuracy"].append(float(metrics.accuracy(train_probs[s], dataset.y_train)))
        rows["test_accuracy"].append(float(metrics.accuracy(test_probs[s], dataset.y_test)))
        rows["test_nll"].append(float(metrics.nll(test_probs[s], dataset.y_test)))
        rows["ece"].append(float(metrics.ece(test_probs[s], dataset.y_test)))
    gap = np.asarray(rows["train_accuracy"]) - np.asarray(rows["test_accuracy"])
    summary = {k: _mean_sd(v) for k, v in rows.items()}
    summary["gap"] = _mean_sd(gap)

    first_members = jax.tree.map(lambda a: a[::members], trained)
    if arm.ensemble:
        summary["lambda_max"] = summary["trace"] = {"mean": float("nan"), "sd": float("nan")}
    else:

        def curvature(p):
            top, _, _ = sharpness.top_eigenvalues(
                loss_fn, p, train_batches, key=jax.random.key(7), num_iters=config.sharpness_iters
            )
            trace, _ = sharpness.hessian_trace(
                loss_fn, p, train_batches, key=jax.random.key(8), num_samples=config.sharpness_iters
            )
            return top[0], trace

        top, trace = jax.jit(jax.vmap(curvature))(first_members)
        summary["lambda_max"], summary["trace"] = _mean_sd(top), _mean_sd(trace)
    selected = masks.resolve(masks.weights_only, jax.tree.map(lambda a: a[0], trained))
    kernels = [
        leaf
        for leaf, keep in zip(jax.tree.leaves(trained), jax.tree.leaves(selected), strict=True)
        if keep
    ]
    zeros = sum(float(jnp.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    history = {
        k: np.asarray(v).reshape(seeds, members, -1)[:, 0] for k, v in result.history.items()
    }
    return {
        "name": arm.name,
        "description": arm.description,
        "ingredients": list(arm.ingredients),
        "num_params": count_params(jax.tree.map(lambda a: a[0], params)) * members,
        "epochs": epochs,
        **summary,
        "zero_fraction": zeros,
        "per_seed": rows,
        "history": history,
        "_trained": first_members,
        "_apply": apply,
        "_test_probs": test_probs[0],
    }


def _fmt(stat: dict[str, float], scale: float = 100.0, digits: int = 1) -> str:
    if np.isnan(stat["mean"]):
        return "—"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['sd']:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """Markdown table of the rows' summaries."""
    lines = [
        "| regularizer | train acc (%) | test acc (%) | gap (pp) | test NLL | ECE | λmax | "
        "tr(H) | exact zeros | params |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {_fmt(row['train_accuracy'])} | {_fmt(row['test_accuracy'])} | "
            f"{_fmt(row['gap'])} | {_fmt(row['test_nll'], 1, 3)} | {_fmt(row['ece'], 1, 3)} | "
            f"{_fmt(row['lambda_max'], 1, 2)} | {_fmt(row['trace'], 1, 1)} | "
            f"{100 * row['zero_fraction']:.1f}% | {row['num_params']:,} |"
        )
    return "\n".join(lines)


def _sentences(rows: dict[str, dict]) -> list[str]:
    base = rows["baseline"]
    lines = [
        f"- **baseline**: the MLP fits the training set "
        f"({100 * base['train_accuracy']['mean']:.1f}%) but reaches "
        f"{100 * base['test_accuracy']['mean']:.1f}% on test, a "
        f"{100 * base['gap']['mean']:.0f}-point gap: the overfitting the study starts from."
    ]
    for name, row in rows.items():
        if name == "baseline":
            continue
        delta = 100 * (row["test_accuracy"]["mean"] - base["test_accuracy"]["mean"])
        gap = 100 * row["gap"]["mean"]
        verb = "raises" if delta > 0 else "lowers"
        extra = ""
        if row["zero_fraction"] > 0.001:
            extra = f"; {100 * row['zero_fraction']:.1f}% of the weights are exactly zero"
        if name == "label smoothing":
            extra = f"; ECE {base['ece']['mean']:.3f} → {row['ece']['mean']:.3f}"
        lines.append(
            f"- **{name}** ({row['description']}) {verb} test accuracy by "
            f"{abs(delta):.1f} points (gap {gap:.0f} pp){extra}."
        )
    return lines


def run_tour(out_dir: str | Path, config: TourConfig | None = None, *, seed: int = 0) -> dict:
    """Run the study, write ``report.md``, ``results.json`` and figures to ``out_dir``.

    Returns:
      The results dict written to ``results.json`` (without histories).
    """
    from jaxreg import plots

    config = config or TourConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _log("[tour] generating MNIST-1D (cached after the first run)")
    dataset = data_lib.mnist1d()
    arms = default_arms()
    key = jax.random.key(seed)
    rows: dict[str, dict] = {}

    def run(arm: Arm, index: int, total: int) -> None:
        t0 = time.perf_counter()
        _log(f"[tour {index}/{total}] {arm.name}: {config.seeds} seeds ...")
        row = run_arm(arm, dataset, key=jax.random.fold_in(key, index), config=config)
        rows[arm.name] = row
        _log(
            f"           test {_fmt(row['test_accuracy'])}%, gap {_fmt(row['gap'])} pp "
            f"({time.perf_counter() - t0:.1f}s)"
        )

    for index, arm in enumerate(arms, 1):
        run(arm, index, len(arms) + 1)
    by_name = {arm.name: arm for arm in arms}
    base_acc = rows["baseline"]["test_accuracy"]["mean"]
    helpful = sorted(
        (a for a in arms if a.combinable and rows[a.name]["test_accuracy"]["mean"] > base_acc),
        key=lambda a: -rows[a.name]["test_accuracy"]["mean"],
    )[:3]
    best_arm = combine(helpful or [by_name["dropout"]])
    run(best_arm, len(arms) + 1, len(arms) + 1)

    ordered = list(rows.values())
    best = rows["best combination"]
    plots.learning_curves(
        {"baseline": rows["baseline"]["history"], "best combination": best["history"]},
        out / "learning_curves.png",
    )
    names = [r["name"] for r in ordered]
    plots.error_bars(
        names,
        np.array([100 * r["gap"]["mean"] for r in ordered]),
        np.array([100 * r["gap"]["sd"] for r in ordered]),
        out / "gaps.png",
        ylabel="train − test accuracy (pp)",
        title="Generalization gap per row",
    )
    reliability = {}
    for name in ("baseline", "label smoothing"):
        bins = metrics.reliability_bins(rows[name]["_test_probs"], dataset.y_test)
        reliability[name] = {
            **{k: np.asarray(v) for k, v in bins.items()},
            "ece": metrics.ece(rows[name]["_test_probs"], dataset.y_test),
        }
    plots.reliability_diagram(reliability, out / "reliability.png")
    loss_fn = classification_loss(rows["baseline"]["_apply"])
    train_batches = data_lib.batches(dataset.x_train, dataset.y_train, 500)
    densities, slices = {}, {}
    for name in ("baseline", "best combination"):
        params0 = jax.tree.map(lambda a: a[0], rows[name]["_trained"])
        density = sharpness.spectral_density(
            loss_fn,
            params0,
            train_batches,
            key=jax.random.key(9),
            num_iters=2 * config.sharpness_iters,
            num_runs=2,
        )
        densities[name] = (density.grid, density.density)
        slices[name] = landscape.slice_2d(
            loss_fn,
            params0,
            train_batches,
            key=jax.random.key(10),
            resolution=15 if config.epochs < 100 else 21,
        )
    plots.spectral_density(densities, out / "spectral_density.png")
    plots.landscapes(slices, out / "landscape.png")
    plots.weight_histograms(
        {
            name: np.concatenate(
                [
                    np.ravel(leaf[0])
                    for leaf in jax.tree.leaves(rows[name]["_trained"])
                    if leaf.ndim >= 3
                ]
            )
            for name in ("weight decay", "L1 (proximal)")
        },
        out / "weights.png",
    )

    elapsed = time.perf_counter() - start
    public = [
        {k: v for k, v in r.items() if not k.startswith("_") and k != "history"} for r in ordered
    ]
    results = {
        "config": config.__dict__,
        "elapsed_seconds": elapsed,
        "device": jax.devices()[0].device_kind,
        "rows": public,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = format_table(ordered)
    report = [
        "# jaxreg tour: regularization on MNIST-1D",
        "",
        f"{config.seeds} seeds per row (mean ± sd), {config.epochs} epochs (CNN "
        f"{config.cnn_epochs}); {len(dataset.y_train)} training and {len(dataset.y_test)} test "
        f"examples; λmax and tr(H) of the training loss; run time {elapsed:.0f} s on "
        f"{results['device']}.",
        "",
        table,
        "",
        *_sentences(rows),
        f"- The **best combination** stacks {', '.join(best['ingredients']) or 'dropout'} (the "
        "regularizers that helped most alone).",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "*Learning curves of the baseline and the best combination (dashed: train, solid: test).*",
        "",
        "![gaps](gaps.png)",
        "",
        "*Generalization gap per row, mean ± sd over seeds.*",
        "",
        "![reliability](reliability.png)",
        "",
        "*Reliability diagrams: label smoothing pulls the overconfident baseline towards the "
        "diagonal.*",
        "",
        "![density](spectral_density.png) ![landscape](landscape.png)",
        "",
        "*Hessian spectral density and filter-normalized 2-D loss slices, baseline vs best.*",
        "",
        "![weights](weights.png)",
        "",
        "*Weight histograms: proximal L1 leaves a spike of exact zeros, weight decay shrinks "
        "without zeroing.*",
        "",
    ]
    (out / "report.md").write_text("\n".join(report))
    print(table)
    _log(f"[tour] wrote {out / 'report.md'} in {elapsed:.1f}s")
    return results
