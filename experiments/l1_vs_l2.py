"""L1 gives exact zeros and L2 does not: regularization paths on scikit-learn's diabetes data.

The lasso and elastic-net paths are computed with ``jaxreg.prox`` inside FISTA,
vmapped over all penalty strengths (one compile); the ridge path with gradient
descent on ``jaxreg.penalties.l2``. The L1 path is checked against
``sklearn.linear_model.lasso_path``.

PASS needs the lasso path to have exact zeros in scikit-learn's pattern (values
within 1e-5 of its largest coefficient) and the ridge path none; a "lasso" without
exact zeros, or a ridge path with them, FAILs (tested).

Run: ``python -m experiments.l1_vs_l2 [--out DIR]``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import lasso_path

from experiments.common import parse_args, report
from jaxreg import penalties, prox, sweeps
from jaxreg.solvers import proximal_gradient

NAME = "l1_vs_l2"
CLAIM = "L1 (proximal) paths match scikit-learn's lasso_path with exact zeros; L2 never zeroes"


def verdict(l1_path, reference_l1_path, l2_path, rtol: float = 1e-5) -> bool:
    """PASS when the L1 path has exact zeros, matches the reference (scikit-learn's lasso
    path: same zero pattern, values within ``rtol`` of its largest coefficient) and the
    L2 path has no exact zero."""
    l1_path, reference = np.asarray(l1_path), np.asarray(reference_l1_path)
    scale = np.abs(reference).max()
    return bool(
        np.any(l1_path == 0.0)
        and np.array_equal(l1_path == 0.0, reference == 0.0)
        and np.abs(l1_path - reference).max() < rtol * scale
        and not np.any(np.asarray(l2_path) == 0.0)
    )


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    jax.config.update("jax_enable_x64", True)
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = y - y.mean()
    n, d = x.shape
    # scikit-learn's default grid starts exactly at alpha_max, a knot where one
    # coefficient is 0 only up to rounding; start the grid just above it instead.
    alpha_max = np.abs(x.T @ y).max() / n
    grid = alpha_max * np.logspace(0.05, -3, 40)
    alphas, sk_coefs, _ = lasso_path(x, y, alphas=grid, tol=1e-14, max_iter=10**6)
    sk_coefs = sk_coefs.T  # (alphas, features)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    lipschitz = float(np.linalg.eigvalsh(x.T @ x / n).max())

    def smooth_loss(w):
        return jnp.sum((xj @ w - yj) ** 2) / (2 * n)

    def over_alphas(solve):
        """``solve(alpha)`` for every alpha of the path: one sweep, one compile."""
        sweep = sweeps.run(
            lambda config, key: solve(config["alpha"]),
            sweeps.grid(alpha=alphas),
            key=jax.random.key(args.seed),
            progress=False,
        )
        return np.asarray(sweep.metrics)

    def path(make_prox, extra_lipschitz=0.0):
        def solve(alpha):
            return proximal_gradient(
                smooth_loss,
                make_prox(alpha),
                jnp.zeros(d),
                step_size=1.0 / (lipschitz + extra_lipschitz),
                num_iters=20000,
            )

        return over_alphas(solve)

    l1_path = path(lambda a: lambda v, s: prox.l1(v, s * a))
    en_path = path(lambda a: lambda v, s: prox.elastic_net(v, s * a, 0.5))

    def ridge(alpha):
        def objective(w):
            return smooth_loss(w) + alpha * penalties.l2(w)

        grad = jax.grad(objective)
        step = 1.0 / (lipschitz + alpha)
        return jax.lax.fori_loop(0, 20000, lambda _, w: w - step * grad(w), jnp.zeros(d))

    l2_path = over_alphas(ridge)

    scale = np.abs(sk_coefs).max()
    max_abs_diff = float(np.abs(l1_path - sk_coefs).max())
    same_zeros = bool(np.array_equal(l1_path == 0.0, sk_coefs == 0.0))
    evidence = {
        "seed": args.seed,
        "num_alphas": len(alphas),
        "l1_max_abs_diff_vs_sklearn": max_abs_diff,
        "l1_max_rel_diff_vs_sklearn": max_abs_diff / scale,
        "l1_identical_zero_pattern": same_zeros,
        "l1_exact_zeros": int(np.sum(l1_path == 0.0)),
        "elastic_net_exact_zeros": int(np.sum(en_path == 0.0)),
        "l2_exact_zeros": int(np.sum(l2_path == 0.0)),
        "total_coefficients": int(l1_path.size),
    }
    passed = verdict(l1_path, sk_coefs, l2_path)

    _figure(alphas, (l1_path, en_path, l2_path), sk_coefs, args.out)
    return report(NAME, CLAIM, evidence, passed, args.out)


def _figure(alphas, paths, sk_coefs, out) -> None:
    from jaxreg.plots import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, coefs, title in zip(
        axes,
        paths,
        ("L1 (lasso, proximal)", "elastic net (ρ=0.5)", "L2 (ridge)"),
        strict=True,
    ):
        ax.plot(alphas, coefs)
        ax.set_xscale("log")
        ax.set_xlabel("penalty strength α")
        ax.set_title(f"{title}: {int(np.sum(coefs == 0.0))} exact zeros")
        ax.grid(alpha=0.3)
    axes[0].plot(alphas, sk_coefs, "k:", lw=0.8)
    axes[0].set_ylabel("coefficient")
    fig.suptitle("Regularization paths on diabetes (dotted: scikit-learn lasso_path)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    save(fig, out / f"{NAME}.png")


if __name__ == "__main__":
    sys.exit(main())
