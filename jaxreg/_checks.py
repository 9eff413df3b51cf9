"""Argument checks shared by every module: concrete values are checked, traced ones pass."""

from __future__ import annotations

import chex
import jax
import numpy as np
from jax.typing import ArrayLike


def is_traced(tree: chex.ArrayTree) -> bool:
    """True if any leaf of ``tree`` is a ``jax.core.Tracer`` (its value is unknown on the host).

    The one place jaxreg looks at tracers: checks of concrete values skip traced
    ones, and :func:`jaxreg.fit` reads results on the host only when they are concrete.
    """
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def is_concrete_zero(value: ArrayLike) -> bool:
    """True for a concrete scalar equal to 0 (a rate that switches a layer off); False if traced."""
    return not is_traced(value) and float(value) == 0.0


def float_dtype(*arrays: ArrayLike):
    """The floating dtype results should have: the inputs' own if floating, else JAX's default
    float (float64 under ``jax_enable_x64``)."""
    import jax.numpy as jnp

    floats = [
        jnp.asarray(a).dtype for a in arrays if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
    ]
    return jnp.result_type(*floats) if floats else jnp.result_type(float)


def _concrete(value: ArrayLike) -> np.ndarray | None:
    return None if is_traced(value) else np.asarray(value)


def check_non_negative(value: ArrayLike, name: str) -> None:
    """``ValueError`` naming ``name`` if a concrete ``value`` has a negative or NaN entry."""
    array = _concrete(value)
    if array is not None and not np.all(array >= 0):
        raise ValueError(f"{name} must be non-negative, got {value!r}")


def check_interval(
    value: ArrayLike, name: str, low: float, high: float, *, closed_high: bool = False
) -> None:
    """``ValueError`` naming ``name`` unless ``low <= value < high`` (``<= high`` if closed)."""
    array = _concrete(value)
    if array is None:
        return
    upper_ok = array <= high if closed_high else array < high
    if not np.all((array >= low) & upper_ok):
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must lie in [{low}, {high}{bracket}, got {value!r}")


def check_batch_size(batch_size: int, n: int) -> None:
    """``batch_size`` is a positive int no larger than the ``n`` examples it batches."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({n} examples)")


def require_params(params: chex.ArrayTree | None, name: str) -> chex.ArrayTree:
    """``params`` as given to an optax ``update``; a ``ValueError`` naming ``name`` if None."""
    if params is None:
        raise ValueError(f"{name} needs params: call update(updates, state, params)")
    return params


def check_key(key: object, name: str = "key") -> None:
    """``TypeError`` naming ``name`` unless ``key`` is a JAX PRNG key (typed, or a legacy
    ``uint32`` array whose last axis is 2), with how to make one. Traced keys are checked by
    their abstract type, so sweep members and jitted callers get the same message.

    Example:
      >>> check_key(jax.random.key(0))
      >>> check_key(0)
      Traceback (most recent call last):
      ...
      TypeError: key must be a JAX PRNG key such as jax.random.key(0), got the int 0
    """
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype == np.uint32 and getattr(key, "shape", ())[-1:] == (2,):
        return
    if dtype is None:
        got = "None" if key is None else f"the {type(key).__name__} {key!r}"
    else:
        got = f"an array of dtype {dtype} and shape {tuple(key.shape)}"
    raise TypeError(f"{name} must be a JAX PRNG key such as jax.random.key(0), got {got}")


def hparam_problems(name: str, values: ArrayLike) -> np.ndarray:
    """Per value of the hyperparameter ``name``, what is wrong with it ("" where nothing).

    Every value must be finite. By name: a ``*_rate`` other than ``learning_rate``, and
    ``label_smoothing``, lie in ``[0, 1)``; ``learning_rate``, ``weight_decay``,
    ``*_strength`` and ``*_std`` are non-negative. Other names are only checked for
    finiteness. :func:`jaxreg.fit` raises on a concrete problem; :func:`jaxreg.sweeps.run`
    flags the members that ran with one.

    Example:
      >>> hparam_problems("dropout_rate", [0.1, 2.0, float("nan")]).tolist()
      ['', 'dropout_rate=2 is outside [0, 1)', 'dropout_rate=nan is not finite']
      >>> hparam_problems("weight_decay", -0.1).tolist()
      'weight_decay=-0.1 is negative'
    """
    values = np.asarray(values, np.float64)
    problems = np.full(values.shape, "", dtype=object)
    unit = (name.endswith("_rate") and name != "learning_rate") or name == "label_smoothing"
    non_negative = name in ("learning_rate", "weight_decay") or name.endswith(("_strength", "_std"))
    for index, value in np.ndenumerate(values):
        if not np.isfinite(value):
            problems[index] = f"{name}={value:g} is not finite"
        elif unit and not 0 <= value < 1:
            problems[index] = f"{name}={value:g} is outside [0, 1)"
        elif non_negative and value < 0:
            problems[index] = f"{name}={value:g} is negative"
    return problems


def check_label_range(labels: ArrayLike, num_classes: int, name: str = "labels") -> None:
    """``ValueError`` naming ``name`` if concrete integer labels fall outside
    ``[0, num_classes)`` (where JAX would silently give NaN or a wrong count).

    Example:
      >>> check_label_range(np.array([0, 2]), 3)
      >>> check_label_range(np.array([0, 7]), 3)
      Traceback (most recent call last):
      ...
      ValueError: labels must lie in [0, 3) for 3 classes; got values from 0 to 7
    """
    array = _concrete(labels)
    if array is None or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        return
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) for {num_classes} classes; got values "
            f"from {low} to {high}"
        )
