"""Input noise ≡ L2 for linear models: least squares on noisy inputs lands on the ridge solution.

For ``E_ε (1/2n)||y - (X+ε)w||²`` with ``ε ~ N(0, σ²)`` the objective is
``(1/2n)||y - Xw||² + σ²·½||w||²``: ridge with strength ``σ²``. We train on
noisy inputs (vmapped over σ, Polyak-averaged SGD) and compare with the
closed-form ridge weights.

PASS needs every σ within 2% (relative) of ridge at λ = σ²; the same weights
judged against λ = σ or λ = 2σ² FAIL (tested).

Run: ``python -m experiments.noise_equals_l2 [--out DIR]``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import parse_args, report, rounded
from jaxreg import noise, sweeps

NAME = "noise_equals_l2"
CLAIM = "Training a linear model on inputs with N(0, σ²) noise gives the ridge solution, λ = σ²"


def ridge_path(x, y, strengths) -> np.ndarray:
    """Closed-form minimizers of ``(1/2n)||y - Xw||² + λ·½||w||²`` for every λ in ``strengths``."""
    n, d = x.shape
    gram, moment = x.T @ x / n, x.T @ y / n
    return np.stack([np.linalg.solve(gram + lam * np.eye(d), moment) for lam in strengths])


def verdict(noisy_weights, x, y, sigmas, mapping=lambda sigma: sigma**2, tol: float = 0.02):
    """PASS and the relative errors when every σ's noisy-input weights lie within ``tol``
    of the ridge solution at λ = ``mapping(σ)`` (the claim: λ = σ²)."""
    ridge = ridge_path(x, y, [mapping(s) for s in np.asarray(sigmas)])
    error = np.linalg.norm(np.asarray(noisy_weights) - ridge, axis=1)
    error = error / np.linalg.norm(ridge, axis=1)
    return bool(error.max() < tol), error


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    rng = np.random.default_rng(0)
    n, d = 300, 6
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.array([2.0, -1.0, 0.5, 0.0, 1.5, -0.7]) + 0.5 * rng.normal(size=n)).astype(
        np.float32
    )
    sigmas = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0], np.float32)
    replicas, lr, steps = 16, 0.02, 3000  # max relative error 1.4e-3 (64 × 6000: 2.3e-4)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def train(sigma):
        def loss(w, key):
            noisy = noise.gaussian_input_noise(key, jnp.broadcast_to(xj, (replicas, n, d)), sigma)
            return jnp.mean((noisy @ w - yj) ** 2) / 2

        def step(w, key):
            w = w - lr * jax.grad(loss)(w, key)
            return w, w

        _, path = jax.lax.scan(
            step, jnp.zeros(d), jax.random.split(jax.random.key(args.seed + 1), steps)
        )
        return path[steps // 2 :].mean(0)

    sweep = sweeps.run(
        lambda config, key: train(config["sigma"]),
        sweeps.grid(sigma=sigmas),
        key=jax.random.key(args.seed),
        progress=False,
    )
    noisy_weights = np.asarray(sweep.metrics)
    ridge = ridge_path(x, y, sigmas**2)
    passed, rel_error = verdict(noisy_weights, x, y, sigmas)
    evidence = {
        "seed": args.seed,
        "sigmas": sigmas.tolist(),
        "relative_error_per_sigma": rounded(rel_error, 6),
        "max_relative_error": float(rel_error.max()),
        "norm_noisy_weights": rounded(np.linalg.norm(noisy_weights, axis=1)),
        "norm_ridge_weights": rounded(np.linalg.norm(ridge, axis=1)),
    }

    from jaxreg.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j in range(d):
        ax.plot(sigmas, ridge[:, j], "-", color=f"C{j}", lw=1.5)
        ax.plot(sigmas, noisy_weights[:, j], "o", color=f"C{j}", ms=5)
    ax.set_xlabel("input noise σ (ridge strength λ = σ²)")
    ax.set_ylabel("weight")
    ax.set_title("Noisy-input training (dots) vs closed-form ridge (lines)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    save(fig, args.out / f"{NAME}.png")
    return report(NAME, CLAIM, evidence, passed, args.out)


if __name__ == "__main__":
    sys.exit(main())
