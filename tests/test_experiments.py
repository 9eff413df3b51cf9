"""Each experiment script runs from a clean checkout and reaches its verdict."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.common import EXIT_FAIL

ROOT = Path(__file__).resolve().parents[1]


# Every experiment runs in the default suite in its reduced ``--quick``
# configuration (a fair test of the same claim with fewer epochs/rates/members);
# the full configuration that the report quotes runs with ``-m slow``.
EXPERIMENTS = [
    "l1_vs_l2",
    "noise_equals_l2",
    "label_smoothing",
    "augmentation",
    "dropout",
    "parameter_sharing",
    "early_stopping_vs_l2",
    "batch_size",
    "sharp_vs_flat",
    "ensembles",
    "bias_variance",
]
HAS_QUICK = set(EXPERIMENTS) - {"l1_vs_l2", "noise_equals_l2", "early_stopping_vs_l2"}


def _run_script(name: str, out: Path, *flags: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run an experiment as a user does; it must end with a verdict (exit 0 PASS, 3 FAIL)."""
    result = subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", "--out", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode in (0, EXIT_FAIL), result.stdout + result.stderr
    assert "figure check" not in result.stderr, result.stderr  # plots.save's reviewer checks
    return result, json.loads((out / f"{name}.json").read_text())


def _run_experiment(name: str, out: Path, *flags: str) -> dict:
    result, written = _run_script(name, out, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASS: {name}" in result.stdout
    assert written["verdict"] == "PASS"
    assert (out / f"{name}.png").stat().st_size > 1000
    return written


def _run_control(monkeypatch, tmp_path, name: str, smaller: dict) -> tuple[int, dict]:
    """The script's ``main()`` with ``--quick --control``, in this process, on a smaller quick
    configuration: a control's outcome (differences exactly 0) does not depend on its size,
    and the whole pipeline — data, sweeps, training, verdict, JSON — still runs."""
    import importlib

    module = importlib.import_module(f"experiments.{name}")
    monkeypatch.setattr(module, "QUICK", {**module.QUICK, **smaller})
    monkeypatch.setattr(sys, "argv", [name, "--quick", "--control", "--out", str(tmp_path)])
    code = module.main()
    return code, json.loads((tmp_path / f"{name}.json").read_text())


# augmentation, ensembles and bias_variance run their whole pipeline in the default suite
# through their controls (below); their PASS runs are `-m slow`, which keeps the suite under
# 15 minutes. So are the PASS runs of the four slowest scripts without a control (15-30 s
# each); their verdict functions are tested in the default suite.
_PIPELINE_BY_CONTROL = ("augmentation", "ensembles", "bias_variance")
_SLOWEST = ("batch_size", "parameter_sharing", "dropout", "label_smoothing")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in _PIPELINE_BY_CONTROL + _SLOWEST else n
        for n in EXPERIMENTS
        if n != "sharp_vs_flat"
    ],
)
def test_experiment_passes(name, tmp_path):
    flags = ("--quick",) if name in HAS_QUICK else ()
    written = _run_experiment(name, tmp_path, *flags)
    if name in HAS_QUICK:
        assert written["evidence"]["configuration"] == "quick"


@pytest.mark.slow  # ~60 s of a worker; its verdict function is tested in the default suite
def test_sharp_vs_flat_runs_and_its_verdict_follows_its_rank_correlation(tmp_path):
    """The arms are the units: the verdict is Spearman's rho over the arms' mean λmax and
    mean test accuracy with an exact permutation p (4 arms: only a perfect reversal, p =
    1/24, passes), recomputed here from the per-model values with scipy and by brute force
    over the 24 orderings. The run may honestly FAIL (λmax is not comparable across
    training losses); what must hold is that its verdict is the one its numbers give."""
    from itertools import permutations

    from scipy import stats

    result, written = _run_script("sharp_vs_flat", tmp_path, "--quick")
    arms = list(written["evidence"]["arms"].values())
    sharp = [np.mean(arm["lambda_max"]) for arm in arms]
    accuracy = [np.mean(arm["test_accuracy"]) for arm in arms]
    rho = stats.spearmanr(sharp, accuracy).statistic
    orders = [stats.spearmanr(sharp, np.asarray(accuracy)[list(o)]).statistic
              for o in permutations(range(len(arms)))]  # fmt: skip
    p = np.mean(np.asarray(orders) <= rho + 1e-12)
    evidence = written["evidence"]
    assert evidence["spearman_arm_means"] == pytest.approx(rho, abs=1e-3)
    assert evidence["spearman_arm_means_p_one_sided"] == pytest.approx(p, abs=1e-9)
    assert written["verdict"] == ("PASS" if rho < 0 and p < 0.05 else "FAIL")
    assert result.returncode == (0 if written["verdict"] == "PASS" else EXIT_FAIL)


@pytest.mark.slow  # its control runs the pipeline in the default suite (below)
def test_swa_flatness_runs_and_its_verdict_follows_its_paired_bounds(tmp_path):
    """On MNIST-1D the SWA average is *sharper* than the final iterate (quick run: λmax
    2.56 vs 1.13) with no significant accuracy gain, so the claim honestly FAILs. What
    must hold: the script runs, SWA really averaged (its weights differ from the final
    iterate's measurements), and the verdict is the one its per-seed numbers give, with
    the bounds recomputed here from scipy's t quantile."""
    from scipy import stats

    result, written = _run_script("swa_flatness", tmp_path, "--quick")
    evidence = written["evidence"]
    final, swa = evidence["arms"]["final iterate"], evidence["arms"]["SWA"]
    assert final["lambda_max"] != swa["lambda_max"]

    def lower(diff):
        diff = np.asarray(diff)
        return diff.mean() - stats.t.ppf(0.95, diff.size - 1) * diff.std(ddof=1) / np.sqrt(
            diff.size
        )

    lam = lower(np.subtract(final["lambda_max"], swa["lambda_max"]))
    acc = lower(np.subtract(swa["test_accuracy"], final["test_accuracy"]))
    # Per-seed values are rounded to 4 digits in the JSON.
    assert evidence["lambda_max_reduction_lower_95"] == pytest.approx(lam, abs=1e-3)
    assert evidence["test_accuracy_gain_lower_95"] == pytest.approx(acc, abs=1e-3)
    passed = lam > 0 and acc > 0
    assert result.returncode == (0 if passed else EXIT_FAIL)
    assert (tmp_path / "swa_flatness.png").stat().st_size > 1000


def test_swa_flatness_verdict_fails_on_its_negative_control():
    """SWA started at the last step averages only the final iterate: every paired
    difference is exactly 0, and a bound of 0 does not PASS."""
    from experiments.swa_flatness import verdict

    arm = {
        "lambda_max": [1.2, 1.0, 1.1, 1.3, 0.9],
        "trace": [30.0, 28.0, 31.0, 29.0, 27.0],
        "average_sharpness": [0.002] * 5,
        "test_accuracy": [0.65, 0.66, 0.67, 0.66, 0.65],
    }
    passed, bounds = verdict(arm, dict(arm))
    assert not passed and bounds["lambda_max_reduction_lower_95"] == 0
    flatter = {**arm, "lambda_max": [v - 0.5 for v in arm["lambda_max"]]}
    better = {**flatter, "test_accuracy": [v + 0.01 for v in arm["test_accuracy"]]}
    assert not verdict(arm, flatter)[0]  # flatter but not more accurate
    assert verdict(arm, better)[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HAS_QUICK))
def test_experiment_passes_in_full(name, tmp_path):
    written = _run_experiment(name, tmp_path)
    assert written["evidence"]["configuration"] == "full"


FAKES = {
    "passes": "PASS",
    "fails": "FAIL",
}


def test_runner_reports_crashes_and_missing_results_as_errors(tmp_path, monkeypatch, capsys):
    from experiments import __main__ as runner

    package = tmp_path / "fake_experiments"
    package.mkdir()
    (package / "__init__.py").write_text("")
    writer = (
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "verdict = {verdict!r}\n"
        "result = json.dumps({{'verdict': verdict, 'claim': 'c'}})\n"
        "open(f'{{out}}/{name}.json', 'w').write(result)\n"
        "sys.exit(0 if verdict == 'PASS' else 3)\n"
    )
    for name, verdict in FAKES.items():
        (package / f"{name}.py").write_text(writer.format(verdict=verdict, name=name))
    (package / "crashes.py").write_text("raise RuntimeError('boom')\n")
    (package / "silent.py").write_text("print('no result')\n")
    out = tmp_path / "out"
    out.mkdir()
    # A stale result from an earlier run must not be read as this run's verdict.
    (out / "silent.json").write_text('{"verdict": "PASS", "claim": "stale"}')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(runner, "PACKAGE", "fake_experiments")

    assert runner._run("crashes", out)[0] == "ERROR"
    assert "RuntimeError: boom" in runner._run("crashes", out)[2]
    assert runner._run("silent", out)[0] == "ERROR"
    assert runner._run("fails", out)[0] == "FAIL"
    assert runner._run("passes", out)[0] == "PASS"

    def status(names):
        monkeypatch.setattr(runner, "EXPERIMENTS", names)
        return runner.main(["--out", str(out)])

    assert status(["passes"]) == 0
    assert status(["passes", "crashes"]) == 2
    assert status(["passes", "fails"]) == EXIT_FAIL
    assert status(["passes", "crashes", "fails"]) == 2
    assert "1 passed, 1 failed, 1 could not run" in capsys.readouterr().out


def test_early_stopping_mapping_verdict_fails_for_a_mapping_off_by_ten():
    """The negative controls: claiming α = 10/(ηt) or 0.1/(ηt) must FAIL, α = 1/(ηt) PASS."""
    from experiments import early_stopping_vs_l2 as experiment

    _, curves, _ = experiment.least_squares_paths(scales=(0.01, 0.1, 1.0, 10.0, 100.0))
    distances = {c: float(curve.mean()) for c, curve in curves.items()}
    assert experiment.mapping_verdict(distances, claimed=1.0)
    assert not experiment.mapping_verdict(distances, claimed=10.0)
    assert not experiment.mapping_verdict(distances, claimed=0.1)


def test_early_stopping_paths_come_from_jaxregs_loop_and_match_plain_gradient_descent():
    """The gradient-descent path (TrainLoop.run epochs in one scan) and fit's early-stopped
    weights equal w ← w − η(Gw − m) written in NumPy, to float32 precision."""
    from experiments import early_stopping_vs_l2 as experiment

    x, y, x_val, y_val = experiment.diabetes_split()
    gram, moment = x.T @ x / len(y), x.T @ y / len(y)
    eta = 0.9 / np.linalg.eigvalsh(gram).max()
    steps = [1, 2, 5, 30]
    path = experiment.gradient_descent_path(x, y, eta, steps)
    weights, stop = experiment.early_stopped(x, y, x_val, y_val, eta)
    w, reference = np.zeros(x.shape[1]), {}
    for t in range(1, max(max(steps), stop) + 1):
        w = w - eta * (gram @ w - moment)
        reference[t] = w
    np.testing.assert_allclose(path, [reference[t] for t in steps], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(weights, reference[stop], rtol=1e-4, atol=1e-6)
    val_losses = [np.mean((x_val @ reference[t] - y_val) ** 2) for t in range(1, stop + 21)]
    assert int(np.argmin(val_losses)) + 1 == stop  # the step EarlyStopping chose


def test_dropout_verdict_needs_a_significant_paired_gain():
    """Negative controls: the rate-0 pipeline against itself (gain exactly 0) and a gain that
    one bad seed makes insignificant must FAIL; a consistent gain PASSes."""
    from experiments.dropout import verdict

    zero = np.array([0.60, 0.62, 0.58, 0.61, 0.59])
    gaps = dict(gap_chosen=[0.2] * 5, gap_zero=[0.4] * 5, mi_test=0.1, mi_noise=0.3)
    assert not verdict(zero, zero, **gaps)[0]
    assert not verdict(zero + np.array([0.06, 0.05, -0.08, 0.05, 0.04]), zero, **gaps)[0]
    passed, bound = verdict(zero + np.array([0.05, 0.06, 0.04, 0.05, 0.06]), zero, **gaps)
    assert passed and bound > 0.03
    assert not verdict(zero + 0.05, zero, **{**gaps, "mi_noise": 0.05})[0]


def test_augmentation_verdict_fails_without_a_consistent_gain():
    from experiments.augmentation import verdict

    plain = np.array([0.60, 0.62, 0.58, 0.61, 0.59])
    assert not verdict(plain, plain)[0]  # strength 0 against itself
    assert not verdict(plain + np.array([0.1, -0.1, 0.1, -0.1, 0.02]), plain)[0]
    assert verdict(plain + np.array([0.1, 0.09, 0.11, 0.1, 0.12]), plain)[0]
    better = plain + np.array([0.1, 0.09, 0.11, 0.1, 0.12])
    assert not verdict(better, plain, better)[0]  # no better than the noise arm
    assert verdict(better, plain, plain + 0.02)[0]


def test_augmentation_control_that_only_adds_noise_fails(monkeypatch, tmp_path):
    """The augmented arm replaced by the noise arm's transform (same keys): its gain over
    the noise arm is exactly 0 on every seed, so the claim must FAIL through the pipeline."""
    code, written = _run_control(monkeypatch, tmp_path, "augmentation", {"seeds": 3, "epochs": 4})
    assert code == EXIT_FAIL and written["verdict"] == "FAIL"
    evidence = written["evidence"]
    assert evidence["control"] is True and evidence["gain_over_noise_per_seed"] == [0.0] * 3
    assert evidence["gain_over_noise_lower_95"] == 0.0
    assert 0.5 < evidence["noise_sigma_matched"] < 1.5  # the augmentation moves inputs this far


def test_matched_noise_sigma_is_the_augmentations_rms_perturbation():
    import jax
    import jax.numpy as jnp

    from experiments.augmentation import matched_sigma
    from jaxreg.augment import signal

    x = jax.random.normal(jax.random.key(0), (256, 40))
    moved = np.asarray(signal.mnist1d_pipeline(1.0)(jax.random.key(1), x), np.float64)
    expected = np.sqrt(np.mean((moved - np.asarray(x, np.float64)) ** 2))
    np.testing.assert_allclose(matched_sigma(x, jax.random.key(1)), expected, rtol=1e-5)
    assert matched_sigma(x, jax.random.key(1)) > 0.1 * float(jnp.std(x))


def test_label_smoothing_verdict_fails_without_a_consistent_ece_reduction():
    from experiments.label_smoothing import verdict

    plain = np.array([0.25, 0.24, 0.26, 0.25, 0.27])
    assert not verdict(plain, plain)[0]  # ε = 0 against itself
    assert not verdict(plain - np.array([0.05, -0.04, 0.05, -0.05, 0.01]), plain)[0]
    assert verdict(plain - np.array([0.06, 0.05, 0.07, 0.06, 0.05]), plain)[0]


def test_batch_size_verdict_fails_without_a_consistent_gain():
    from experiments.batch_size import verdict

    large = np.array([0.61, 0.61, 0.62, 0.60, 0.59])
    assert not verdict(large, large)[0]  # a batch size against itself
    assert not verdict(large + np.array([0.05, -0.06, 0.04, -0.05, 0.01]), large)[0]
    assert verdict(large + np.array([0.05, 0.03, 0.03, 0.04, 0.04]), large)[0]


def test_ensembles_verdict_needs_accuracy_and_nll_gains():
    from experiments.ensembles import verdict

    acc_1, nll_1 = np.array([0.60, 0.61, 0.59, 0.60, 0.62]), np.array([1.6, 1.5, 1.7, 1.6, 1.5])
    assert not verdict(acc_1, acc_1, nll_1, nll_1)[0]  # k = 1 against itself
    better_acc, better_nll = acc_1 + 0.05, nll_1 - 0.4
    assert verdict(acc_1, better_acc + np.array([0, 0.01, 0, 0.01, 0]), nll_1, better_nll)[0]
    assert not verdict(acc_1, better_acc, nll_1, nll_1 + np.array([0.1, -0.1, 0.1, -0.1, 0]))[0]


def test_bias_variance_verdict_needs_both_trends_and_both_endpoint_changes():
    from experiments.bias_variance import verdict

    rng = np.random.default_rng(0)
    strengths = [0.0, 1e-3, 1e-2, 3e-2, 1e-1]
    rounds, n = 6, 500
    targets = rng.integers(0, 10, n)
    # Stronger penalties: a main prediction wrong more often (bias up) and rounds that
    # agree with it more (variance down).
    wrong, disagree = [0.2, 0.22, 0.25, 0.3, 0.4], [0.3, 0.25, 0.2, 0.12, 0.05]
    preds = []
    for w, d in zip(wrong, disagree, strict=True):
        main = np.where(rng.random(n) < w, (targets + 1) % 10, targets)
        flip = rng.random((rounds, n)) < d
        preds.append(np.where(flip, (main + 2) % 10, main))
    preds = np.array(preds)
    assert verdict(strengths, preds, targets)[0]
    # Negative control: a strength that does nothing (every row the same pipeline).
    assert not verdict(strengths, np.repeat(preds[:1], 5, 0), targets)[0]
    # Bias that falls, or variance that rises, each FAIL on their own.
    assert not verdict(strengths, preds[::-1], targets)[0]
    swapped = preds.copy()
    swapped[[0, -1]] = preds[[-1, 0]]
    assert not verdict(strengths, swapped, targets)[0]


def test_bias_variance_bounds_are_a_delete_one_round_jackknife():
    """Reference: the jackknife written out with scipy's t quantile, and metrics.bias_variance
    (mlxtend's 0-1 definitions) for each leave-one-round-out estimate."""
    from scipy import stats

    from experiments.bias_variance import jackknife_lower_bounds
    from jaxreg import metrics

    rng = np.random.default_rng(1)
    preds, targets = rng.integers(0, 4, (3, 5, 200)), rng.integers(0, 4, 200)

    def changes(p):
        first = metrics.bias_variance(p[0], targets, "0-1", num_classes=4)
        last = metrics.bias_variance(p[-1], targets, "0-1", num_classes=4)
        return np.array(
            [float(last.bias - first.bias), float(first.variance - last.variance)], float
        )

    full = changes(preds)
    left = np.array([changes(np.delete(preds, r, axis=1)) for r in range(5)])
    error = np.sqrt(4 / 5 * ((left - left.mean(0)) ** 2).sum(0))
    expected = full - stats.t.ppf(0.95, 4) * error
    np.testing.assert_allclose(jackknife_lower_bounds(preds, targets), expected, rtol=1e-5)


def test_bias_variance_control_through_the_pipeline_fails(monkeypatch, tmp_path):
    """Every strength trained at 0: nothing changes along the path, the bounds are 0 and the
    claim must FAIL through the pipeline."""
    smaller = {"strengths": [0.0, 1e-2, 3e-2], "rounds": 3, "epochs": 3}
    code, written = _run_control(monkeypatch, tmp_path, "bias_variance", smaller)
    assert code == EXIT_FAIL and written["verdict"] == "FAIL"
    evidence = written["evidence"]
    assert evidence["control"] is True and len(set(evidence["variance"])) == 1
    assert evidence["bias_rise_lower_95"] == 0.0 and evidence["variance_fall_lower_95"] == 0.0


def test_bias_variance_per_example_terms_match_the_library():
    """Per-example terms average to metrics.bias_variance's 0-1 bias and variance."""
    from experiments.bias_variance import per_example_terms
    from jaxreg import metrics

    rng = np.random.default_rng(0)
    preds = rng.integers(0, 10, (7, 300))
    targets = rng.integers(0, 10, 300)
    b, v = per_example_terms(preds, targets)
    reference = metrics.bias_variance(preds, targets, "0-1", num_classes=10)
    np.testing.assert_allclose([b.mean(), v.mean()], [reference.bias, reference.variance], 1e-6)


def test_parameter_sharing_verdict_needs_a_significant_gain_over_every_mlp():
    from experiments.parameter_sharing import verdict

    cnn = np.array([0.90, 0.91, 0.89, 0.92, 0.90])
    mlp = np.array([0.60, 0.62, 0.58, 0.61, 0.59])
    passed, bounds = verdict(cnn, 5_000, {"big": (mlp, 20_000), "small": (mlp + 0.02, 6_000)})
    assert passed and min(bounds.values()) > 0.2
    assert not verdict(cnn, 5_000, {"itself": (cnn, 6_000)})[0]  # the CNN against itself
    assert not verdict(cnn, 50_000, {"big": (mlp, 20_000)})[0]  # more parameters than the MLP
    noisy = cnn[0] + np.array([0.05, -0.05, 0.04, -0.04, 0.0])
    assert not verdict(noisy, 5_000, {"tied": (np.full(5, cnn[0]), 20_000)})[0]


def test_sharp_vs_flat_verdict_needs_a_significant_negative_rank_correlation():
    from experiments.sharp_vs_flat import verdict

    rng = np.random.default_rng(0)
    sharpness_values = rng.uniform(1, 50, (4, 5))
    accuracy = 0.8 - 0.004 * sharpness_values + 0.01 * rng.standard_normal((4, 5))
    passed, rho, p = verdict(sharpness_values, accuracy)
    assert passed and rho < -0.5 and p < 0.01
    # Negative controls: accuracy unrelated to sharpness, and the opposite relation.
    assert not verdict(sharpness_values, rng.uniform(0.6, 0.7, (4, 5)))[0]
    assert not verdict(sharpness_values, 0.5 + 0.004 * sharpness_values)[0]


def test_rank_correlation_matches_scipy_rho_and_a_brute_force_permutation_p():
    import itertools

    from scipy import stats

    from jaxreg.stats import rank_correlation

    rng = np.random.default_rng(3)
    x = rng.random(6)
    y = x + 0.5 * rng.random(6)
    rho, p = rank_correlation(x, y, "greater")
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic)
    rhos = [stats.spearmanr(x, np.asarray(perm)).statistic for perm in itertools.permutations(y)]
    assert p == pytest.approx(np.mean(np.asarray(rhos) >= rho - 1e-12))
    assert rank_correlation(x, y, "less")[1] == pytest.approx(
        np.mean(np.asarray(rhos) <= rho + 1e-12)
    )
    assert np.isnan(rank_correlation(x, np.ones(6), "less")[1])  # constant: no evidence
    with pytest.raises(ValueError, match="alternative"):
        rank_correlation(x, y, "two-sided")


def test_l1_vs_l2_verdict_needs_exact_zeros_in_the_reference_pattern():
    from experiments.l1_vs_l2 import verdict

    reference = np.array([[0.0, 0.0, 1.0], [0.0, 0.5, 2.0], [0.3, 1.0, 2.5]])
    ridge = np.array([[0.1, 0.2, 0.9], [0.2, 0.6, 1.9], [0.3, 1.0, 2.4]])
    assert verdict(reference + 1e-7 * (reference != 0), reference, ridge)
    assert not verdict(ridge, reference, ridge)  # a "lasso" without exact zeros
    assert not verdict(reference, reference, reference)  # a "ridge" with exact zeros
    assert not verdict(reference + 1e-3 * (reference != 0), reference, ridge)  # values off


def test_noise_equals_l2_verdict_fails_for_a_wrong_mapping():
    from experiments.noise_equals_l2 import ridge_path, verdict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 * rng.normal(size=200)
    sigmas = np.array([0.0, 0.5, 1.0, 1.5])
    # Independent reference: ridge by gradient descent on the penalized objective.
    w = np.zeros((len(sigmas), 4))
    for _ in range(5000):
        residual = w @ x.T - y
        w -= 0.1 * (residual @ x / len(y) + (sigmas**2)[:, None] * w)
    np.testing.assert_allclose(w, ridge_path(x, y, sigmas**2), atol=1e-6)
    assert verdict(w, x, y, sigmas)[0]
    assert not verdict(w, x, y, sigmas, mapping=lambda s: s)[0]
    assert not verdict(w, x, y, sigmas, mapping=lambda s: 2 * s**2)[0]


def test_ensembles_control_with_no_op_bagging_and_subspaces_fails(monkeypatch, tmp_path):
    """All bootstrap weights and masks 1: both methods train the seed-only members exactly,
    so their disagreement gain is exactly 0 and the claim must FAIL through the pipeline."""
    smaller = {"replicates": 3, "members": 3, "epochs": 3}
    code, written = _run_control(monkeypatch, tmp_path, "ensembles", smaller)
    assert code == EXIT_FAIL and written["verdict"] == "FAIL"
    evidence = written["evidence"]
    assert evidence["control"] is True
    seeds = evidence["seeds only"]["disagreement_per_replicate"]
    for variant in ("bagging", "random subspaces"):
        assert evidence[variant]["disagreement_per_replicate"] == seeds
        assert evidence[variant]["disagreement_gain_over_seeds_lower_95"] == 0.0


def test_ensemble_disagreement_is_the_mean_over_member_pairs():
    from itertools import combinations

    from experiments.ensembles import disagreement

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(2, 5, 30))  # 2 replicates, 5 members, 30 examples
    labels = probs.argmax(-1)
    expected = [
        np.mean([np.mean(labels[r, i] != labels[r, j]) for i, j in combinations(range(5), 2)])
        for r in range(2)
    ]
    np.testing.assert_allclose(disagreement(probs), expected, rtol=1e-12)


def test_swa_flatness_control_through_the_pipeline_fails(monkeypatch, tmp_path):
    """SWA started at the last step averages only the final iterate: both arms are one model,
    every paired difference is exactly 0 and the claim must FAIL through the pipeline."""
    code, written = _run_control(monkeypatch, tmp_path, "swa_flatness", {"seeds": 3, "epochs": 4})
    assert code == EXIT_FAIL and written["verdict"] == "FAIL"
    final, swa = (written["evidence"]["arms"][arm] for arm in ("final iterate", "SWA"))
    assert final["test_accuracy"] == swa["test_accuracy"]
    assert written["evidence"]["test_accuracy_gain_lower_95"] == 0.0


def test_configurations_are_the_preregistered_ones():
    """Every claim, grid, epoch count and seed count equals experiments/preregistration.json;
    a change there needs an entry in experiments/CHANGELOG.md (see its header)."""
    from experiments import preregistration

    frozen = json.loads(preregistration.FILE.read_text())
    assert preregistration.current() == frozen
    changelog = (ROOT / "experiments" / "CHANGELOG.md").read_text()
    assert "results seen" in changelog and "--confirm" in changelog


def test_the_runner_records_results_with_their_provenance(tmp_path):
    from experiments.__main__ import _record

    (tmp_path / "l1_vs_l2.json").write_text(json.dumps({"verdict": "PASS", "claim": "c"}))
    _record("l1_vs_l2", tmp_path, tmp_path / "results", True, 12.34)
    written = json.loads((tmp_path / "results" / "l1_vs_l2.confirmatory.json").read_text())
    provenance = written["provenance"]
    assert written["verdict"] == "PASS" and provenance["elapsed_seconds"] == 12.3
    assert len(provenance["commit"]) == 40 and provenance["versions"]["jax"]
    assert provenance["date_utc"].endswith("+00:00")


def test_the_readmes_verdicts_are_the_recorded_runs():
    """README's table of verdicts is results_table of experiments/results/ (the recorded full
    and confirmatory runs), and every recorded run holds the pre-registered claim."""
    from experiments import preregistration
    from experiments.__main__ import EXPERIMENTS, results_table

    folder = ROOT / "experiments" / "results"
    assert results_table(folder) in (ROOT / "README.md").read_text()
    frozen = json.loads(preregistration.FILE.read_text())
    for name in EXPERIMENTS:
        full = json.loads((folder / f"{name}.json").read_text())
        confirmatory = json.loads((folder / f"{name}.confirmatory.json").read_text())
        assert full["claim"] == confirmatory["claim"] == frozen[name]["claim"], name
        if "seed" in confirmatory["evidence"]:
            assert confirmatory["evidence"]["seed"] == 1000 and full["evidence"]["seed"] == 0


@pytest.mark.slow  # the study's quick tour runs the same route by default (L2 by evidence,
# the last-layer Laplace predictive); the verdict function is tested below by default
def test_evidence_weight_decay_runs_and_its_verdict_follows_its_bound(tmp_path, monkeypatch):
    from experiments import evidence_weight_decay

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["evidence_weight_decay", "--quick", "--out", str(out)])
    code = evidence_weight_decay.main()
    written = json.loads((out / "evidence_weight_decay.json").read_text())
    evidence = written["evidence"]
    chosen = evidence["weight_decays"].index(evidence["chosen_by_evidence"])
    passed = evidence["paired_difference_lower_95"] > -evidence["margin"] and chosen > 0
    assert (written["verdict"] == "PASS") == passed and code == (0 if passed else EXIT_FAIL)
    assert all(np.isfinite(evidence["log_evidence_mean"]))
    assert all(0 < d < 1 for d in evidence["mackay_weight_decay_median"])


def test_evidence_weight_decay_verdict_needs_non_inferiority_and_a_real_choice():
    from experiments.evidence_weight_decay import verdict

    assert verdict([0.60, 0.61, 0.62], [0.60, 0.60, 0.61], 2)[0]
    assert not verdict([0.50, 0.51, 0.52], [0.60, 0.60, 0.61], 2)[0]  # 9 points worse
    # Choosing the grid's smallest decay (a procedure that never regularizes) cannot pass.
    assert not verdict([0.60, 0.61, 0.62], [0.60, 0.60, 0.61], 0)[0]


def test_the_readme_states_the_recorded_evidence_result():
    folder = ROOT / "experiments" / "results"
    readme = " ".join((ROOT / "README.md").read_text().split())
    full = json.loads((folder / "evidence_weight_decay.json").read_text())["evidence"]
    confirm = json.loads((folder / "evidence_weight_decay.confirmatory.json").read_text())
    confirm = confirm["evidence"]

    def mean(values):
        return f"{100 * np.mean(values):.1f}%"

    assert (
        f"picks λ = {full['chosen_by_evidence']:g} (test accuracy "
        f"{mean(full['test_accuracy_evidence_route'])}" in readme
    )
    assert (
        f"validation picks {full['chosen_on_validation']:g} "
        f"({mean(full['test_accuracy_validation_route'])})" in readme
    )
    difference = f"{100 * full['paired_difference_mean']:.1f}".replace("-", "−")
    assert f"difference is {difference} points" in readme
    assert (
        f"(evidence {confirm['chosen_by_evidence']:g}: "
        f"{mean(confirm['test_accuracy_evidence_route'])}; validation "
        f"{confirm['chosen_on_validation']:g}: {mean(confirm['test_accuracy_validation_route'])})"
        in readme
    )


@pytest.mark.slow  # the study's quick tour runs the same route by default (L2 by evidence,
# the last-layer Laplace predictive); the verdict function is tested below by default
def test_laplace_predictive_runs_and_its_verdict_follows_its_paired_bound(tmp_path, monkeypatch):
    from experiments import laplace_predictive
    from jaxreg.stats import one_sided_lower_bound

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["laplace_predictive", "--quick", "--out", str(out)])
    code = laplace_predictive.main()
    written = json.loads((out / "laplace_predictive.json").read_text())
    per_seed = written["evidence"]["test_per_seed"]
    reduction = np.subtract(per_seed["MAP"]["nll"], per_seed["Laplace (last layer)"]["nll"])
    bound = one_sided_lower_bound(reduction)
    assert written["evidence"]["nll_reduction_lower_95"] == pytest.approx(bound, abs=1e-3)
    assert written["verdict"] == ("PASS" if bound > 0 else "FAIL")
    assert code == (0 if bound > 0 else EXIT_FAIL)
    means = written["evidence"]["test_means"]
    assert written["evidence"]["rank_by_nll"] == sorted(means, key=lambda a: means[a]["nll"])
    assert all(p > 0 for p in written["evidence"]["laplace_prior_precision"])


def test_laplace_predictive_verdict_needs_a_consistent_nll_reduction():
    from experiments.laplace_predictive import verdict

    assert verdict([1.30, 1.32, 1.31], [1.20, 1.21, 1.22])[0]
    assert not verdict([1.30, 1.32, 1.31], [1.31, 1.20, 1.35])[0]  # mixed: no bound above 0
    assert not verdict([1.30, 1.32, 1.31], [1.30, 1.32, 1.31])[0]  # a no-op predictive


def test_the_readme_states_the_recorded_laplace_predictive_result():
    folder = ROOT / "experiments" / "results"
    readme = " ".join((ROOT / "README.md").read_text().split())
    means = json.loads((folder / "laplace_predictive.json").read_text())["evidence"]["test_means"]
    laplace_arm, map_arm = means["Laplace (last layer)"], means["MAP"]
    assert f"test NLL from {map_arm['nll']:.3f} to {laplace_arm['nll']:.3f}" in readme
    assert f"ECE from {map_arm['ece']:.3f} to {laplace_arm['ece']:.3f}" in readme
    assert f"MC dropout (NLL {means['MC dropout']['nll']:.3f})" in readme
    assert f"5-member ensemble ({means['ensemble']['nll']:.3f})" in readme
    accuracies = [100 * means[a]["accuracy"] for a in ("MC dropout", "ensemble", "MAP")]
    assert "({:.1f}% and {:.1f}% against {:.1f}%)".format(*accuracies) in readme


def test_generalization_measures_runs_its_control_fails_and_its_table_recomputes(
    tmp_path, monkeypatch
):
    from scipy import stats

    from experiments import generalization_measures as gm
    from experiments.common import EXIT_FAIL

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["generalization_measures", "--quick", "--out", str(out)])
    code = gm.main()
    evidence = json.loads((out / "generalization_measures.json").read_text())["evidence"]
    models = json.loads((out / "generalization_measures_models.json").read_text())
    assert evidence["models"] == len(models["gap"]) == 16
    assert not any(evidence["control_claims"].values())  # shuffled measures: every claim FAILs
    claims = evidence["claims"]
    assert claims["flat_minima"] == (evidence["pac_bayes_tau_lower_95"] > 0)
    assert claims["heavy_tails"] == (evidence["alpha_tau_lower_95"] > 0)
    assert claims["regularization_shrinks_norms"] == (evidence["norm_by_decay_tau_upper_95"] < 0)
    assert code == (0 if all(claims.values()) else EXIT_FAIL)
    for name, values in models["measures"].items():
        tau = stats.kendalltau(values, models["gap"]).statistic
        if np.isfinite(tau):
            assert evidence["tau"][name][0] == pytest.approx(tau, abs=2e-3), name
    assert (out / "generalization_measures.png").stat().st_size > 10_000


def test_generalization_measures_verdict_reads_each_claims_own_bound():
    from experiments.generalization_measures import verdict
    from jaxreg.generalization import TauInterval

    def row(low, high):
        return {"tau": TauInterval((low + high) / 2, low, high)}

    good = {"pac_bayes_inverse_sigma_sq": row(0.1, 0.5), "alpha": row(0.05, 0.3)}
    assert verdict(good, TauInterval(-0.5, -0.7, -0.2)) == {
        "flat_minima": True,
        "regularization_shrinks_norms": True,
        "heavy_tails": True,
    }
    bad = {"pac_bayes_inverse_sigma_sq": row(-0.1, 0.5), "alpha": row(0.05, 0.3)}
    assert not verdict(bad, TauInterval(-0.5, -0.7, 0.01))["flat_minima"]
    assert not verdict(bad, TauInterval(-0.5, -0.7, 0.01))["regularization_shrinks_norms"]


def _generalization_fragments(evidence) -> list[str]:
    tau, psi = evidence["tau"], evidence["granulated_tau"]

    def interval(name):
        value, low, high = tau[name]
        return f"{value:.2f} [{low:.2f}, {high:.2f}]"

    pac, alpha = psi["pac_bayes_inverse_sigma_sq"], psi["alpha"]
    return [
        f"PAC-Bayes flatness τ = {interval('pac_bayes_inverse_sigma_sq')},",
        f"the mean layer α τ = {interval('alpha')},",
        f"(granulated τ {evidence['norm_by_decay_tau_upper_95']:.0f})",
        f"(PAC-Bayes: Ψ = {pac['learning_rate']:.2f} over learning rates, "
        f"{pac['weight_decay']:.2f} over weight decays; α: {alpha['learning_rate']:.2f} and "
        f"{alpha['weight_decay']:.2f})",
        f"stable rank (τ = {interval('log_stable_rank')})",
        f"Frobenius norms ({interval('log_sum_frobenius')});",
        f"λmax ({interval('lambda_max')})",
        f"adaptive sharpness ({interval('adaptive_sharpness')})",
        f"backwards ({interval('gradient_noise_scale')})",
        f"undefined for {evidence['measures_left_out']['log_product_frobenius_over_margin']} "
        f"of {evidence['models']} models",
    ]


def test_the_readme_states_the_recorded_generalization_measures_result():
    """Every number of the README's paragraph comes from the confirmatory run's JSON."""
    from scipy import stats

    folder = ROOT / "experiments" / "results"
    recorded = json.loads((folder / "generalization_measures.confirmatory.json").read_text())
    assert recorded["verdict"] == "PASS"
    readme = " ".join((ROOT / "README.md").read_text().split()).replace("−", "-")
    for fragment in _generalization_fragments(recorded["evidence"]):
        assert fragment in readme, fragment
    models = json.loads((folder / "generalization_measures.confirmatory.models.json").read_text())
    tau = stats.kendalltau(models["measures"]["alpha"], models["gap"]).statistic
    assert recorded["evidence"]["tau"]["alpha"][0] == pytest.approx(tau, abs=1e-3)
