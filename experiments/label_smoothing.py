"""Label smoothing and calibration: the overfitting MNIST-1D MLP with ε ∈ {0, 0.05, 0.1, 0.2}.

All ε × 5 seeds train in one vmapped run (ε is traced). For each ε we report
test accuracy, NLL and ECE (15 equal-width bins) and draw reliability
diagrams for ε = 0 and the claimed ε = 0.1 (nothing is selected). PASS needs the
one-sided 95% lower bound of the paired ECE reduction (ε = 0 minus ε = 0.1, per
seed, Student t) above 0; ε = 0 against itself FAILs (tested).

100 epochs; ``--quick`` (the test suite) ε ∈ {0, 0.1}, 40 epochs, same 5 seeds.

Run: ``python -m experiments.label_smoothing [--out DIR] [--quick]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from experiments.common import configuration, mnist1d_data, parse_args, report, train_mnist1d
from jaxreg import labels, metrics, plots
from jaxreg.stats import one_sided_lower_bound

NAME = "label_smoothing"
CLAIM = (
    "Label smoothing lowers the test ECE of the overfitting MLP (ε = 0.1 vs ε = 0, 5 seeds, "
    "one-sided paired 95% lower bound of the reduction > 0)"
)
FULL = {"epsilons": [0.0, 0.05, 0.1, 0.2], "seeds": 5, "epochs": 100}
QUICK = {"epsilons": [0.0, 0.1], "seeds": 5, "epochs": 40}


def verdict(ece_smoothed, ece_plain) -> tuple[bool, float]:
    """PASS and the lower bound of the paired ECE reduction (plain − smoothed, per seed)."""
    bound = one_sided_lower_bound(np.asarray(ece_plain) - np.asarray(ece_smoothed))
    return bool(bound > 0), bound


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    config = configuration(args, FULL, QUICK)
    epsilons, seeds = config["epsilons"], config["seeds"]

    def make_run(eps):
        return dict(
            optimizer=optax.adam(1e-3),
            batch_transform=lambda k, b: {**b, "y": labels.smooth(b["y"], 10, eps)},
        )

    data = mnist1d_data(validation=False)
    data.test.unlock()  # nothing is chosen: ε = 0.1 against 0 is fixed in advance
    _history, params, apply = train_mnist1d(
        epsilons, seeds, make_run, data=data, key_seed=args.seed, num_epochs=config["epochs"]
    )
    x_test, y_test = data.test.read()
    logits = jax.vmap(jax.vmap(lambda p: apply(p, x_test)))(params)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    rows, bins, eces = [], {}, {}
    for i, eps in enumerate(epsilons):
        per_seed = [
            (
                float(metrics.accuracy(probs[i, s], y_test)),
                float(metrics.nll(probs[i, s], y_test)),
                float(metrics.ece(probs[i, s], y_test)),
            )
            for s in range(seeds)
        ]
        acc, nll, ece = np.array(per_seed).T
        eces[eps] = ece
        rows.append(
            {
                "eps": eps,
                "test_accuracy": [float(acc.mean()), float(acc.std())],
                "test_nll": [float(nll.mean()), float(nll.std())],
                "ece": [float(ece.mean()), float(ece.std())],
            }
        )
        curve = metrics.reliability_bins(probs[i, 0], y_test)
        bins[eps] = {**{k: np.asarray(v) for k, v in curve.items()}, "ece": ece[0]}
    for row in rows:
        print(
            f"  ε={row['eps']:<5} test acc {100 * row['test_accuracy'][0]:.1f} ± "
            f"{100 * row['test_accuracy'][1]:.1f}%  NLL {row['test_nll'][0]:.3f}  "
            f"ECE {row['ece'][0]:.3f} ± {row['ece'][1]:.3f}"
        )
    passed, bound = verdict(eces[0.1], eces[0.0])
    evidence = {
        **config,
        "rows": rows,
        "ece_eps0_per_seed": [round(float(v), 4) for v in eces[0.0]],
        "ece_eps0.1_per_seed": [round(float(v), 4) for v in eces[0.1]],
        "ece_reduction_mean": float(np.mean(eces[0.0] - eces[0.1])),
        "ece_reduction_lower_95": bound,
        "test": "one-sided paired t over seeds, PASS if the 95% lower bound > 0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plots.reliability_diagram(
        {"no smoothing (ε=0)": bins[0.0], "smoothing ε=0.1": bins[0.1]},
        args.out / f"{NAME}.png",
    )
    return report(NAME, CLAIM, evidence, passed, args.out)


if __name__ == "__main__":
    sys.exit(main())
