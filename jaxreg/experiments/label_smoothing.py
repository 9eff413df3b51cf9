"""Label smoothing and calibration: the overfitting MNIST-1D MLP with ε ∈ {0, 0.05, 0.1, 0.2}.

All ε × 3 seeds train in one vmapped run (ε is traced). For each ε we report
test accuracy, NLL and ECE (15 equal-width bins) and draw reliability
diagrams for ε = 0 and the ε with the lowest ECE.

Run: ``python -m jaxreg.experiments.label_smoothing [--out DIR]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from jaxreg import labels, metrics, plots
from jaxreg.experiments._common import parse_args, report, train_mnist1d

NAME = "label_smoothing"
CLAIM = "Label smoothing lowers the test ECE of the overfitting MLP (ε = 0.1 vs ε = 0)"
EPSILONS = [0.0, 0.05, 0.1, 0.2]
SEEDS = 3


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])

    def make_run(eps):
        return dict(
            optimizer=optax.adam(1e-3),
            batch_transform=lambda k, b: {**b, "y": labels.smooth(b["y"], 10, eps)},
        )

    _history, params, dataset, apply = train_mnist1d(EPSILONS, SEEDS, make_run)
    logits = jax.vmap(jax.vmap(lambda p: apply(p, dataset.x_test)))(params)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    rows, bins = [], {}
    for i, eps in enumerate(EPSILONS):
        per_seed = [
            (
                float(metrics.accuracy(probs[i, s], dataset.y_test)),
                float(metrics.nll(probs[i, s], dataset.y_test)),
                float(metrics.ece(probs[i, s], dataset.y_test)),
            )
            for s in range(SEEDS)
        ]
        acc, nll, ece = np.array(per_seed).T
        rows.append(
            {
                "eps": eps,
                "test_accuracy": [float(acc.mean()), float(acc.std())],
                "test_nll": [float(nll.mean()), float(nll.std())],
                "ece": [float(ece.mean()), float(ece.std())],
            }
        )
        curve = metrics.reliability_bins(probs[i, 0], dataset.y_test)
        bins[eps] = {**{k: np.asarray(v) for k, v in curve.items()}, "ece": ece[0]}
    for row in rows:
        print(
            f"  ε={row['eps']:<5} test acc {100 * row['test_accuracy'][0]:.1f} ± "
            f"{100 * row['test_accuracy'][1]:.1f}%  NLL {row['test_nll'][0]:.3f}  "
            f"ECE {row['ece'][0]:.3f} ± {row['ece'][1]:.3f}"
        )
    best = min(rows, key=lambda r: r["ece"][0])
    ece0, ece01 = rows[0]["ece"][0], rows[EPSILONS.index(0.1)]["ece"][0]
    evidence = {
        "rows": rows,
        "ece_eps0": ece0,
        "ece_eps0.1": ece01,
        "lowest_ece_eps": best["eps"],
        "smoothing_reduced_ece": bool(ece01 < ece0),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plots.reliability_diagram(
        {"no smoothing (ε=0)": bins[0.0], f"smoothing ε={best['eps']}": bins[best["eps"]]},
        args.out / f"{NAME}.png",
    )
    return report(NAME, CLAIM, evidence, ece01 < ece0, args.out)


if __name__ == "__main__":
    sys.exit(main())
