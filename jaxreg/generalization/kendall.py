"""Kendall's τ between a measure and the generalization gap, granulated τ, bootstrap intervals.

All three follow Jiang et al. (2020), §3: τ over every pair of models (the
tie-corrected τ-b, as ``scipy.stats.kendalltau`` computes it), and the
granulated τ ``Ψ_a``: the mean over groups of models that share every
hyperparameter but ``a`` of τ within the group, so that ``Ψ_a`` asks whether the
measure tracks the gap when only ``a`` changes. Pairs are compared as an
``(n, n)`` sign matrix, so one sweep of a few hundred models, its measures and
a thousand bootstrap resamples run as one compiled program.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxreg._checks import check_key

__all__ = ["TauInterval", "granulated_kendall_tau", "kendall_tau", "tau_intervals"]


def _signs(values: jax.Array) -> jax.Array:
    """``sign(v_i − v_j)`` for every pair: ``(..., n, n)``."""
    return jnp.sign(values[..., :, None] - values[..., None, :])


def _tau_from_signs(dx: jax.Array, dy: jax.Array, pairs: jax.Array, group=None, groups=1):
    """τ-b over the pairs ``pairs`` marks; per group of the row index when ``group`` is given."""

    def total(values):
        per_row = jnp.sum(jnp.where(pairs, values, 0.0), axis=-1)
        if group is None:
            return jnp.sum(per_row, axis=-1)
        return jax.ops.segment_sum(jnp.moveaxis(per_row, -1, 0), group, num_segments=groups).T

    # τ-b = (P − Q) / √((P + Q + ties in y only)(P + Q + ties in x only)); 0/0 is NaN.
    concordance = total(dx * dy)
    return concordance / jnp.sqrt(total(jnp.abs(dx)) * total(jnp.abs(dy)))


def kendall_tau(x: ArrayLike, y: ArrayLike) -> jax.Array:
    """Kendall's τ-b of ``x`` and ``y`` (ties corrected, as ``scipy.stats.kendalltau``).

    NaN when either input is constant. Memory is ``O(n²)``: meant for the few
    hundred models of a sweep, not for millions of points.

    Example:
      >>> x, y = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.0, 3.0, 2.0, 4.0])
      >>> round(float(kendall_tau(x, y)), 4)  # 5 concordant pairs, 1 discordant: 4/6
      0.6667
    """
    x, y = jnp.ravel(jnp.asarray(x, float)), jnp.ravel(jnp.asarray(y, float))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    upper = jnp.triu(jnp.ones((x.shape[0],) * 2, bool), k=1)
    return _tau_from_signs(_signs(x), _signs(y), upper)


def _group_ids(axes: Mapping[str, ArrayLike], n: int) -> tuple[np.ndarray, list[int]]:
    """For each axis, which models share all the *other* axes: ``(num_axes, n)`` ids."""
    columns = {}
    for name, values in axes.items():
        values = np.ravel(np.asarray(values))
        if values.shape[0] != n:
            raise ValueError(f"axes[{name!r}] has {values.shape[0]} values for {n} models")
        columns[name] = np.unique(values, return_inverse=True)[1].ravel()
    if not columns:
        raise ValueError("axes must name at least one hyperparameter")
    ids, counts = [], []
    for name in columns:
        others = [columns[o] for o in columns if o != name]
        rows = np.stack(others, axis=1) if others else np.zeros((n, 1), int)
        unique, inverse = np.unique(rows, axis=0, return_inverse=True)
        ids.append(inverse.ravel())
        counts.append(len(unique))
    return np.stack(ids), counts


def _granulated(dx, dy, upper, group_ids, counts):
    """``Ψ_a`` for each axis: the mean over groups of the within-group τ (NaN groups skipped)."""
    result = []
    for axis, count in enumerate(counts):
        group = group_ids[axis]
        same = upper & (group[:, None] == group[None, :])
        taus = _tau_from_signs(dx, dy, same, group, count)
        result.append(jnp.nanmean(taus, axis=-1))
    return jnp.stack(result, axis=-1)


def granulated_kendall_tau(
    measure: ArrayLike, gap: ArrayLike, axes: Mapping[str, ArrayLike]
) -> dict[str, jax.Array]:
    """Jiang et al.'s granulated τ ``Ψ_a`` for each hyperparameter axis ``a``, and their mean Ψ.

    Args:
      measure: one value per model ``(n,)``.
      gap: the generalization gap per model ``(n,)``.
      axes: each hyperparameter's value per model (``{"learning_rate": (n,), ...}``;
        include ``"seed"`` to compare seeds too). Models that agree on every axis
        but ``a`` form one group; ``Ψ_a`` is the mean of τ within the groups
        (groups where τ is undefined, e.g. a constant measure, are skipped).

    Returns:
      ``{axis: Ψ_a, ..., "mean": Ψ}``; an axis that never varies has ``Ψ_a`` NaN and is
      left out of the mean.

    Example:
      >>> lr = jnp.array([1.0, 2.0, 1.0, 2.0]); width = jnp.array([1.0, 1.0, 2.0, 2.0])
      >>> gap = lr + 10 * width  # the gap grows with both
      >>> psi = granulated_kendall_tau(-lr + 10 * width, gap, {"lr": lr, "width": width})
      >>> {k: float(v) for k, v in psi.items()}  # tracks width, not the learning rate
      {'lr': -1.0, 'width': 1.0, 'mean': 0.0}
    """
    x, y = jnp.ravel(jnp.asarray(measure, float)), jnp.ravel(jnp.asarray(gap, float))
    group_ids, counts = _group_ids(axes, x.shape[0])
    upper = jnp.triu(jnp.ones((x.shape[0],) * 2, bool), k=1)
    psi = _granulated(_signs(x), _signs(y), upper, jnp.asarray(group_ids), counts)
    result = {name: psi[i] for i, name in enumerate(axes)}
    return {**result, "mean": jnp.nanmean(psi)}


class TauInterval(NamedTuple):
    """A rank correlation and its bootstrap interval.

    Attributes:
      value: the statistic on all models.
      low: the lower end of the percentile bootstrap interval.
      high: its upper end.

    Example:
      >>> TauInterval(0.5, 0.3, 0.7).low
      0.3
    """

    value: float
    low: float
    high: float


def _resampled_taus(measures, gap, group_ids, counts, index):
    x, y = measures[:, index], gap[index]
    dx, dy = _signs(x), _signs(y)
    upper = jnp.triu(jnp.ones((y.shape[0],) * 2, bool), k=1)
    tau = _tau_from_signs(dx, dy[None], upper[None])
    if group_ids is None:
        return tau[:, None]
    psi = _granulated(dx, dy[None], upper[None], group_ids[:, index], counts)
    return jnp.concatenate([tau[:, None], psi, jnp.nanmean(psi, -1, keepdims=True)], axis=-1)


def tau_intervals(
    measures: Mapping[str, ArrayLike],
    gap: ArrayLike,
    *,
    key: jax.Array,
    axes: Mapping[str, ArrayLike] | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
) -> dict[str, dict[str, TauInterval]]:
    """τ (and granulated τ per axis) of every measure, with percentile bootstrap intervals.

    Models are resampled with replacement ``num_resamples`` times (the same
    resamples for every measure); duplicated models form tied pairs, which τ-b
    leaves out.

    Args:
      measures: ``{name: (n,) values}``.
      gap: the generalization gap ``(n,)``.
      key: PRNG key for the resamples.
      axes: hyperparameter values per model for the granulated τ (optional).
      num_resamples: bootstrap resamples.
      confidence: coverage of the intervals.

    Returns:
      ``{measure: {"tau": TauInterval, axis: TauInterval, ..., "mean": TauInterval}}``.

    Example:
      >>> gap = jnp.arange(20.0)
      >>> out = tau_intervals({"good": gap ** 2, "noise": jnp.sin(gap * 7)}, gap,
      ...                     key=jax.random.key(0), num_resamples=200)
      >>> out["good"]["tau"].value, out["good"]["tau"].low
      (1.0, 1.0)
      >>> out["noise"]["tau"].low < 0 < out["noise"]["tau"].high
      True
    """
    check_key(key)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    names = list(measures)
    stacked = jnp.stack([jnp.ravel(jnp.asarray(measures[m], float)) for m in names])
    y = jnp.ravel(jnp.asarray(gap, float))
    if stacked.shape[1] != y.shape[0]:
        raise ValueError(f"measures have {stacked.shape[1]} models, gap has {y.shape[0]}")
    group_ids, counts = (None, []) if axes is None else _group_ids(axes, y.shape[0])
    groups = None if group_ids is None else jnp.asarray(group_ids)
    columns = ["tau"] + ([] if axes is None else [*axes, "mean"])

    @jax.jit
    def run(index):
        return jax.lax.map(
            lambda i: _resampled_taus(stacked, y, groups, counts, i), index, batch_size=16
        )

    everything = jnp.arange(y.shape[0])
    point = np.asarray(_resampled_taus(stacked, y, groups, counts, everything))
    index = jax.random.randint(key, (num_resamples, y.shape[0]), 0, y.shape[0])
    draws = np.asarray(run(index))  # (resamples, measures, columns)
    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # an axis that never varies has τ NaN in every resample
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return {
        name: {
            column: TauInterval(float(point[m, c]), float(low[m, c]), float(high[m, c]))
            for c, column in enumerate(columns)
        }
        for m, name in enumerate(names)
    }
