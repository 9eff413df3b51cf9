"""Sharp vs flat minima: small vs large batch, SAM and weight decay on the MNIST-1D MLP.

Four arms × 3 seeds (each arm one vmapped run): Adam (1e-3, 80 epochs) with
batch 32, batch 500, batch 32 + SAM (``optax.contrib.sam``, ρ = 0.05) and batch
32 + decoupled weight decay. For every trained model, vmapped over seeds:
top Hessian eigenvalue (Lanczos), trace (Hutch++), SAM ρ-sharpness, test
accuracy. For the sharpest and flattest arms: Hessian spectral densities and
filter-normalized 2-D loss slices.

Run: ``python -m jaxreg.experiments.sharp_vs_flat [--out DIR]``.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from jaxreg import data, fit, landscape, plots, sharpness, transforms
from jaxreg.experiments._common import parse_args, report, rounded
from jaxreg.losses import classification_loss
from jaxreg.masks import weights_only
from jaxreg.nn import MLP, init_params

NAME = "sharp_vs_flat"
CLAIM = (
    "The flattest arm (lowest top Hessian eigenvalue) has higher test accuracy than the sharpest"
)
SEEDS = 3
EPOCHS = 80


def sam(rho: float) -> optax.GradientTransformation:
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    return optax.contrib.sam(optax.adam(1e-3), adversary, sync_period=2)


ARMS = {
    "batch 32": (32, lambda: optax.adam(1e-3)),
    "batch 500": (500, lambda: optax.adam(1e-3)),
    "batch 32 + SAM": (32, lambda: sam(0.05)),
    "batch 32 + weight decay": (
        32,
        lambda: optax.chain(
            optax.adam(1e-3), transforms.decoupled_weight_decay(1e-4, mask=weights_only)
        ),
    ),
}


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    dataset = data.mnist1d()
    apply, params = init_params(
        lambda rngs: MLP((40, 100, 100, 10), rngs=rngs), jax.random.split(jax.random.key(0), SEEDS)
    )
    loss_fn = classification_loss(apply)
    train_batches = data.batches(dataset.x_train, dataset.y_train, 500)

    def measure(p):
        top, _, _ = sharpness.top_eigenvalues(
            loss_fn, p, train_batches, key=jax.random.key(1), num_iters=30
        )
        trace, _ = sharpness.hessian_trace(
            loss_fn, p, train_batches, key=jax.random.key(2), num_samples=30
        )
        rho_sharp = sharpness.sam_sharpness(loss_fn, p, train_batches, 0.05)
        return top[0], trace, rho_sharp

    rows, trained = {}, {}
    for name, (batch_size, make_optimizer) in ARMS.items():

        def run(p, k, batch_size=batch_size, make_optimizer=make_optimizer):
            result = fit(
                apply,
                p,
                make_optimizer(),
                (dataset.x_train, dataset.y_train),
                key=k,
                num_epochs=EPOCHS,
                batch_size=batch_size,
                eval_data=(dataset.x_test, dataset.y_test),
            )
            return result.params, result.history, measure(result.params)

        final, history, (top, trace, rho_sharp) = jax.jit(jax.vmap(run))(
            params, jax.random.split(jax.random.key(3), SEEDS)
        )
        trained[name] = jax.tree.map(lambda a: a[0], final)
        test = np.asarray(history["eval_accuracy"][:, -1])
        rows[name] = {
            "test_accuracy": rounded(test),
            "train_accuracy": rounded(history["train_accuracy"][:, -1]),
            "lambda_max": rounded(top),
            "trace": rounded(trace, 2),
            "sam_sharpness": rounded(rho_sharp, 5),
        }
        print(
            f"  {name:<24} test {100 * test.mean():.1f} ± {100 * test.std():.1f}%  "
            f"λmax {np.mean(top):8.3f}  trace {np.mean(trace):9.2f}  "
            f"ρ-sharpness {np.mean(rho_sharp):.4f}"
        )
    by_sharpness = sorted(rows, key=lambda n: np.mean(rows[n]["lambda_max"]))
    flattest, sharpest = by_sharpness[0], by_sharpness[-1]
    passed = bool(
        np.mean(rows[flattest]["test_accuracy"]) > np.mean(rows[sharpest]["test_accuracy"])
    )
    evidence = {
        "epochs": EPOCHS,
        "arms": rows,
        "flattest": flattest,
        "sharpest": sharpest,
        "flatter_went_with_better_test_accuracy": passed,
    }

    args.out.mkdir(parents=True, exist_ok=True)
    densities, slices = {}, {}
    for name in (sharpest, flattest):
        density = sharpness.spectral_density(
            loss_fn, trained[name], train_batches, key=jax.random.key(4), num_iters=60, num_runs=2
        )
        densities[name] = (density.grid, density.density)
        slices[name] = landscape.slice_2d(
            loss_fn, trained[name], train_batches, key=jax.random.key(5), span=1.0, resolution=21
        )
    plots.spectral_density(densities, args.out / f"{NAME}_density.png")
    plots.landscapes(slices, args.out / f"{NAME}_landscape.png")
    plots.error_bars(
        list(rows),
        np.array([np.mean(r["lambda_max"]) for r in rows.values()]),
        np.array([np.std(r["lambda_max"]) for r in rows.values()]),
        args.out / f"{NAME}.png",
        ylabel="top Hessian eigenvalue",
        title="Sharpness of the trained MLP (3 seeds)",
    )
    return report(NAME, CLAIM, evidence, passed, args.out)


if __name__ == "__main__":
    sys.exit(main())
