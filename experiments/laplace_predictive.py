"""A last-layer Laplace predictive against the MAP, MC dropout and a deep ensemble on MNIST-1D.

The baseline MLP (40-100-100-10) trains with the L2 penalty ``λ·½‖θ‖²`` (λ = 1e-3,
Adam 1e-3, batch 100) on all 4,000 training examples, for 5 seeds × 5 ensemble
members, plus one MLP with dropout 0.1 per seed, in two :func:`jaxreg.sweeps.run`
calls. Per seed, on test:

- **MAP**: member 0's softmax;
- **Laplace**: a full Laplace approximation of member 0's last layer (1,010
  parameters), its prior precision chosen by MacKay's evidence update on the
  training data alone, and the linearized (GLM) predictive with the probit link;
- **MC dropout**: the dropout model, 32 stochastic passes;
- **ensemble**: the 5 members' mean softmax (5 trainings, against one for the others).

No choice reads test (λ, the rate and the member count are fixed here; the prior
precision comes from the training data), so test is unlocked once training is done.
PASS needs the Laplace predictive to lower test NLL against its own MAP: the
one-sided 95% lower bound of the paired NLL reduction over seeds above 0. The
other arms are reported beside it, with their ranks by NLL and by ECE.

``--quick`` (the test suite): 2 seeds × 2 members, 3 epochs.

Run: ``python -m experiments.laplace_predictive [--out DIR] [--quick]``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.common import (
    configuration,
    mnist1d_data,
    parse_args,
    report,
    rounded,
    train_members,
)
from jaxreg import fit, laplace, masks, metrics, penalties, plots
from jaxreg.data import batches
from jaxreg.nn import MLP, init_params, mc_predict
from jaxreg.stats import one_sided_lower_bound

NAME = "laplace_predictive"
CLAIM = (
    "A last-layer Laplace predictive (GLM, probit; prior precision by MacKay's evidence "
    "update on the training data) lowers test NLL relative to its MAP network "
    "(paired over seeds, one-sided 95% lower bound > 0)"
)
FULL = {"seeds": 5, "members": 5, "epochs": 100, "weight_decay": 1e-3, "dropout_rate": 0.1}
QUICK = {"seeds": 2, "members": 2, "epochs": 3, "weight_decay": 1e-3, "dropout_rate": 0.1}
ARMS = ("MAP", "Laplace (last layer)", "MC dropout", "ensemble")
LAST_LAYER = r"layers/2/"


def verdict(nll_map, nll_laplace) -> tuple[bool, float]:
    """PASS and the lower bound of the paired NLL reduction (MAP − Laplace, per seed)."""
    bound = one_sided_lower_bound(np.asarray(nll_map) - np.asarray(nll_laplace))
    return bool(bound > 0), bound


def _train(config: dict, x, y, *, rate: float, members: int, key_seed: int):
    """``(apply, params)`` of ``seeds × members`` models; params shaped ``(seeds, members, …)``."""

    def make(rngs):
        return MLP((40, 100, 100, 10), dropout_rate=rate, rngs=rngs)

    seeds, count = config["seeds"], config["seeds"] * members
    init_keys = jax.random.split(jax.random.key(key_seed), count)
    train_keys = jax.random.split(jax.random.key(key_seed + 1), count)
    apply, _ = init_params(make, init_keys[:1])

    def run(init_key, train_key):
        params = jax.tree.map(lambda a: a[0], init_params(make, init_key[None])[1])
        result = fit(
            apply,
            params,
            optax.adam(1e-3),
            (x, y),
            key=train_key,
            num_epochs=config["epochs"],
            batch_size=100,
            penalty=penalties.l2,
            penalty_strength=config["weight_decay"],
        )
        return result.params

    params = train_members(run, init_keys, train_keys)  # one sweeps.run over the members
    return apply, jax.tree.map(lambda a: a.reshape(seeds, members, *a.shape[1:]), params)


def _scores(probs, y) -> dict[str, float]:
    return {
        "nll": float(metrics.nll(probs, y)),
        "ece": float(metrics.ece(probs, y)),
        "accuracy": float(metrics.accuracy(probs, y)),
    }


def _laplace_probs(apply, params, train, x_test):
    la = laplace.fit_laplace(apply, params, train, wrt=masks.by_path(LAST_LAYER))
    prior = laplace.optimize_prior_precision(la, method="mackay", num_steps=100)
    return laplace.glm_predictive(la, apply, x_test, prior_precision=prior).mean, prior


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    config = configuration(args, FULL, QUICK)
    data = mnist1d_data(validation=False)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    apply, members = _train(config, x, y, rate=0.0, members=config["members"], key_seed=args.seed)
    dropout_apply, dropout = _train(
        config, x, y, rate=config["dropout_rate"], members=1, key_seed=args.seed + 500
    )
    data.test.unlock()  # nothing is chosen on test: the settings are fixed above
    x_test, y_test = (jnp.asarray(a) for a in data.test.read())
    train = batches(x, y, 500)
    laplace_fn = jax.jit(lambda p: _laplace_probs(apply, p, train, x_test))
    scores = {arm: [] for arm in ARMS}
    priors = []
    for seed in range(config["seeds"]):
        own = jax.tree.map(lambda a, s=seed: a[s], members)
        first = jax.tree.map(lambda a: a[0], own)
        scores["MAP"].append(_scores(jax.nn.softmax(apply(first, x_test)), y_test))
        probs, prior = laplace_fn(first)
        priors.append(float(prior))
        scores["Laplace (last layer)"].append(_scores(probs, y_test))
        sampled = mc_predict(
            dropout_apply,
            jax.tree.map(lambda a, s=seed: a[s, 0], dropout),
            x_test,
            key=jax.random.key(args.seed + seed),
            num_samples=32,
        )
        scores["MC dropout"].append(_scores(sampled.mean, y_test))
        ensemble = jnp.mean(jax.vmap(lambda p: jax.nn.softmax(apply(p, x_test)))(own), axis=0)
        scores["ensemble"].append(_scores(ensemble, y_test))
    table = {arm: {k: [s[k] for s in rows] for k in rows[0]} for arm, rows in scores.items()}
    passed, bound = verdict(table["MAP"]["nll"], table["Laplace (last layer)"]["nll"])
    means = {arm: {k: float(np.mean(v)) for k, v in row.items()} for arm, row in table.items()}
    evidence = {
        **config,
        "test_per_seed": {
            arm: {k: rounded(v) for k, v in row.items()} for arm, row in table.items()
        },
        "test_means": {arm: {k: round(v, 4) for k, v in row.items()} for arm, row in means.items()},
        "rank_by_nll": sorted(ARMS, key=lambda a: means[a]["nll"]),
        "rank_by_ece": sorted(ARMS, key=lambda a: means[a]["ece"]),
        "laplace_prior_precision": rounded(priors),
        "nll_reduction_mean": float(
            np.mean(np.subtract(table["MAP"]["nll"], table["Laplace (last layer)"]["nll"]))
        ),
        "nll_reduction_lower_95": bound,
        "test": "one-sided paired t over seeds, PASS if the 95% lower bound of MAP NLL − "
        "Laplace NLL > 0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plots.error_bars(
        list(ARMS),
        np.array([means[a]["nll"] for a in ARMS]),
        np.array([np.std(table[a]["nll"]) for a in ARMS]),
        args.out / f"{NAME}.png",
        ylabel="test NLL",
        title=f"Test NLL by predictive ({config['seeds']} seeds, sd)",
    )
    return report(NAME, CLAIM, evidence, passed, args.out)


if __name__ == "__main__":
    sys.exit(main())
