"""The study's Bayesian rows: the evidence route, per-row references, the Bayesian comparisons.

References: a dense float64 Laplace evidence (``G = JᵀHJ`` by autodiff, KFAC is exact for
one dense layer and one example), and test_conclusions' scipy paired t-test and t-interval
and Holm's procedure written as its sequential rejection rule.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_conclusions import holm_rejections, reference_differences, scipy_paired

from experiments import tour
from experiments.study import Row, StudyConfig, bayes, prepare_data, run_row
from experiments.study.report import ALPHA, compare_to_references
from experiments.study.spec import bayesian_rows, default_rows, scaled_by
from jaxreg import data as data_lib
from jaxreg import penalties
from jaxreg.nn import MLP, functional

TINY = StudyConfig(
    seeds=2, tune_seeds=1, epochs=2, search_configs=2, search_seeds=1, compile_level=0
)


def dense_evidence(apply, params, x, y, strength):
    """log p(y|θ) − ½(log det(G + P₀) − log det P₀ + θᵀP₀θ), dense, float64, with ``G`` the
    GGN's bias and kernel blocks (KFAC keeps each leaf a block of its own, as laplace-torch)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    is_kernel = jnp.arange(flat.size) >= 2  # leaf order: the bias (2), then the kernel (3 × 2)
    prior = jnp.where(is_kernel, strength * len(y), bayes.BIAS_PRIOR_PRECISION)

    def logits_of(flat, xi):
        return apply(unravel(flat), xi[None])[0]

    ggn = jnp.zeros((flat.size, flat.size))
    total = 0.0
    for xi, yi in zip(x, y, strict=True):
        logits = logits_of(flat, xi)
        probs = jax.nn.softmax(logits)
        jac = jax.jacfwd(logits_of)(flat, xi)
        ggn = ggn + jac.T @ (jnp.diag(probs) - jnp.outer(probs, probs)) @ jac
        total = total + jax.nn.log_softmax(logits)[yi]
    ggn = jnp.where(is_kernel[:, None] == is_kernel[None, :], ggn, 0.0)
    _, log_det = jnp.linalg.slogdet(ggn + jnp.diag(prior))
    return total - 0.5 * (log_det - jnp.sum(jnp.log(prior)) + flat @ (prior * flat))


@pytest.mark.parametrize("strength", [1e-3, 0.3])
def test_l2_evidence_is_the_dense_laplace_evidence_of_the_penalty_as_a_prior(x64, strength):
    """One dense layer and one example: KFAC's kernel and bias blocks are exact, so the
    study's evidence must equal the dense Laplace evidence (those blocks) with δ = N·λ on
    the kernel and the bias prior on the bias."""
    apply, params = functional(MLP((3, 2), rngs=nnx.Rngs(0)))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) + 0.3, params)
    x = jnp.array([[0.5, -1.0, 2.0]], jnp.float64)
    y = jnp.array([1])
    got = bayes.l2_evidence(apply, params, x, y, {"l2_strength": strength})
    want = dense_evidence(apply, params, x, y, strength)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_an_evidence_row_trains_on_validation_too_and_chooses_by_its_evidence():
    """The evidence picks the strength validation accuracy would never pick (a penalty so
    strong the network collapses), and the row saw training + validation data."""
    seen = []

    def evidence(apply, params, x, y, hparams):
        seen.append(len(y))
        return jnp.log(hparams["l2_strength"]) + 0.0 * jax.tree.leaves(params)[0].sum()

    row = Row(
        "L2 by evidence",
        "",
        search={"l2_strength": (1e-4, 30.0)},
        penalty=scaled_by("l2_strength", penalties.l2),
        evidence=evidence,
    )
    rng = np.random.default_rng(0)  # a learnable stand-in for MNIST-1D: 40 features, 10 classes
    x = rng.normal(size=(450, 40)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1)
    config = dataclasses.replace(TINY, epochs=10, val_size=100)
    data = prepare_data(data_lib.Dataset(x[:400], y[:400], x[400:], y[400:]), config)
    outcome = run_row(row, data, config, key=jax.random.key(0), final_key=jax.random.key(1))
    assert outcome["chosen"] == {"l2_strength": 30.0}
    assert set(seen) == {len(data.y_train) + len(data.y_val)}
    np.testing.assert_allclose(outcome["tuning"].score, np.log([1e-4, 30.0]), rtol=1e-6)
    assert np.isnan(outcome["final"].val_accuracy).all()  # validation was training data
    assert data.test.reads == 0
    plain = dataclasses.replace(row, evidence=None)  # the same row chosen on validation
    assert run_row(plain, data, config, key=jax.random.key(0), final_key=jax.random.key(1))[
        "chosen"
    ] == {"l2_strength": 1e-4}


def test_rows_that_tune_the_learning_rate_are_compared_with_the_tuned_baseline():
    rows = {row.key: row for row in default_rows()}
    assert {k for k, r in rows.items() if "learning_rate" in r.search} == {
        "tuned_baseline",
        "small_batch",
        "large_batch",
    }
    assert rows["small_batch"].reference == rows["large_batch"].reference == "tuned_baseline"
    assert rows["tuned_baseline"].search["learning_rate"][-1] > 1e-2  # past the last edge
    combo, wide = tour._combination_rows()
    assert combo.reference == wide.reference == "tuned_baseline"
    bayesian = {row.key: row for row in bayesian_rows()}
    assert bayesian["evidence_l2"].search == rows["l2"].search  # the same grid as its rival
    assert bayesian["laplace"].derived_from == "baseline"
    assert bayesian["mc_dropout"].derived_from == "dropout"


def _results(seed=0):
    rng = np.random.default_rng(seed)
    base = 0.60 + 0.01 * rng.standard_normal(5)
    tuned = base + 0.05 + 0.004 * rng.standard_normal(5)
    rows = {
        "baseline": base,
        "tuned_baseline": tuned,
        "small_batch": tuned + 0.002 * rng.standard_normal(5),  # = tuned, ≫ baseline
        "dropout": base + 0.03 + 0.004 * rng.standard_normal(5),
    }
    return {
        "rows": [
            {
                "key": key,
                "name": key.replace("_", " "),
                "reference": {"small_batch": "tuned_baseline"}.get(key, "baseline"),
                "per_seed": {"test": list(values)},
            }
            for key, values in rows.items()
        ]
    }


def test_each_row_is_compared_with_its_own_reference_like_scipy_and_holm():
    results = tour.with_differences(_results())
    rows = {row["key"]: row for row in results["rows"]}
    per_seed = {key: row["per_seed"]["test"] for key, row in rows.items()}
    pairs = {"tuned_baseline": "baseline", "small_batch": "tuned_baseline", "dropout": "baseline"}
    reference = reference_differences(per_seed, "baseline", pairs)
    for key, (mean, low, high, p, reject) in reference.items():
        got = rows[key]["difference"]
        np.testing.assert_allclose([got["mean"], got["low"], got["high"]], [mean, low, high],
                                   rtol=1e-9, atol=1e-12, err_msg=key)  # fmt: skip
        np.testing.assert_allclose(got["p_value"], p, rtol=1e-7, err_msg=key)
        assert got["significant"] == reject and got["reference"] == pairs[key].replace("_", " ")
    # Against the baseline the small batch would look like a large gain; against its
    # reference it is no gain at all.
    assert rows["small_batch"]["difference"]["mean"] < 0.01
    assert not rows["small_batch"]["difference"]["significant"]
    with pytest.raises(ValueError, match="references"):
        compare_to_references(per_seed, {"dropout": "missing"})
    typo = _results()
    typo["rows"][2]["reference"] = "tuned_basline"
    with pytest.raises(ValueError, match="tuned_basline"):
        tour.with_differences(typo)


def _bayesian_rows(seed=1):
    rng = np.random.default_rng(seed)

    def row(key, test, nll, ece):
        noise = rng.standard_normal((3, 5))
        return {
            "key": key,
            "name": key,
            "chosen": {},
            "per_seed": {
                "test": list(test + 0.005 * noise[0]),
                "test_nll": list(nll + 0.02 * noise[1]),
                "ece": list(ece + 0.005 * noise[2]),
            },
        }

    return [
        row("baseline", 0.60, 1.70, 0.25),
        row("l2", 0.62, 1.00, 0.06),
        row("dropout", 0.65, 0.93, 0.06),
        row("evidence_l2", 0.52, 1.30, 0.03),
        row("laplace", 0.60, 1.20, 0.05),
        row("mc_dropout", 0.65, 0.95, 0.02),
        row("deep_ensemble", 0.64, 1.10, 0.10),
    ]


def test_bayesian_comparisons_equal_scipy_and_one_holm_family():
    comparisons = tour.bayesian_comparisons(_bayesian_rows())
    assert [(c["row"], c["compared_with"]) for c in comparisons] == list(tour.BAYESIAN_COMPARISONS)
    rows = {row["key"]: row["per_seed"] for row in _bayesian_rows()}
    expected, got = [], []
    for c in comparisons:
        for metric in tour.BAYESIAN_METRICS:
            expected.append(scipy_paired(rows[c["row"]][metric], rows[c["compared_with"]][metric]))
            got.append(c[metric])
    for (mean, low, high, p), test in zip(expected, got, strict=True):
        np.testing.assert_allclose([test["mean"], test["low"], test["high"], test["p_value"]],
                                   [mean, low, high, p], rtol=1e-7, atol=1e-12)  # fmt: skip
    rejected = holm_rejections([e[3] for e in expected], ALPHA)
    assert [t["significant"] for t in got] == list(rejected)
    assert len(got) == 18 and 0 < sum(rejected) < 18


def test_the_bayesian_findings_answer_from_the_comparisons():
    rows = _bayesian_rows()
    results = {"rows": rows, "bayesian": tour.bayesian_comparisons(rows)}
    first, laplace, second = tour.bayesian_findings(results)
    assert "so validation wins on MNIST-1D" in first  # -8 points, significant
    nll = {row["key"]: np.mean(row["per_seed"]["test_nll"]) for row in rows}
    assert f"moves test NLL from {nll['baseline']:.3f} to {nll['laplace']:.3f}" in laplace
    assert "not its errors" in laplace  # the same accuracy as its MAP
    assert "Lowest test NLL among" in second and second.index("mc_dropout") < second.index(
        "lowest ECE"
    )
    better = [dict(row) for row in rows]
    for row in better:
        if row["key"] == "evidence_l2":
            row["per_seed"] = {
                **row["per_seed"],
                "test": [t + 0.2 for t in row["per_seed"]["test"]],
            }
    results = {"rows": better, "bayesian": tour.bayesian_comparisons(better)}
    assert "so the evidence wins" in tour.bayesian_findings(results)[0]
