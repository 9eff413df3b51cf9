"""The result of a sweep: metrics per member, with its config, seed and failure flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import chex
import jax
import numpy as np

from jaxreg.masks import leaf_path
from jaxreg.sweeps.spaces import Configs

__all__ = ["SweepResult"]


@dataclass
class SweepResult:
    """Results of :func:`run`, one row per member (config × seed, config-major).

    Attributes:
      metrics: pytree returned by ``train_fn``, leading axis ``N·S``.
      configs: the configs repeated per seed, leading axis ``N·S``.
      config_index: which config each member ran, ``(N·S,)``.
      seed: which seed each member ran, ``(N·S,)``.
      failed: members with any non-finite metric or an invalid config value, ``(N·S,)``.
      failure: why each member failed, ``(N·S,)`` strings ("" where it did not): the
        invalid config values (e.g. ``"dropout_rate=2 is outside [0, 1)"``, by the rules
        of ``hparam_problems``) or ``"non-finite metric"``.

    Example:
      >>> from jaxreg.sweeps import grid, run
      >>> def train_fn(config, key):
      ...     return {"loss": (config["x"] - 1.0) ** 2 + 0.01 * jax.random.normal(key)}
      >>> result = run(train_fn, grid(x=[0.0, 1.0]), key=jax.random.key(0), seeds=3, progress=False)
      >>> result.config_index.tolist(), result.seed.tolist()  # config-major
      ([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2])
      >>> list(result.to_dataframe().columns), len(result.summary())
      (['x', 'seed', 'failed', 'loss'], 2)
    """

    metrics: chex.ArrayTree
    configs: Configs
    config_index: np.ndarray
    seed: np.ndarray
    failed: np.ndarray
    failure: np.ndarray | None = None

    def _flat_metrics(self) -> dict[str, np.ndarray]:
        flat = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.metrics)[0]:
            leaf = np.asarray(leaf)
            if leaf.ndim == 1:
                flat[leaf_path(path)] = leaf
        return flat

    def to_dataframe(self):
        """A pandas DataFrame: config columns, ``seed``, ``failed`` and every scalar metric."""
        import pandas as pd

        columns = {
            **{k: np.asarray(v) for k, v in self.configs.items()},
            "seed": self.seed,
            "failed": self.failed,
            **self._flat_metrics(),
        }
        return pd.DataFrame(columns)

    def best(self, metric: str, mode: Literal["min", "max"] = "max") -> dict[str, Any]:
        """The member with the best mean-over-seeds ``metric`` (failed members excluded)."""
        table = self.to_dataframe()
        if metric not in table:
            raise ValueError(f"unknown metric {metric!r}; have {sorted(self._flat_metrics())}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        table = table.assign(config=self.config_index)
        means = table[~table["failed"]].groupby("config")[metric].mean()
        if means.empty:
            raise ValueError("every member failed")
        best = int(means.idxmax() if mode == "max" else means.idxmin())
        row = {
            k: np.asarray(v)[self.config_index == best][0].item() for k, v in self.configs.items()
        }
        return {**row, metric: float(means[best]), "config_index": best}

    def summary(self):
        """Mean and sd over seeds of every scalar metric, one row per config."""
        table = self.to_dataframe().assign(config=self.config_index)
        metrics = list(self._flat_metrics())
        grouped = table.groupby("config")
        out = grouped[list(self.configs)].first()
        for name in metrics:
            out[f"{name}_mean"] = grouped[name].mean()
            out[f"{name}_sd"] = grouped[name].std(ddof=0)
        out["failed"] = grouped["failed"].sum()
        return out
