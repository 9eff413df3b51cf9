"""Weight-matrix spectra against NumPy, a loop implementation of the CSN fit, ``powerlaw``,
Pareto samples of known exponent and WeightWatcher's recorded output."""

import json
import pathlib
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg import spectra
from jaxreg.nn import MLP, functional

RESULTS = pathlib.Path(__file__).parents[1] / "benchmarks" / "results" / "spectra.json"


def csn_fit_loop(values, threshold=1e-5):
    """Clauset–Shalizi–Newman written out: one loop over x_min, KS distance by definition."""
    x = np.sort(np.asarray(values, np.float64))
    x = x[x > threshold]
    best = None
    for i in range(len(x) - 1):
        tail = x[i:]
        alpha = 1.0 + len(tail) / np.sum(np.log(tail / x[i]))
        if alpha <= 1:
            continue
        fitted = 1.0 - (tail / x[i]) ** (1.0 - alpha)
        empirical = np.arange(len(tail)) / len(tail)
        distance = np.max(np.abs(fitted - empirical))
        if best is None or distance < best[2]:
            best = (alpha, x[i], distance, len(tail))
    return best


def pareto(key, n, alpha, xmin=1.0):
    u = jax.random.uniform(key, (n,), jnp.float64)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def heavy_kernel(seed, shape, dof=3.0):
    return np.random.default_rng(seed).standard_t(dof, shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_law_fit_equals_the_loop_definition(x64, seed):
    values = spectra.eigenvalues(heavy_kernel(seed, (120, 60)))
    values = jnp.concatenate([jnp.zeros(3), values])  # exact zeros are left out
    fit = spectra.power_law_fit(values)
    alpha, xmin, distance, count = csn_fit_loop(np.asarray(values))
    np.testing.assert_allclose(
        [fit.alpha, fit.xmin, fit.ks_distance, fit.num_tail],
        [alpha, xmin, distance, count],
        rtol=1e-10,
    )
    np.testing.assert_allclose(fit.sigma, (alpha - 1) / np.sqrt(count), rtol=1e-10)


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_power_law_fit_recovers_a_known_exponent(x64, alpha):
    values = pareto(jax.random.key(int(alpha * 10)), 8_000, alpha)
    body = jax.random.uniform(jax.random.key(7), (2_000,), jnp.float64, 0.05, 1.0)
    fit = spectra.power_law_fit(jnp.concatenate([body, values]))
    assert abs(float(fit.alpha) - alpha) < 4 * float(fit.sigma)
    assert 0.9 < float(fit.xmin) < 1.5


@pytest.mark.parametrize("seed", [0, 1])
def test_power_law_fit_equals_the_powerlaw_package(x64, seed):
    powerlaw = pytest.importorskip("powerlaw")
    rng = np.random.default_rng(seed)
    # powerlaw restricts a continuous power law's alpha to [0, 3] by default.
    x = np.concatenate([(1 - rng.random(2000)) ** (-1 / 1.5), rng.uniform(0.1, 1.0, 500)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = powerlaw.Fit(x, verbose=False)
    fit = spectra.power_law_fit(x)
    np.testing.assert_allclose([fit.alpha, fit.xmin], [reference.alpha, reference.xmin], rtol=1e-9)
    np.testing.assert_allclose(fit.ks_distance, reference.D, rtol=1e-9)


def test_power_law_fit_rejects_a_spectrum_too_short():
    with pytest.raises(ValueError, match="eigenvalues"):
        spectra.power_law_fit(jnp.ones(1))


def test_kernel_matrices_slice_a_convolution_per_position():
    kernel = np.random.default_rng(0).standard_normal((3, 2, 4, 5))
    flax = spectra.kernel_matrices(kernel)
    torch_layout = spectra.kernel_matrices(np.transpose(kernel, (3, 2, 0, 1)), channels_last=False)
    expected = np.stack([kernel[i, j] for i in range(3) for j in range(2)])
    np.testing.assert_allclose(flax, expected)
    np.testing.assert_allclose(torch_layout, np.transpose(expected, (0, 2, 1)))
    with pytest.raises(ValueError, match="kernel"):
        spectra.kernel_matrices(jnp.ones(3))


def test_layer_spectrum_norms_equal_numpy(x64):
    kernel = heavy_kernel(3, (3, 3, 16, 24))
    result = spectra.layer_spectrum(kernel)
    singular = np.concatenate(
        [np.linalg.svd(kernel[i, j], compute_uv=False) for i in range(3) for j in range(3)]
    )
    lam = singular**2
    np.testing.assert_allclose(result.lambda_max, lam.max(), rtol=1e-10)
    np.testing.assert_allclose(result.spectral_norm, singular.max(), rtol=1e-10)
    np.testing.assert_allclose(result.frobenius_norm, np.linalg.norm(kernel), rtol=1e-10)
    np.testing.assert_allclose(result.stable_rank, lam.sum() / lam.max(), rtol=1e-10)
    np.testing.assert_allclose(result.alpha_weighted, result.alpha * np.log10(lam.max()))
    np.testing.assert_allclose(
        result.log_alpha_norm, np.log10(np.sum(lam ** float(result.alpha))), rtol=1e-10
    )
    edge = np.mean(kernel**2) * (np.sqrt(24) + np.sqrt(16)) ** 2
    np.testing.assert_allclose(result.bulk_edge, edge, rtol=1e-10)
    assert np.isnan(result.num_traps) and np.isnan(result.rand_lambda_max)


@pytest.mark.parametrize("seed", range(4))
def test_noise_has_no_spikes_and_a_low_rank_signal_has_them(seed):
    noise = jax.random.normal(jax.random.key(seed), (300, 120))
    assert int(spectra.layer_spectrum(noise).num_spikes) == 0
    u = jax.random.normal(jax.random.key(100 + seed), (300, 2))
    v = jax.random.normal(jax.random.key(200 + seed), (2, 120))
    signal = noise + 0.3 * u @ v  # two directions well past the BBP threshold
    assert int(spectra.layer_spectrum(signal).num_spikes) == 2


@pytest.mark.parametrize("seed", range(3))
def test_correlation_traps_are_large_entries_that_shuffling_keeps(seed):
    noise = jax.random.normal(jax.random.key(seed), (200, 100))
    clean = spectra.layer_spectrum(noise, key=jax.random.key(9))
    assert int(clean.num_traps) == 0
    trapped = spectra.layer_spectrum(noise.at[5, 7].set(60.0), key=jax.random.key(9))
    assert int(trapped.num_traps) == 1
    assert float(trapped.rand_lambda_max) > 3000.0  # the entry survives any permutation


def test_spectra_selects_kernels_and_runs_under_vmap_with_one_trace():
    def init(seed):
        return functional(MLP((20, 32, 16, 5), rngs=nnx.Rngs(seed)))[1]

    stack = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[init(s) for s in range(3)])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def measure(params):
        return spectra.spectra(params)

    batched = jax.vmap(measure)(stack)
    assert sorted(batched) == [f"layers/{i}/kernel" for i in range(3)]
    for member in range(3):
        one = jax.jit(spectra.spectra)(init(member))
        for name, layer in one.items():
            chex.assert_trees_all_close(
                jax.tree.map(lambda leaf, m=member: leaf[m], batched[name]), layer, rtol=2e-5
            )
    with pytest.raises(ValueError, match="no kernel"):
        spectra.spectra({"bias": jnp.ones(3)})


def test_weightwatcher_recorded_agreement_and_current_values(x64):
    """``benchmarks/spectra.py`` ran WeightWatcher 0.7 on seeded kernels; jaxreg still agrees."""
    record = json.loads(RESULTS.read_text())
    assert record["weightwatcher_version"].startswith("0.7")
    assert len(record["layers"]) >= 4
    measure = jax.jit(spectra.layer_spectrum, static_argnames="channels_last")
    for layer in record["layers"]:
        kernel = heavy_kernel(layer["seed"], tuple(layer["shape"]), layer["dof"])
        ours = measure(kernel, channels_last=layer["channels_last"])
        ww = layer["weightwatcher"]
        assert abs(float(ours.alpha) - ww["alpha"]) < 0.05
        np.testing.assert_allclose(float(ours.lambda_max), ww["spectral_norm"], rtol=1e-6)
        np.testing.assert_allclose(float(ours.frobenius_norm) ** 2, ww["norm"], rtol=1e-6)
        np.testing.assert_allclose(float(ours.stable_rank), ww["stable_rank"], rtol=1e-6)
        np.testing.assert_allclose(
            float(ours.alpha_weighted),
            ww["alpha_weighted"],
            atol=0.05 * np.log10(ww["spectral_norm"]),
        )


def test_fit_records_spectra_every_epoch(steps="scan"):
    import optax

    from jaxreg import HostOptions, fit

    apply, params = functional(MLP((8, 24, 3), rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (96, 8))
    y = jnp.argmax(x[:, :3], axis=1)

    def alphas(p):
        return {name: layer.alpha for name, layer in spectra.spectra(p).items()}

    result = fit(
        apply,
        params,
        optax.adam(3e-2),
        (x, y),
        key=jax.random.key(1),
        num_epochs=3,
        batch_size=32,
        params_metrics=alphas,
        host=HostOptions(steps=steps),
    )
    history = result.history["params_layers/0/kernel"]
    assert np.shape(history) == (3,)
    np.testing.assert_allclose(history[-1], alphas(result.params)["layers/0/kernel"], rtol=1e-5)
    assert history[0] != history[-1]  # measured on each epoch's weights, not once
