"""Embedded datasets, splits and batching with exact weights for a padded last batch.

Every dataset is produced offline: MNIST-1D is generated with
``mnist1d.data.make_dataset`` (its download path is never used) and cached as a
``.npz`` file; ``digits`` comes from scikit-learn's bundled copy.

Batched data follows the convention of the whole toolkit: a dict whose leaves
share a leading *batch-index* axis, ``(num_batches, batch_size, ...)``, with a
``"weight"`` leaf that is 1 for real examples and 0 for padding, so that a mean
over batches weighted by :func:`batch_weight` is exactly the full-data mean.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxreg._checks import check_batch_size
from jaxreg.io import atomic_savez

__all__ = [
    "Dataset",
    "HeldOut",
    "batch_weight",
    "batches",
    "cache_dir",
    "digits",
    "example_weights",
    "mean_over_batches",
    "mnist1d",
    "mnist1d_cache_path",
    "shuffled_batches",
    "train_val_split",
]


class Dataset(NamedTuple):
    """Train and test arrays of one dataset (unpacks as a 4-tuple).

    Example:
      >>> d = Dataset(np.zeros((4, 2)), np.zeros(4), np.ones((2, 2)), np.ones(2))
      >>> x_train, y_train, x_test, y_test = d
      >>> d.x_test.shape
      (2, 2)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def cache_dir() -> Path:
    """Directory for generated data: ``$JAXREG_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxreg``.

    Falls back to ``~/.cache/jaxreg``.

    Example:
      >>> import os
      >>> from unittest import mock
      >>> with mock.patch.dict(os.environ, {"JAXREG_CACHE_DIR": "/tmp/jaxreg-cache"}):
      ...     str(cache_dir())
      '/tmp/jaxreg-cache'
    """
    explicit = os.environ.get("JAXREG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxreg"


def mnist1d_cache_path(seed: int = 42, num_samples: int = 5000, train_split: float = 0.8) -> Path:
    """Where :func:`mnist1d` caches the dataset made with these arguments (it may not exist).

    Example:
      >>> mnist1d_cache_path().name.startswith("mnist1d-seed42-n5000-")
      True
    """
    key = {"seed": int(seed), "num_samples": num_samples, "train_split": float(train_split)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"mnist1d-seed{int(seed)}-n{num_samples}-{digest}.npz"


def mnist1d(
    seed: int = 42,
    num_samples: int = 5000,
    *,
    train_split: float = 0.8,
    cache: bool = True,
) -> Dataset:
    """MNIST-1D (Greydanus & Kobak, 2024), generated offline and cached.

    The data is made by ``mnist1d.data.make_dataset`` with the package's default
    arguments except ``seed``, ``num_samples`` and ``train_split``; it is never
    downloaded. The result is cached as ``.npz`` under :func:`cache_dir`, keyed by
    those arguments. The global NumPy and ``random`` states, which the generator
    reseeds, are restored afterwards.

    Args:
      seed: generator seed (42 reproduces the published dataset's recipe).
      num_samples: total number of examples, split into train and test.
      train_split: fraction of examples in the training set.
      cache: read and write the on-disk cache.

    Returns:
      ``Dataset(x_train, y_train, x_test, y_test)`` with ``float32`` signals of
      length 40 and ``int32`` labels in ``[0, 10)``.

    Example:
      >>> x_train, y_train, x_test, y_test = mnist1d()
      >>> x_train.shape, x_test.shape
      ((4000, 40), (1000, 40))
    """
    if not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"num_samples must be an int >= 10, got {num_samples!r}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must lie in (0, 1), got {train_split!r}")
    path = mnist1d_cache_path(seed, num_samples, train_split)
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as f:
            return Dataset(*(f[name] for name in Dataset._fields))

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = num_samples
    args.train_split = float(train_split)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    dataset = Dataset(
        x_train=np.asarray(raw["x"], np.float32),
        y_train=np.asarray(raw["y"], np.int32),
        x_test=np.asarray(raw["x_test"], np.float32),
        y_test=np.asarray(raw["y_test"], np.int32),
    )
    if cache:
        atomic_savez(path, dataset._asdict())
    return dataset


def digits(*, test_fraction: float = 0.2, seed: int = 0, flatten: bool = False) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits, scaled to ``[0, 1]``.

    Args:
      test_fraction: fraction of the 1797 images held out for testing.
      seed: seed of the (stratification-free) shuffle before the split.
      flatten: return ``(n, 64)`` vectors instead of ``(n, 8, 8, 1)`` images.

    Returns:
      ``Dataset`` with ``float32`` inputs and ``int32`` labels.

    Raises:
      ImportError: scikit-learn is missing (``pip install 'jaxreg[sklearn]'``).

    Example:
      >>> x_train, y_train, x_test, y_test = digits()
      >>> x_train.shape[1:]
      (8, 8, 1)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jaxreg.data.digits needs scikit-learn; install it with "
            "`pip install 'jaxreg[sklearn]'`."
        ) from err
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    if not flatten:
        x = x.reshape(-1, 8, 8, 1)
    num_test = round(len(y) * test_fraction)
    return Dataset(x[num_test:], y[num_test:], x[:num_test], y[:num_test])


def _check_xy(x: ArrayLike, y: ArrayLike) -> int:
    x_len, y_len = np.shape(x)[0] if np.ndim(x) else 0, np.shape(y)[0] if np.ndim(y) else 0
    if x_len != y_len:
        raise ValueError(f"x and y must have the same length, got len(x)={x_len}, len(y)={y_len}")
    if x_len == 0:
        raise ValueError("x and y are empty")
    return x_len


def train_val_split(
    key: jax.Array, x: ArrayLike, y: ArrayLike, val_fraction: float = 0.1
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Randomly split ``(x, y)`` into training and validation parts.

    Args:
      key: PRNG key driving the permutation.
      x: inputs with a leading example axis.
      y: labels with the same leading length.
      val_fraction: fraction of examples in the validation part (static).

    Returns:
      ``(x_train, y_train, x_val, y_val)``.

    Example:
      >>> x = jnp.arange(10.0)[:, None]; y = jnp.arange(10)
      >>> x_tr, y_tr, x_val, y_val = train_val_split(jax.random.key(0), x, y, 0.2)
      >>> x_tr.shape, x_val.shape
      ((8, 1), (2, 1))
    """
    n = _check_xy(x, y)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    num_val = round(n * val_fraction)
    if not 0 < num_val < n:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty part for {n} examples")
    order = jax.random.permutation(key, n)
    x, y = jnp.asarray(x)[order], jnp.asarray(y)[order]
    return x[num_val:], y[num_val:], x[:num_val], y[:num_val]


def batches(
    x: ArrayLike,
    y: ArrayLike,
    batch_size: int,
    *,
    drop_remainder: bool = False,
    weight: ArrayLike | None = None,
) -> dict[str, jax.Array]:
    """Stack ``(x, y)`` into batches with a leading batch-index axis.

    The last batch is padded with zeros (weight 0) unless ``drop_remainder``;
    a mean of per-batch weighted means, weighted by :func:`batch_weight`, is
    then exactly the full-data mean. Works on concrete and traced arrays
    (shapes are static).

    Args:
      x: inputs, shape ``(n, ...)``.
      y: labels, shape ``(n, ...)``.
      batch_size: examples per batch (static), ``1 <= batch_size <= n``.
      drop_remainder: drop the incomplete last batch instead of padding it.
      weight: optional per-example weights ``(n,)`` (e.g. bootstrap counts from
        :func:`jaxreg.ensembles.bootstrap_weights`); padding always weighs 0.

    Returns:
      ``{"x": (b, batch_size, ...), "y": (b, batch_size, ...), "weight": (b, batch_size)}``.

    Example:
      >>> data = batches(jnp.ones((5, 2)), jnp.arange(5), 2)
      >>> data["x"].shape, data["weight"].tolist()
      ((3, 2, 2), [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    """
    n = _check_xy(x, y)
    check_batch_size(batch_size, n)
    x, y = jnp.asarray(x), jnp.asarray(y)
    num_batches, remainder = divmod(n, batch_size)
    if weight is None:
        weight = jnp.ones((n,), jnp.result_type(float))
    else:
        weight = jnp.asarray(weight, jnp.result_type(float))
        if weight.shape != (n,):
            raise ValueError(f"weight must have shape ({n},), got {weight.shape}")
    if remainder and not drop_remainder:
        pad = batch_size - remainder
        num_batches += 1

        def pad_leading(a: jax.Array) -> jax.Array:
            return jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))

        x, y, weight = pad_leading(x), pad_leading(y), pad_leading(weight)
    keep = num_batches * batch_size

    def stack(a: jax.Array) -> jax.Array:
        return a[:keep].reshape((num_batches, batch_size, *a.shape[1:]))

    return {"x": stack(x), "y": stack(y), "weight": stack(weight)}


def shuffled_batches(
    key: jax.Array,
    x: ArrayLike,
    y: ArrayLike,
    batch_size: int,
    *,
    drop_remainder: bool = False,
    weight: ArrayLike | None = None,
) -> dict[str, jax.Array]:
    """One shuffled epoch of :func:`batches`, driven by ``key``; usable inside ``jit``/``scan``.

    Example:
      >>> x = jnp.arange(6.0)[:, None]; y = jnp.arange(6)
      >>> epoch = jax.jit(shuffled_batches, static_argnums=3)(jax.random.key(1), x, y, 4)
      >>> epoch["y"].shape
      (2, 4)
    """
    n = _check_xy(x, y)
    order = jax.random.permutation(key, n)
    return batches(
        jnp.asarray(x)[order],
        jnp.asarray(y)[order],
        batch_size,
        drop_remainder=drop_remainder,
        weight=None if weight is None else jnp.asarray(weight)[order],
    )


def batch_weight(batch: chex.ArrayTree) -> jax.Array:
    """Total weight of one batch: the sum of ``batch["weight"]``, else its size.

    Example:
      >>> float(batch_weight({"x": jnp.ones((3, 2)), "weight": jnp.array([1.0, 1.0, 0.0])}))
      2.0
      >>> float(batch_weight({"x": jnp.ones((3, 2))}))
      3.0
    """
    if isinstance(batch, dict) and "weight" in batch:
        return jnp.sum(batch["weight"])
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("batch has no array leaves")
    return jnp.asarray(leaves[0].shape[0], jnp.result_type(float))


def dataset_loss(
    loss_fn: Callable[[chex.ArrayTree, Any], jax.Array], params: chex.ArrayTree, data: Any
) -> jax.Array:
    """Mean of ``loss_fn(params, batch)`` over the batches of ``data`` (:func:`mean_over_batches`).

    Example:
      >>> data = batches(jnp.arange(5.0), jnp.arange(5), 2)
      >>> loss_fn = lambda w, b: jnp.sum(w * b["x"] * b["weight"]) / jnp.sum(b["weight"])
      >>> float(dataset_loss(loss_fn, 2.0, data))
      4.0
    """
    return mean_over_batches(lambda batch: loss_fn(params, batch), data)


def example_weights(batch: chex.ArrayTree, dtype=None) -> jax.Array:
    """Each example's share of its batch's weighted mean: ``weight / Σ weight``, ``(n,)``.

    Without ``"weight"`` every example counts ``1/n``; a batch of total weight 0
    (all padding) gives zeros, not NaN. ``dtype`` defaults to the weights' own.

    Example:
      >>> example_weights({"x": jnp.ones((3, 2)), "weight": jnp.array([1.0, 3.0, 0.0])}).tolist()
      [0.25, 0.75, 0.0]
      >>> example_weights({"x": jnp.ones((2, 2)), "weight": jnp.zeros(2)}).tolist()
      [0.0, 0.0]
    """
    weight = batch.get("weight") if isinstance(batch, dict) else None
    if weight is None:
        weight = jnp.ones((jax.tree.leaves(batch)[0].shape[0],), dtype or jnp.result_type(float))
    weight = weight if dtype is None else weight.astype(dtype)
    total = jnp.sum(weight)
    return weight / jnp.where(total > 0, total, 1)


def mean_over_batches(fn: Callable[[Any], chex.ArrayTree], data: chex.ArrayTree) -> chex.ArrayTree:
    """Exact dataset mean of ``fn(batch)`` over the leading batch-index axis of ``data``.

    ``fn`` must return per-batch *means* (any pytree); each is weighted by
    :func:`batch_weight`, so padded examples never count. Runs as a ``lax.scan``,
    holding one batch's result at a time. A batch of total weight 0 contributes
    nothing (its ``fn`` value is ignored even if NaN); data of total weight 0
    gives 0. ``data`` is kept opaque to XLA's constant folding, so a jitted
    function that closes over a dataset (and the parameters) compiles as fast as
    one that takes them as arguments.

    Example:
      >>> data = batches(jnp.arange(5.0), jnp.arange(5), 2)
      >>> def batch_mean(b):
      ...     return jnp.sum(b["x"] * b["weight"]) / jnp.sum(b["weight"])
      >>> float(mean_over_batches(batch_mean, data))
      2.0
    """
    # A dataset closed over by a jitted function is an HLO constant, and so are the
    # params beside it: XLA would then fold the whole forward pass at compile time, on
    # its slow interpreter (ResNet-20's top eigenvalue: 21 s of compile against 7 s
    # with the barrier). Work that depends only on params and data is better done once
    # at run time (sharpness.hvp's linearize).
    data = jax.lax.optimization_barrier(data)
    first = jax.tree.map(lambda a: a[0], data)
    no_weight = jnp.zeros((), jnp.result_type(float))
    if jax.tree.leaves(data)[0].shape[0] == 1:
        # One batch needs no scan: fn is traced once, not twice (eval_shape, then the
        # body), and a linearization has no loop to carry (seconds on a ResNet).
        total, weight = _weighted(fn, first)
        weight_sum = no_weight + weight
    else:
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first))

        def body(carry, batch):
            total, weight_sum = carry
            value, w = _weighted(fn, batch)
            total = jax.tree.map(lambda t, v: t + v.astype(t.dtype), total, value)
            return (total, weight_sum + w), None

        (total, weight_sum), _ = jax.lax.scan(body, (zeros, no_weight), data)
    # All-zero weight (every batch padding, or bootstrap left every example out): 0, not NaN.
    safe = jnp.where(weight_sum > 0, weight_sum, 1)
    return jax.tree.map(lambda t: t / safe.astype(t.dtype), total)


def _weighted(fn: Callable[[Any], chex.ArrayTree], batch: Any):
    """``(w · fn(batch), w)`` with ``w`` the batch's weight; 0, not NaN, when ``w`` is 0."""
    w = batch_weight(batch)
    value = jax.tree.map(lambda v: jnp.where(w > 0, w * v, 0).astype(v.dtype), fn(batch))
    return value, w


class HeldOut:
    """A held-out split behind a lock: reading it before :meth:`unlock` raises.

    A study unlocks its test split only after every choice is made on
    validation, so no selection can see test data; ``reads`` counts the
    evaluations (a study reads it once per final configuration).

    Example:
      >>> test = HeldOut(np.zeros((5, 40)), np.zeros(5))
      >>> test.read()  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      RuntimeError: the test split was read before the final evaluation: ...
      >>> test.unlock()
      >>> x, y = test.read()
      >>> len(test), test.reads
      (5, 1)
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self._x, self._y = x, y
        self.locked = True
        self.reads = 0

    def unlock(self) -> None:
        """Open the split: every choice has been made."""
        self.locked = False

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of the unlocked split (counted in ``reads``)."""
        if self.locked:
            raise RuntimeError(
                "the test split was read before the final evaluation: every selection must "
                "use validation data"
            )
        self.reads += 1
        return self._x, self._y

    def __len__(self) -> int:
        return len(self._y)
