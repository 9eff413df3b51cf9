"""The dropout family: binomial keep rates, inverted scaling, per-member masks, traced rates."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import fit
from jaxreg.nn import (
    CNN1D,
    MLP,
    ChannelDropout,
    DropConnect,
    Dropout,
    DropPath,
    GaussianDropout,
    count_params,
    dense_vs_conv,
    functional,
    mc_predict,
)


def _rngs(seed):
    return nnx.Rngs(dropout=jax.random.key(seed))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_is_binomial_and_scaling_is_inverted(rate):
    n = 100_000
    out = Dropout(rate)(jnp.ones(n), train=True, rngs=_rngs(0))
    kept = np.asarray(out != 0)
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(kept.sum() - n * (1 - rate)) < 5 * sigma
    np.testing.assert_allclose(np.asarray(out)[kept], 1 / (1 - rate), rtol=1e-6)


def test_expected_output_equals_input_and_the_classic_scaled_network():
    rate, draws = 0.4, 20_000
    x = jax.random.normal(jax.random.key(0), (6,))
    w = jax.random.normal(jax.random.key(1), (6, 3))
    layer = Dropout(rate)

    def inverted(k):
        return layer(x, train=True, rngs=nnx.Rngs(dropout=k)) @ w

    def classic(k):  # classic dropout: no scaling in training, weights × (1-p) at test
        keep = jax.random.bernoulli(k, 1 - rate, x.shape)
        return (x * keep) @ w

    keys = jax.random.split(jax.random.key(2), draws)
    samples = np.asarray(jax.vmap(inverted)(keys))
    band = 5 * samples.std(0) / np.sqrt(draws)
    assert np.all(np.abs(samples.mean(0) - np.asarray(x @ w)) < band)
    classic_samples = np.asarray(jax.vmap(classic)(keys))
    band = 5 * classic_samples.std(0) / np.sqrt(draws)
    assert np.all(np.abs(classic_samples.mean(0) - np.asarray(x @ ((1 - rate) * w))) < band)
    units = np.asarray(jax.vmap(lambda k: layer(x, train=True, rngs=nnx.Rngs(dropout=k)))(keys))
    assert np.all(np.abs(units.mean(0) - np.asarray(x)) < 5 * units.std(0) / np.sqrt(draws))


def test_every_vmapped_member_and_example_gets_its_own_mask():
    apply, params = functional(MLP((8, 64, 4), dropout_rate=0.5, rngs=nnx.Rngs(0)))
    x = jnp.ones((1, 8))
    keys = jax.random.split(jax.random.key(0), 16)
    outs = np.asarray(jax.vmap(lambda k: apply(params, x, key=k, train=True))(keys))
    assert len({o.tobytes() for o in outs}) == 16
    same = np.asarray(jax.vmap(lambda k: apply(params, x, key=k, train=True))(keys))
    np.testing.assert_array_equal(outs, same)
    batch = apply(params, jnp.ones((16, 8)), key=jax.random.key(3), train=True)
    assert len({np.asarray(row).tobytes() for row in batch}) == 16  # per example in a batch
    eval_outs = jax.vmap(lambda k: apply(params, x, key=k))(keys)
    np.testing.assert_array_equal(eval_outs, jnp.broadcast_to(apply(params, x), eval_outs.shape))


def test_sweep_over_dropout_rates_compiles_once_and_matches_separate_runs():
    x = jax.random.normal(jax.random.key(0), (96, 6))
    y = (x[:, 0] > 0).astype(jnp.int32)
    rates = jnp.array([0.0, 0.1, 0.3, 0.5])

    def run(rate):
        apply, params = functional(MLP((6, 32, 2), dropout_rate=rate, rngs=nnx.Rngs(0)))
        return fit(
            apply,
            params,
            optax.adam(1e-2),
            (x, y),
            key=jax.random.key(1),
            num_epochs=3,
            batch_size=32,
        ).params

    counted = chex.assert_max_traces(run, n=1)
    chex.clear_trace_counter()
    swept = jax.jit(jax.vmap(counted))(rates)
    for i, rate in enumerate(rates.tolist()):
        single = run(rate)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], swept), single, rtol=2e-5, atol=2e-6
        )


def test_gaussian_dropout_multiplier_moments():
    rate = 0.3
    out = np.asarray(GaussianDropout(rate)(jnp.ones(200_000), train=True, rngs=_rngs(0)))
    assert abs(out.mean() - 1) < 0.005
    assert abs(out.var() - rate / (1 - rate)) < 0.01
    np.testing.assert_array_equal(GaussianDropout(rate)(jnp.ones(3)), jnp.ones(3))


def test_channel_dropout_drops_whole_feature_maps():
    out = np.asarray(ChannelDropout(0.5)(jnp.ones((64, 10, 8)), train=True, rngs=_rngs(0)))
    per_channel = out.reshape(64, 10, 8)
    assert np.all((per_channel == 0).all(1) | (per_channel == 2).all(1))
    assert 0.3 < (per_channel[:, 0, :] == 0).mean() < 0.7
    images = np.asarray(ChannelDropout(0.5)(jnp.ones((4, 5, 5, 3)), train=True, rngs=_rngs(1)))
    assert np.all((images == 0).all((1, 2)) | (images == 2).all((1, 2)))


def test_drop_path_drops_whole_branches_per_example():
    out = np.asarray(DropPath(0.25)(jnp.ones((4000, 7)), train=True, rngs=_rngs(0)))
    rows_dropped = (out == 0).all(1)
    assert np.all(rows_dropped | np.isclose(out, 1 / 0.75).all(1))
    assert abs(rows_dropped.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / 4000)


def test_dropconnect_is_unbiased_for_the_dense_layer():
    layer = DropConnect(5, 3, rate=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5))
    keys = jax.random.split(jax.random.key(2), 20_000)
    samples = np.asarray(jax.vmap(lambda k: layer(x, train=True, rngs=nnx.Rngs(dropout=k)))(keys))
    band = 5 * samples.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(samples.mean(0) - np.asarray(layer(x))) < band)


def test_models_take_the_regularizing_layers_as_options():
    x = jnp.ones((32, 40))  # enough rows that two keys cannot both keep every residual branch
    for model in (
        MLP((40, 32, 32, 10), dropconnect_rate=0.3, rngs=nnx.Rngs(0)),
        MLP((40, 32, 32, 10), residual=True, drop_path_rate=0.2, rngs=nnx.Rngs(0)),
        CNN1D(channel_dropout_rate=0.2, dropout_rate=0.1, rngs=nnx.Rngs(0)),
    ):
        apply, params = functional(model)
        train_a = apply(params, x, key=jax.random.key(0), train=True)
        train_b = apply(params, x, key=jax.random.key(1), train=True)
        assert not np.array_equal(train_a, train_b)
        np.testing.assert_array_equal(apply(params, x), apply(params, x))
    residual = MLP((6, 4, 4, 2), residual=True, rngs=nnx.Rngs(0))
    assert residual.residual == (False, True)


def test_mc_predict_without_dropout_has_no_uncertainty_beyond_the_softmax():
    apply, params = functional(MLP((6, 16, 3), rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (5, 6))
    out = mc_predict(apply, params, x, key=jax.random.key(1), num_samples=16)
    np.testing.assert_allclose(out.variance, 0.0, atol=1e-12)
    np.testing.assert_allclose(out.mutual_information, 0.0, atol=1e-6)
    np.testing.assert_allclose(out.mean, jax.nn.softmax(apply(params, x)), rtol=1e-6)
    probs = np.asarray(out.mean)
    np.testing.assert_allclose(out.entropy, -(probs * np.log(probs)).sum(1), rtol=1e-5)


def test_mc_dropout_is_more_uncertain_out_of_distribution(mnist1d_data):
    x_train, y_train, x_test, _ = mnist1d_data
    apply, params = functional(MLP((40, 100, 100, 10), dropout_rate=0.3, rngs=nnx.Rngs(0)))
    trained = fit(
        apply,
        params,
        optax.adam(1e-3),
        (x_train, y_train),
        key=jax.random.key(0),
        num_epochs=30,
        batch_size=100,
    ).params
    in_dist = mc_predict(apply, trained, x_test[:500], key=jax.random.key(1), num_samples=32)
    noise = 3.0 * jax.random.normal(jax.random.key(2), (500, 40))
    ood = mc_predict(apply, trained, noise, key=jax.random.key(1), num_samples=32)
    mi_test = float(in_dist.mutual_information.mean())
    mi_noise = float(ood.mutual_information.mean())
    print(f"mean mutual information: test {mi_test:.4f}, noise {mi_noise:.4f}")
    assert mi_noise > mi_test


def test_dense_vs_conv_arithmetic_and_real_layer_counts():
    cost = dense_vs_conv((224, 224, 1), (3, 3))
    assert cost.dense_weights_per_unit == 224 * 224 == 50_176
    assert cost.conv_weights_per_filter == 9
    rgb = dense_vs_conv((224, 224, 3), (3, 3), features=64, use_bias=True)
    assert rgb.dense_layer_params == 224 * 224 * 3 * 64 + 64
    assert rgb.conv_layer_params == 3 * 3 * 3 * 64 + 64
    small = dense_vs_conv((12, 10, 3), (3, 5), features=4, use_bias=True)
    dense = nnx.Linear(12 * 10 * 3, 4, rngs=nnx.Rngs(0))
    conv = nnx.Conv(3, 4, (3, 5), rngs=nnx.Rngs(0))
    assert small.dense_layer_params == count_params(dense)
    assert small.conv_layer_params == count_params(conv)
    with pytest.raises(ValueError, match="kernel_size"):
        dense_vs_conv((8, 8, 1), (3,))


def test_bad_input():
    for layer in (Dropout, GaussianDropout, ChannelDropout, DropPath):
        with pytest.raises(ValueError, match="rate"):
            layer(1.0)
        with pytest.raises(ValueError, match="rate"):
            layer(-0.1)
        with pytest.raises(ValueError, match="key"):
            layer(0.5)(jnp.ones((2, 3, 4)), train=True)
    with pytest.raises(ValueError, match="key"):
        DropConnect(3, 2, 0.5, rngs=nnx.Rngs(0))(jnp.ones((1, 3)), train=True)
    with pytest.raises(ValueError, match="residual"):
        MLP((4, 4, 2), drop_path_rate=0.1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_samples"):
        mc_predict(
            lambda p, x, **k: x, None, jnp.ones((1, 2)), key=jax.random.key(0), num_samples=0
        )
