"""Search spaces: a grid or random draws, as a dict of arrays with a shared leading axis."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

__all__ = ["Choice", "LogUniform", "Uniform", "grid", "random"]

Configs = dict[str, np.ndarray]


def grid(**axes: Sequence[Any]) -> Configs:
    """Cartesian product of the given values: a dict of arrays with leading axis ``N``.

    Example:
      >>> configs = grid(lr=[1e-3, 1e-2], wd=[0.0, 1e-4, 1e-3])
      >>> configs["lr"].shape, configs["wd"][:3].tolist()
      ((6,), [0.0, 0.0001, 0.001])
    """
    if not axes:
        raise ValueError("grid needs at least one axis")
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"axis {name!r} has no values")
    names = list(axes)
    product = list(itertools.product(*(axes[n] for n in names)))
    return {n: np.asarray([p[i] for p in product]) for i, n in enumerate(names)}


@dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high)``.

    Example:
      >>> configs = random(jax.random.key(0), 100, dropout_rate=Uniform(0.0, 0.5))
      >>> bool((configs["dropout_rate"] >= 0).all() and (configs["dropout_rate"] < 0.5).all())
      True
    """

    low: float
    high: float


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on ``[low, high)`` (``low > 0``).

    Example:
      >>> lr = random(jax.random.key(0), 1000, lr=LogUniform(1e-4, 1e-2))["lr"]
      >>> bool((lr >= 1e-4).all() and (lr < 1e-2).all()), round(float(np.median(np.log10(lr))))
      (True, -3)
    """

    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    """Uniform choice among ``values``.

    Example:
      >>> configs = random(jax.random.key(0), 50, batch_norm=Choice([0.0, 1.0]))
      >>> sorted(set(configs["batch_norm"].tolist()))
      [0.0, 1.0]
    """

    values: Sequence[Any]


def random(key: jax.Array, n: int, **distributions: Uniform | LogUniform | Choice) -> Configs:
    """``n`` random configs, each hyperparameter drawn independently from its distribution.

    Example:
      >>> configs = random(jax.random.key(0), 4, lr=LogUniform(1e-4, 1e-1), depth=Choice([2, 3]))
      >>> configs["lr"].shape, set(configs["depth"].tolist()) <= {2, 3}
      ((4,), True)
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    out = {}
    for index, (name, dist) in enumerate(distributions.items()):
        k = jax.random.fold_in(key, index)
        if isinstance(dist, Uniform):
            out[name] = np.asarray(jax.random.uniform(k, (n,), minval=dist.low, maxval=dist.high))
        elif isinstance(dist, LogUniform):
            if dist.low <= 0:
                raise ValueError(f"LogUniform for {name!r} needs low > 0, got {dist.low}")
            logs = jax.random.uniform(k, (n,), minval=np.log(dist.low), maxval=np.log(dist.high))
            out[name] = np.exp(np.asarray(logs))
        elif isinstance(dist, Choice):
            values = np.asarray(dist.values)
            out[name] = values[np.asarray(jax.random.randint(k, (n,), 0, len(values)))]
        else:
            raise TypeError(f"distribution for {name!r} must be Uniform, LogUniform or Choice")
    return out


def check_configs(configs: Mapping[str, Any]) -> tuple[Configs, int]:
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError("configs must be a non-empty dict of arrays with a leading axis")
    arrays = {k: np.asarray(v) for k, v in configs.items()}
    for name, values in arrays.items():
        if values.dtype.kind not in "biuf":
            raise TypeError(
                f"configs[{name!r}] holds {values.dtype} values; a sweep axis must be numeric "
                "(bool, int or float) because it is traced. Sweep an index into your choices "
                "instead, e.g. grid(optimizer_index=[0, 1]) and OPTIMIZERS[...] outside the trace "
                "(or one sweep per choice)"
            )
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"configs must share one leading length, got {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("configs are empty")
    return arrays, n


def check_fixed(fixed: Mapping[str, Any] | None, swept: Mapping[str, Any]) -> dict[str, Any]:
    """``fixed`` as a dict of concrete scalars that no swept key repeats."""
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a mapping of names to scalars, got {type(fixed).__name__}")
    for name, value in fixed.items():
        if not isinstance(name, str):
            raise TypeError(f"fixed keys must be str, got {name!r}")
        if isinstance(value, str | bool) or np.ndim(value) != 0:
            raise ValueError(f"fixed[{name!r}] must be a number, got {value!r}")
    both = sorted(set(fixed) & set(swept))
    if both:
        raise ValueError(f"fixed and configs both set {both}: give each key in one of them")
    return dict(fixed)
