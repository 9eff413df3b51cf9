"""Parameter sharing: a CNN uses far fewer weights than an MLP and generalizes better.

MNIST-1D: the 40-100-100-10 MLP, a smaller MLP (40-120-10) with a budget near
the CNN's, and the MNIST-1D paper's CNN1D (the paper reports MLP ≈ 68%,
CNN ≈ 94% test), 3 seeds each. Plus the classic arithmetic on a 224×224 image:
a dense unit needs 50,176 weights, a 3×3 filter 9.

Run: ``python -m jaxreg.experiments.parameter_sharing [--out DIR]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from jaxreg import plots
from jaxreg.experiments._common import parse_args, report, rounded, train_mnist1d
from jaxreg.nn import CNN1D, MLP, count_params, dense_vs_conv, init_params

NAME = "parameter_sharing"
CLAIM = (
    "A 3×3 filter cuts the weights of a dense unit on a 224×224 image by > 99%, and on "
    "MNIST-1D the CNN beats MLPs of larger and similar size with fewer parameters"
)
SEEDS = 3
ARMS = {
    "MLP 40-100-100-10": (lambda h, rngs: MLP((40, 100, 100, 10), rngs=rngs), 1e-3, 100),
    "MLP 40-120-10": (lambda h, rngs: MLP((40, 120, 10), rngs=rngs), 1e-3, 100),
    "CNN1D": (lambda h, rngs: CNN1D(rngs=rngs), 1e-2, 50),
}


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    cost = dense_vs_conv((224, 224, 1), (3, 3))
    reduction = 1 - cost.conv_weights_per_filter / cost.dense_weights_per_unit
    print(
        f"  224×224 image: dense unit {cost.dense_weights_per_unit:,} weights, 3×3 filter "
        f"{cost.conv_weights_per_filter} ({100 * reduction:.3f}% fewer)"
    )
    results = {}
    for name, (make_model, lr, epochs) in ARMS.items():
        history, _, _, _ = train_mnist1d(
            [0.0],
            SEEDS,
            lambda h, lr=lr: dict(optimizer=optax.adam(lr)),
            make_model=make_model,
            num_epochs=epochs,
        )
        _, params = init_params(
            lambda rngs, m=make_model: m(0.0, rngs), jax.random.split(jax.random.key(0), 1)
        )
        test = np.asarray(history["eval_accuracy"][0, :, -1])
        results[name] = {"params": count_params(params), "test_accuracy": rounded(test)}
        print(
            f"  {name}: {results[name]['params']:,} params, test {100 * test.mean():.1f} ± "
            f"{100 * test.std():.1f}%"
        )
    cnn = results["CNN1D"]
    mlps = [v for k, v in results.items() if k.startswith("MLP")]
    passed = bool(
        reduction > 0.99
        and all(
            np.mean(cnn["test_accuracy"]) > np.mean(m["test_accuracy"])
            and cnn["params"] < m["params"]
            for m in mlps
        )
    )
    evidence = {
        "dense_weights_per_unit_224": cost.dense_weights_per_unit,
        "conv_weights_per_filter_3x3": cost.conv_weights_per_filter,
        "weight_reduction": reduction,
        "mnist1d": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(results)
    means = np.array([100 * np.mean(results[n]["test_accuracy"]) for n in names])
    sds = np.array([100 * np.std(results[n]["test_accuracy"]) for n in names])
    plots.error_bars(
        [f"{n}\n({results[n]['params']:,} params)" for n in names],
        means,
        sds,
        args.out / f"{NAME}.png",
        ylabel="test accuracy (%)",
        title="Parameter sharing on MNIST-1D (3 seeds)",
    )
    return report(NAME, CLAIM, evidence, passed, args.out)


if __name__ == "__main__":
    sys.exit(main())
