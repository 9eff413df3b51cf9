import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxreg import data


def test_mnist1d_shapes_and_dtypes(mnist1d_data):
    x_train, y_train, x_test, y_test = mnist1d_data
    assert x_train.shape == (4000, 40) and x_test.shape == (1000, 40)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert set(np.unique(y_train)) == set(range(10))
    assert y_test.shape == (1000,)


def test_mnist1d_matches_the_generator_and_caches(tmp_path, monkeypatch):
    from mnist1d.data import get_dataset_args, make_dataset

    monkeypatch.setenv("JAXREG_CACHE_DIR", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    generated = data.mnist1d(seed=3, num_samples=200)
    # The generator reseeds the global RNGs; ours restores them.
    assert np.random.random() == expected_np and random.random() == expected_py
    files = list(tmp_path.glob("mnist1d-seed3-n200-*.npz"))
    assert files == [data.mnist1d_cache_path(seed=3, num_samples=200)]
    assert not data.mnist1d_cache_path(seed=3, num_samples=201).exists()
    cached = data.mnist1d(seed=3, num_samples=200)
    for a, b in zip(generated, cached, strict=True):
        np.testing.assert_array_equal(a, b)
    args = get_dataset_args()
    args.seed, args.num_samples = 3, 200
    reference = make_dataset(args)
    np.testing.assert_allclose(generated.x_train, reference["x"], rtol=1e-6)
    np.testing.assert_array_equal(generated.y_test, reference["y_test"])
    other = data.mnist1d(seed=4, num_samples=200)
    assert not np.array_equal(other.x_train, generated.x_train)


def test_mnist1d_bad_arguments():
    with pytest.raises(ValueError, match="num_samples"):
        data.mnist1d(num_samples=0)
    with pytest.raises(ValueError, match="train_split"):
        data.mnist1d(train_split=1.5)


def test_digits():
    x_train, _y_train, x_test, _y_test = data.digits()
    assert x_train.shape[1:] == (8, 8, 1) and len(x_train) + len(x_test) == 1797
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert data.digits(flatten=True).x_train.shape[1:] == (64,)


def test_train_val_split_is_a_partition():
    x = jnp.arange(50.0)[:, None]
    y = jnp.arange(50)
    x_tr, y_tr, x_val, y_val = data.train_val_split(jax.random.key(0), x, y, 0.2)
    assert x_tr.shape == (40, 1) and x_val.shape == (10, 1)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_val])), np.arange(50))
    np.testing.assert_array_equal(x_tr[:, 0], y_tr.astype(jnp.float32))
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(jax.random.key(0), x, y, 1.0)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_padded_batches_give_the_exact_full_data_mean(n, batch_size, seed):
    if batch_size > n:
        batch_size = n
    values = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)
    labels = np.arange(n)
    stacked = data.batches(values, labels, batch_size)
    assert stacked["x"].shape == (-(-n // batch_size), batch_size, 3)
    assert float(stacked["weight"].sum()) == n

    def batch_mean(batch):
        return jnp.sum(batch["x"] * batch["weight"][:, None], 0) / jnp.sum(batch["weight"])

    np.testing.assert_allclose(
        data.mean_over_batches(batch_mean, stacked), values.mean(0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("linearize", [None, False])  # hvp's two paths
def test_a_closed_over_dataset_is_not_constant_folded_at_compile_time(linearize):
    # jit(lambda v: hvp(loss, params, data)(v)) embeds params and data as HLO constants;
    # without the barrier XLA evaluates the whole forward pass while compiling (a 24×13
    # activation appears as a constant), which made ResNet-20's first call 3× slower.
    from jaxreg.sharpness import hvp

    x = jax.random.normal(jax.random.key(0), (24, 7))
    kernel = jax.random.normal(jax.random.key(1), (7, 13))
    stacked = data.batches(x, jnp.zeros(24, jnp.int32), 24)

    def loss(p, batch):
        return jnp.mean(jnp.tanh(batch["x"] @ p) ** 2)

    product = jax.jit(lambda v: hvp(loss, kernel, stacked, linearize=linearize)(v))
    compiled = product.lower(kernel).compile().as_text()
    folded = [
        line for line in compiled.splitlines() if "f32[24,13]" in line and "constant(" in line
    ]
    assert folded == []
    expected = jax.hessian(lambda p: loss(p, {"x": x}))(kernel)
    np.testing.assert_allclose(
        product(kernel), jnp.einsum("abcd,cd->ab", expected, kernel), rtol=1e-4, atol=1e-5
    )


def test_drop_remainder():
    stacked = data.batches(jnp.ones((7, 2)), jnp.arange(7), 3, drop_remainder=True)
    assert stacked["x"].shape == (2, 3, 2)
    np.testing.assert_array_equal(stacked["y"].ravel(), np.arange(6))


def test_shuffled_batches_are_a_permutation_inside_jit():
    x = jnp.arange(10.0)
    make = jax.jit(data.shuffled_batches, static_argnums=3)
    epoch = make(jax.random.key(0), x, jnp.arange(10), 4)
    real = np.asarray(epoch["y"])[np.asarray(epoch["weight"]) == 1]
    np.testing.assert_array_equal(np.sort(real), np.arange(10))
    again = make(jax.random.key(0), x, jnp.arange(10), 4)
    np.testing.assert_array_equal(epoch["y"], again["y"])
    other = make(jax.random.key(1), x, jnp.arange(10), 4)
    assert not np.array_equal(epoch["y"], other["y"])


@pytest.mark.parametrize(
    ("x", "y", "batch_size", "error", "match"),
    [
        (np.ones((4, 2)), np.ones(4), 0, ValueError, "batch_size"),
        (np.ones((4, 2)), np.ones(4), -1, ValueError, "batch_size"),
        (np.ones((4, 2)), np.ones(4), 5, ValueError, "batch_size"),
        (np.ones((4, 2)), np.ones(4), 2.0, TypeError, "batch_size"),
        (np.ones((4, 2)), np.ones(3), 2, ValueError, "same length"),
        (np.ones((0, 2)), np.ones(0), 1, ValueError, "empty"),
    ],
)
def test_batches_bad_input(x, y, batch_size, error, match):
    with pytest.raises(error, match=match):
        data.batches(x, y, batch_size)


def test_tour_says_loading_when_the_cache_is_used(tmp_path, monkeypatch, capsys):
    """The tour's first message tells a cached read from a fresh generation."""
    import experiments.tour as tour
    from experiments.study import StudyConfig

    monkeypatch.setenv("JAXREG_CACHE_DIR", str(tmp_path))
    stop = RuntimeError("stop after the data message")

    def prepare(*args):
        raise stop

    monkeypatch.setattr(tour, "prepare_data", prepare)
    monkeypatch.setattr(tour.data_lib, "mnist1d", lambda: None)
    with pytest.raises(RuntimeError, match="stop after"):
        tour.run_tour(tmp_path / "out", StudyConfig.quick())
    assert "generating MNIST-1D" in capsys.readouterr().err
    data.mnist1d_cache_path().parent.mkdir(parents=True, exist_ok=True)
    data.mnist1d_cache_path().write_bytes(b"")
    with pytest.raises(RuntimeError, match="stop after"):
        tour.run_tour(tmp_path / "out", StudyConfig.quick())
    err = capsys.readouterr().err
    assert "loading MNIST-1D" in err and "generating" not in err
