"""Matplotlib figures; matplotlib is imported lazily, inside each function."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["learning_curves"]


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def learning_curves(
    histories: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path | None = None,
    *,
    metric: str = "accuracy",
):
    """Train (dashed) and eval (solid) ``metric`` per epoch, mean ± sd over seeds.

    Args:
      histories: name -> history dict from :func:`jaxreg.fit`; arrays shaped
        ``(epochs,)`` or ``(seeds, epochs)``.
      path: where to save the PNG (the figure is returned either way).
      metric: ``"accuracy"`` or ``"loss"``.

    Returns:
      The matplotlib ``Figure``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for index, (name, history) in enumerate(histories.items()):
        color = f"C{index}"
        for split, style in (("train", "--"), ("eval", "-")):
            key = f"{split}_{metric}"
            if key not in history:
                continue
            values = np.atleast_2d(np.asarray(history[key]))
            mean, sd = values.mean(0), values.std(0)
            epochs = np.arange(1, mean.size + 1)
            ax.plot(epochs, mean, style, color=color, label=f"{name} ({split})")
            ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
