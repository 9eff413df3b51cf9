"""Generalization measures and their rank statistics against scipy, NumPy and hand computations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from jaxreg import generalization as gen
from jaxreg import sharpness
from jaxreg.data import batches
from jaxreg.losses import classification_loss
from jaxreg.nn import MLP, functional


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=3, max_size=30),
    st.integers(0, 2**16),
)
def test_kendall_tau_equals_scipy_with_ties(values, seed):
    x = np.asarray(values, float)
    y = x + np.random.default_rng(seed).integers(0, 3, x.size)
    expected = stats.kendalltau(x, y).statistic
    got = float(gen.kendall_tau(x, y))
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_kendall_tau_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        gen.kendall_tau(jnp.ones(3), jnp.ones(4))


def _sweep(seed=0):
    """A grid of 3 learning rates × 2 widths × 3 seeds with a made-up measure and gap."""
    rng = np.random.default_rng(seed)
    lr, width, s = (a.ravel() for a in np.meshgrid([1, 2, 3], [16, 64], [0, 1, 2], indexing="ij"))
    gap = 0.1 * lr + 0.01 * width + rng.normal(0, 0.05, lr.size)
    measure = gap + rng.normal(0, 0.1, lr.size)
    return measure, gap, {"lr": lr, "width": width, "seed": s}


def _granulated_by_loop(measure, gap, axes):
    """Jiang et al.'s Ψ_a written out: group by the other axes, scipy's τ per group."""
    names = list(axes)
    out = {}
    for name in names:
        others = np.stack([axes[o] for o in names if o != name], axis=1)
        taus = []
        for row in np.unique(others, axis=0):
            members = np.all(others == row, axis=1)
            taus.append(stats.kendalltau(measure[members], gap[members]).statistic)
        out[name] = np.nanmean(taus)
    out["mean"] = np.mean([out[n] for n in names])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_granulated_tau_equals_grouped_scipy(seed):
    measure, gap, axes = _sweep(seed)
    got = gen.granulated_kendall_tau(measure, gap, axes)
    expected = _granulated_by_loop(measure, gap, axes)
    chex.assert_trees_all_close({k: float(v) for k, v in got.items()}, expected, atol=1e-5)


def test_granulated_tau_rejects_bad_axes():
    measure, gap, axes = _sweep()
    with pytest.raises(ValueError, match="axes\\['lr'\\]"):
        gen.granulated_kendall_tau(measure, gap, {**axes, "lr": axes["lr"][:-1]})
    with pytest.raises(ValueError, match="at least one"):
        gen.granulated_kendall_tau(measure, gap, {})


def test_tau_intervals_cover_the_point_and_match_a_numpy_bootstrap():
    measure, gap, axes = _sweep(3)
    out = gen.tau_intervals(
        {"m": measure, "neg": -measure}, gap, key=jax.random.key(0), axes=axes, num_resamples=300
    )
    point = gen.granulated_kendall_tau(measure, gap, axes)
    assert set(out["m"]) == {"tau", "lr", "width", "seed", "mean"}
    np.testing.assert_allclose(
        out["m"]["tau"].value, stats.kendalltau(measure, gap).statistic, rtol=1e-5
    )
    np.testing.assert_allclose(out["m"]["width"].value, point["width"], rtol=1e-5)
    np.testing.assert_allclose(out["neg"]["tau"].value, -out["m"]["tau"].value, rtol=1e-6)
    for interval in out["m"].values():
        assert interval.low <= interval.value <= interval.high
    # The same resamples through scipy give the same percentile interval.
    index = np.asarray(jax.random.randint(jax.random.key(0), (300, gap.size), 0, gap.size))
    draws = [stats.kendalltau(measure[i], gap[i]).statistic for i in index]
    np.testing.assert_allclose(
        [out["m"]["tau"].low, out["m"]["tau"].high], np.percentile(draws, [2.5, 97.5]), atol=1e-5
    )


def test_path_norm_equals_the_sum_over_paths():
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(3, 4)), rng.normal(size=4)
    w2, b2 = rng.normal(size=(4, 2)), rng.normal(size=2)

    def apply(p, x, **_):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    params = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    paths = sum(w1[i, j] ** 2 * w2[j, k] ** 2 for i in range(3) for j in range(4) for k in range(2))
    bias_paths = sum(b1[j] ** 2 * w2[j, k] ** 2 for j in range(4) for k in range(2)) + np.sum(b2**2)
    np.testing.assert_allclose(gen.path_norm(apply, params, (3,)), paths + bias_paths, rtol=1e-5)


def test_norm_measures_equal_numpy():
    rng = np.random.default_rng(1)
    params = {
        "conv": rng.normal(size=(3, 3, 2, 4)),
        "dense": rng.normal(size=(4, 5)),
        "bias": rng.normal(size=5),
    }
    init = jax.tree.map(lambda p: 0.5 * p + 0.1, params)
    got = gen.norm_measures(params, init, margin=0.5)
    mats = [params["conv"].reshape(18, 4), params["dense"]]
    fro = [np.sum(m**2) for m in mats]
    spec = [np.linalg.norm(m, 2) ** 2 for m in mats]
    moved = [np.sum((m - (0.5 * m + 0.1)) ** 2) for m in mats]
    everything = np.concatenate([np.ravel(p) for p in params.values()])
    expected = {
        "log_product_frobenius": np.sum(np.log(fro)),
        "log_sum_frobenius": np.log(2) + np.mean(np.log(fro)),
        "log_product_spectral": np.sum(np.log(spec)),
        "log_sum_spectral": np.log(2) + np.mean(np.log(spec)),
        "log_frobenius_over_spectral": np.sum(np.log(np.divide(fro, spec))),
        "log_parameter_norm": np.log(np.sum(everything**2)),
        "distance_from_init": np.sum((0.5 * everything - 0.1) ** 2),
        "log_spectral_init": np.sum(np.log(spec)) + np.log(np.sum(np.divide(moved, spec))),
    }
    for name in ("log_product_frobenius", "log_product_spectral", "log_spectral_init"):
        expected[f"{name}_over_margin"] = expected[name] - 2 * np.log(0.5)
    chex.assert_trees_all_close({k: float(v) for k, v in got.items()}, expected, rtol=1e-5)
    torch_layout = {**params, "conv": np.transpose(params["conv"], (3, 2, 0, 1))}
    other = gen.norm_measures(torch_layout, channels_last=False)
    np.testing.assert_allclose(
        other["log_product_frobenius"], expected["log_product_frobenius"], rtol=1e-6
    )


def test_output_margin_equals_numpy_and_skips_padding():
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(50, 4)), rng.integers(0, 4, 50)
    own = logits[np.arange(50), labels]
    rest = np.where(np.eye(4, dtype=bool)[labels], -np.inf, logits).max(1)
    weight = (np.arange(50) < 40).astype(float)
    got = gen.output_margin(logits, labels, weight=weight)
    np.testing.assert_allclose(got, np.quantile((own - rest)[:40], 0.1), rtol=1e-5)


def test_steps_to_loss():
    losses = jnp.array([2.0, 0.5, 0.3, 0.05, 0.01])
    assert float(gen.steps_to_loss(losses, 0.3, 7)) == 21.0
    assert float(gen.steps_to_loss(losses, 1e-3, 7)) == np.inf


def test_sharpness_measures_on_a_quadratic():
    h = jnp.array([5.0, 2.0, 1.0])

    def loss_fn(w, batch):
        return 0.5 * jnp.sum(h * w**2)

    data = batches(jnp.zeros((4, 1)), jnp.zeros(4), 2)
    m = gen.sharpness_measures(
        loss_fn, jnp.zeros(3), data, key=jax.random.key(0), pac_bayes_target=0.08
    )
    np.testing.assert_allclose(m["lambda_max"], 5.0, rtol=1e-5)
    np.testing.assert_allclose(m["hessian_trace"], 8.0, rtol=1e-4)  # 3 params: Hutch++ is exact
    # ½σ²·tr(H) = 0.08 ⇒ 1/σ² = tr(H)/0.16 = 50 (8 noise draws: within sampling error)
    np.testing.assert_allclose(m["pac_bayes_inverse_sigma_sq"], 50.0, rtol=0.5)
    # ε-sharpness at the centre: the box corner, 100 · ½ Σ h (ε(|w|+1))² / (1 + 0)
    np.testing.assert_allclose(m["epsilon_sharpness"], 100 * 0.5 * 8 * 1e-6, rtol=1e-4)


def _stack(seeds, sizes):
    trees = [functional(MLP(sizes, rngs=nnx.Rngs(s)))[1] for s in seeds]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def test_generalization_measures_reject_unknown_families():
    apply, params = functional(MLP((2, 3, 2), rngs=nnx.Rngs(0)))
    data = batches(jnp.ones((4, 2)), jnp.zeros(4, int), 2)
    with pytest.raises(ValueError, match="families"):
        gen.generalization_measures(apply, params, data, key=jax.random.key(0), families=["nrom"])
    with pytest.raises(ValueError, match="no kernel"):
        gen.norm_measures({"b": jnp.ones(3)})


def test_measure_sweep_equals_each_model_alone_and_finishes_for_many_models():
    """32 models: one vmapped program running every Hessian loop side by side hangs XLA:CPU."""
    apply = functional(MLP((10, 16, 4), rngs=nnx.Rngs(0)))[0]
    x = jax.random.normal(jax.random.key(0), (64, 10))
    data = batches(x, jnp.argmax(x[:, :4], 1), 32)
    trained = _stack(range(32), (10, 16, 4))
    out = gen.measure_sweep(apply, trained, data, key=jax.random.key(3), init_params=trained)
    assert len(out) == 23 and all(v.shape == (32,) for v in out.values())
    np.testing.assert_array_equal(out["distance_from_init"], 0.0)
    keys = jax.random.split(jax.random.key(3), 32)
    last = jax.tree.map(lambda a: a[31], trained)
    loss_fn = classification_loss(apply)
    top = jax.jit(
        lambda p: sharpness.top_eigenvalues(
            loss_fn, p, data, key=jax.random.fold_in(keys[31], 2), num_iters=20, tol=0.0
        )[0][0]
    )(last)
    trace = jax.jit(
        lambda p: sharpness.hessian_trace(
            loss_fn, p, data, key=jax.random.fold_in(keys[31], 3), num_samples=24
        )[0]
    )(last)
    np.testing.assert_allclose(
        [out["lambda_max"][31], out["hessian_trace"][31]], [top, trace], rtol=2e-3
    )
    again = gen.measure_sweep(apply, trained, data, key=jax.random.key(3), init_params=trained)
    chex.assert_trees_all_equal(again, out)  # the cached programs, the same numbers
    for eager in (gen.norm_measures(last, last), gen.spectral_measures(last)):
        chex.assert_trees_all_close({k: out[k][31] for k in eager}, eager, rtol=2e-4, atol=1e-6)
    with pytest.raises(ValueError, match="leading model axis"):
        gen.measure_sweep(
            apply, {"a": jnp.ones((2, 3, 3)), "b": jnp.ones((3, 3))}, data, key=jax.random.key(0)
        )
