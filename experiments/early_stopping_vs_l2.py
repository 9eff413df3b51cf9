"""Early stopping ≈ L2: gradient descent stopped at step t tracks ridge with α ≈ 1/(η·t).

Part 1, least squares (diabetes, standardized; 300 training and 142 validation
examples, a fixed split): the gradient-descent path ``w_t`` from 0 with step η —
jaxreg's own training loop (:class:`jaxreg.training.TrainLoop`, full-batch SGD on
the regression task) — is compared
with the ridge path at ``α_t = c/(η t)`` for ``c`` = 0.1, 1 and 10 and with the
unregularized solution; and :func:`jaxreg.fit` with
:class:`~jaxreg.training.EarlyStopping` on the validation loss picks a stopping step
``t*`` whose weights must be closer to the ridge solution at ``α = 1/(η t*)`` than to
the unregularized one. The verdict is quantitative: PASS only when the mean relative
distance to the ridge path at the claimed mapping (c = 1) is below 0.12 *and* below
the distances at c/10 and 10c, so a mapping off by 10× fails (the test suite checks
that it does), and the early-stopped weights pass their check. Part 2 (with
``--full``), MNIST-1D MLP: validation-based early stopping (3 seeds in one
vmapped run) vs training to the last epoch, on test accuracy — reported, not judged.

Run: ``python -m experiments.early_stopping_vs_l2 [--out DIR] [--full]``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_diabetes

from experiments.common import mnist1d_data, parse_args, report, rounded, train_members
from jaxreg import data, fit, tasks
from jaxreg.nn import MLP, Model, init_params
from jaxreg.training import EarlyStopping, TrainLoop, evaluate, loop_data

NAME = "early_stopping_vs_l2"
CLAIM = (
    "Early-stopped gradient descent after t steps of size η is ridge with α = 1/(ηt): closer "
    "to that ridge path than to α = 0.1/(ηt), 10/(ηt) or the unregularized solution"
)
SEEDS = 3
DISTANCE_BOUND = 0.12


def diabetes_split():
    """Standardized diabetes (features and target), split 300 / 142 with a fixed seed."""
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    order = np.random.default_rng(0).permutation(len(y))
    train, val = order[:300], order[300:]
    return x[train], y[train], x[val], y[val]


def _linear(w, state, x, **kwargs):
    return x @ w, state


def gradient_descent_path(x, y, eta: float, steps) -> np.ndarray:
    """Full-batch gradient descent on ``(1/2n)‖Xw − y‖²`` from 0, by jaxreg's training loop.

    The regression task's loss is the mean squared error, twice that objective, so the
    loop runs SGD with step ``η/2``; one epoch is one step, and every epoch's weights are
    kept (one compiled ``lax.scan`` over :meth:`TrainLoop.run` epochs). Returns ``w_t`` at
    each of ``steps`` (1-based, increasing).
    """
    loop = TrainLoop(_linear, optax.sgd(eta / 2), batch_size=len(y), task=tasks.regression())
    data = loop_data((jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))

    def path(state, data):
        def epoch(state, _):
            state, _ = loop.run(state, data, key=jax.random.key(0), num_epochs=1)
            return state, state.params

        return jax.lax.scan(epoch, state, None, length=int(max(steps)))[1]

    weights = jax.jit(path)(loop.init(jnp.zeros(x.shape[1])), data)
    return np.asarray(weights, np.float64)[np.asarray(steps) - 1]


def early_stopped(x, y, x_val, y_val, eta: float) -> tuple[np.ndarray, int]:
    """``fit`` with EarlyStopping on the validation loss: the best weights and their step."""
    model = Model(_linear, jnp.zeros(x.shape[1]))
    result = fit(
        model,
        model.params,
        optax.sgd(eta / 2),
        (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
        key=jax.random.key(0),
        num_epochs=300,
        batch_size=len(y),
        eval_data=(jnp.asarray(x_val, jnp.float32), jnp.asarray(y_val, jnp.float32)),
        task=tasks.regression(),
        early_stopping=EarlyStopping(20, monitor="eval_loss"),
    )
    return np.asarray(result.params, np.float64), int(result.early_stopping.best_step) + 1


def ridge(gram, moment, alpha: float) -> np.ndarray:
    return np.linalg.solve(gram + alpha * np.eye(len(moment)), moment)


def least_squares_paths(scales=(0.1, 1.0, 10.0)):
    """Mean relative distance of the GD path to the ridge path at α = c/(ηt) for each c,
    and to the unregularized solution, plus the per-step curves for the figure."""
    x, y, _, _ = diabetes_split()
    n = len(y)
    gram, moment = x.T @ x / n, x.T @ y / n
    eta = 0.9 / np.linalg.eigvalsh(gram).max()
    steps = np.unique(np.logspace(0, 4, 40).astype(int))
    gd_path = gradient_descent_path(x, y, eta, steps)
    ols = np.linalg.solve(gram, moment)
    curves = {}
    for c in scales:
        path = np.stack([ridge(gram, moment, c / (eta * t)) for t in steps])
        curves[c] = np.linalg.norm(gd_path - path, axis=1) / np.linalg.norm(ols)
    to_ols = np.linalg.norm(gd_path - ols, axis=1) / np.linalg.norm(ols)
    return steps, curves, to_ols


def early_stopping_check() -> dict[str, float]:
    """EarlyStopping's weights against the ridge solution at α = 1/(η t*) and against OLS."""
    x, y, x_val, y_val = diabetes_split()
    gram, moment = x.T @ x / len(y), x.T @ y / len(y)
    eta = 0.9 / np.linalg.eigvalsh(gram).max()
    weights, stop = early_stopped(x, y, x_val, y_val, eta)
    ols = np.linalg.solve(gram, moment)
    scale = np.linalg.norm(ols)
    return {
        "early_stopping_step": stop,
        "early_stopped_distance_to_ridge_c1": float(
            np.linalg.norm(weights - ridge(gram, moment, 1 / (eta * stop))) / scale
        ),
        "early_stopped_distance_to_unregularized": float(np.linalg.norm(weights - ols) / scale),
    }


def mapping_verdict(distances: dict[float, float], claimed: float = 1.0) -> bool:
    """PASS when the claimed mapping's distance is below the bound and below the mappings
    10× smaller and 10× larger (the negative controls)."""
    ours = distances[claimed]
    return bool(
        ours < DISTANCE_BOUND and ours < distances[claimed / 10] and ours < distances[claimed * 10]
    )


def mnist1d_early_stopping(seed: int = 0):
    """Test accuracy of each seed's last epoch and of the two early-stopping rules (stopped
    on validation; test unlocked only after every run has stopped), and the best epochs."""
    mnist = mnist1d_data(validation=False)
    x_tr, y_tr, x_val, y_val = data.train_val_split(
        jax.random.key(0), mnist.x_train, mnist.y_train, 0.1
    )
    init_keys = jax.random.split(jax.random.key(seed + 1), SEEDS)
    apply, params = init_params(lambda rngs: MLP((40, 100, 100, 10), rngs=rngs), init_keys)
    rules = {
        "val_loss": EarlyStopping(10, monitor="eval_loss"),
        "val_accuracy": EarlyStopping(10, mode="max", monitor="eval_accuracy"),
    }

    def run(p, k):
        common = dict(key=k, num_epochs=150, batch_size=100, eval_data=(x_val, y_val))
        finals = {"last": fit(apply, p, optax.adam(1e-3), (x_tr, y_tr), **common).params}
        epochs = {}
        for name, rule in rules.items():
            stopped = fit(apply, p, optax.adam(1e-3), (x_tr, y_tr), early_stopping=rule, **common)
            finals[name], epochs[f"{name}_best_epoch"] = (
                stopped.params,
                stopped.early_stopping.best_step,
            )
        return finals, epochs

    finals, epochs = train_members(run, params, jax.random.split(jax.random.key(seed + 2), SEEDS))
    mnist.test.unlock()  # every run has stopped on validation: test is read from here on
    x_test, y_test = mnist.test.read()
    accuracy = jax.vmap(lambda q: evaluate(apply, q, x_test, y_test)["accuracy"])
    return {**{name: accuracy(members) for name, members in finals.items()}, **epochs}


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    steps, curves, to_ols = least_squares_paths()
    distances = {c: float(curve.mean()) for c, curve in curves.items()}
    print(
        "  least squares: mean relative distance to ridge at α = c/(ηt): "
        + ", ".join(f"c={c:g}: {v:.4f}" for c, v in distances.items())
        + f"; to OLS {to_ols.mean():.4f}"
    )
    evidence = {
        "seed": args.seed,
        "mean_distance_to_ridge_path_c1": distances[1.0],
        "mean_distance_to_ridge_path_c0.1": distances[0.1],
        "mean_distance_to_ridge_path_c10": distances[10.0],
        "distance_bound": DISTANCE_BOUND,
        "mean_distance_to_unregularized": float(to_ols.mean()),
        "max_distance_to_ridge_path_c1": float(curves[1.0].max()),
    }
    stopping = early_stopping_check()
    evidence.update(stopping)
    print(
        f"  fit + EarlyStopping stopped at step {stopping['early_stopping_step']}: distance to "
        f"ridge at α = 1/(ηt*) {stopping['early_stopped_distance_to_ridge_c1']:.4f}, to OLS "
        f"{stopping['early_stopped_distance_to_unregularized']:.4f}"
    )
    passed = (
        mapping_verdict(distances)
        and distances[1.0] < float(to_ols.mean())
        and stopping["early_stopped_distance_to_ridge_c1"]
        < stopping["early_stopped_distance_to_unregularized"]
    )
    if args.full:
        mnist = {k: np.asarray(v) for k, v in mnist1d_early_stopping(args.seed).items()}
        for name in ("val_loss", "val_accuracy"):
            print(
                f"  MNIST-1D, stopping on {name}: test {100 * mnist[name].mean():.1f}% (best "
                f"epochs {mnist[name + '_best_epoch'].tolist()}); last epoch "
                f"{100 * mnist['last'].mean():.1f}%"
            )
        evidence.update(
            {
                "mnist1d_test_accuracy_last_epoch": rounded(mnist["last"]),
                "mnist1d_test_accuracy_stop_on_val_loss": rounded(mnist["val_loss"]),
                "mnist1d_best_epoch_val_loss": mnist["val_loss_best_epoch"].tolist(),
                "mnist1d_test_accuracy_stop_on_val_accuracy": rounded(mnist["val_accuracy"]),
                "mnist1d_best_epoch_val_accuracy": mnist["val_accuracy_best_epoch"].tolist(),
            }
        )

    from jaxreg.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for c, curve in curves.items():
        ax.plot(steps, curve, label=f"to ridge with α = {c:g}/(ηt)", lw=2 if c == 1.0 else 1)
    ax.plot(steps, to_ols, "k--", label="to the unregularized solution")
    ax.set_xscale("log")
    ax.set_xlabel("gradient-descent step t")
    ax.set_ylabel("‖w_t − w‖ / ‖w_OLS‖")
    ax.set_title("Early stopping tracks the ridge path at α = 1/(ηt) (diabetes)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    save(fig, args.out / f"{NAME}.png")
    return report(NAME, CLAIM, evidence, passed, args.out)


if __name__ == "__main__":
    sys.exit(main())
