"""Matplotlib figures; matplotlib is imported lazily, inside each function."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "curvature_audit",
    "error_bars",
    "figure_problems",
    "landscapes",
    "learning_curves",
    "pyplot",
    "reliability_diagram",
    "save",
    "spectral_density",
    "weight_histograms",
]


def pyplot():
    """``matplotlib.pyplot``, on the file-only Agg backend unless a backend is already chosen.

    Example:
      >>> plt = pyplot()
      >>> figure, axis = plt.subplots()
      >>> plt.close(figure)
    """
    import sys

    import matplotlib

    # Scripts and CI render to files without a display; a session that already chose a
    # backend (pyplot imported, or a Jupyter kernel with its inline backend) keeps it.
    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(
    histories: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path | None = None,
    *,
    metric: str = "accuracy",
    eval_name: str = "eval",
):
    """Train (dashed) and eval (solid) ``metric`` per epoch, mean ± sd over seeds.

    Args:
      histories: name -> history dict from :func:`jaxreg.fit`; arrays shaped
        ``(epochs,)`` or ``(seeds, epochs)``.
      path: where to save the PNG (the figure is returned either way).
      metric: ``"accuracy"`` or ``"loss"``.
      eval_name: what the ``eval_*`` split is called in the legend (e.g. ``"validation"``).

    Returns:
      The matplotlib ``Figure``.

    Example:
      >>> history = {"train_accuracy": np.array([[0.5, 0.9, 1.0], [0.6, 0.9, 1.0]]),
      ...            "eval_accuracy": np.array([[0.5, 0.6, 0.6], [0.4, 0.6, 0.7]])}  # 2 seeds
      >>> fig = learning_curves({"baseline": history})
      >>> [line.get_linestyle() for line in fig.axes[0].lines]  # train dashed, eval solid
      ['--', '-']
    """
    plt = pyplot()
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
            shown = eval_name if split == "eval" else split
            ax.plot(epochs, mean, style, color=color, label=f"{name} ({shown})")
            ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def reliability_diagram(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path | None = None,
):
    """Reliability diagram: accuracy vs confidence per bin, one panel per model.

    Args:
      curves: name -> :func:`jaxreg.metrics.reliability_bins` output (optionally
        with an ``"ece"`` entry, shown in the title).
      path: where to save the PNG.

    Returns:
      The matplotlib ``Figure``.

    Example:
      >>> from jaxreg.metrics import ece, reliability_bins
      >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (200, 3)) * 3)
      >>> labels = jax.random.randint(jax.random.key(1), (200,), 0, 3)
      >>> bins = {**reliability_bins(probs, labels, num_bins=10), "ece": ece(probs, labels)}
      >>> fig = reliability_diagram({"random model": bins})
      >>> "ECE = " in fig.axes[0].get_title()
      True
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.6), squeeze=False)
    for ax, (name, bins) in zip(axes[0], curves.items(), strict=True):
        count = np.asarray(bins["count"])
        num_bins = count.size
        centres = (np.arange(num_bins) + 0.5) / num_bins
        filled = count > 0
        ax.bar(
            centres[filled],
            np.asarray(bins["accuracy"])[filled],
            width=1 / num_bins,
            edgecolor="k",
            lw=0.5,
            color="C0",
            label="accuracy",
        )
        accuracy = np.asarray(bins["accuracy"])
        gap = np.asarray(bins["confidence"]) - accuracy
        for sign, color, label in ((1, "C3", "overconfident"), (-1, "C2", "underconfident")):
            part = filled & (sign * gap > 0)
            ax.bar(
                centres[part],
                gap[part],
                bottom=accuracy[part],
                width=1 / num_bins,
                facecolor="none",
                edgecolor=color,
                hatch="///",
                lw=0.8,
                label=f"{label} (gap to confidence)",
            )
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        title = name if "ece" not in bins else f"{name}\nECE = {float(bins['ece']):.3f}"
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def save(fig, path: str | Path, *, dpi: int = 120) -> list[str]:
    """Save ``fig`` after :func:`figure_problems` has read it; each problem is a warning
    (``figure check (name.png): ...``), returned as well. Every figure jaxreg draws is
    saved this way.

    Example:
      >>> import tempfile
      >>> plt = pyplot()
      >>> fig, ax = plt.subplots()
      >>> _ = ax.plot([0, 1]); _ = ax.set_xlabel("epoch"); _ = ax.set_ylabel("loss")
      >>> save(fig, Path(tempfile.mkdtemp()) / "curve.png")
      []
      >>> plt.close(fig)
    """
    import warnings

    problems = figure_problems(fig)
    for problem in problems:
        warnings.warn(f"figure check ({Path(path).name}): {problem}", stacklevel=2)
    fig.savefig(path, dpi=dpi)
    return problems


def curvature_audit(audit: Any, path: str | Path | None = None):
    """Two panels for a :func:`jaxreg.curvature.audit_curvature` result: each approximation's
    relative eigenvalue error and principal angles (degrees) against the exact top-k GGN.

    Example:
      >>> from jaxreg.curvature import ApproximationError, CurvatureAudit
      >>> a = ApproximationError(np.ones(3), np.array([0.1, 0.3, 0.5]), np.array([0.1, 0.4, 1.2]))
      >>> fig = curvature_audit(CurvatureAudit(np.ones(3), {"diag": a}))
      >>> [axis.get_xlabel() for axis in fig.axes]
      ['eigenpair i (descending)', 'angle i (ascending)']
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for name, result in audit.approximations.items():
        errors = np.asarray(result.relative_error)
        angles = np.degrees(np.asarray(result.principal_angles))
        left.semilogy(np.arange(1, len(errors) + 1), np.maximum(errors, 1e-16), "o-", label=name)
        right.plot(np.arange(1, len(angles) + 1), angles, "s-", label=name)
    left.set_xlabel("eigenpair i (descending)")
    left.set_ylabel("relative eigenvalue error")
    right.set_xlabel("angle i (ascending)")
    right.set_ylabel("principal angle to exact subspace (°)")
    right.set_ylim(0, 92)
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle("Curvature approximations against the exact GGN's top eigenpairs")
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def error_bars(
    names: list[str],
    means: np.ndarray,
    errors: np.ndarray,
    path: str | Path | None = None,
    *,
    ylabel: str = "",
    title: str = "",
    limits: tuple[float, float] | None = None,
):
    """Bar chart of ``means`` with ``errors`` (e.g. a 95% interval's half-width).

    More than six bars, or long names, are drawn horizontally (one readable line per
    name). ``limits``
    clips each interval to the metric's range (an accuracy's interval never runs above
    100%).

    Example:
      >>> fig = error_bars(["baseline", "dropout"], np.array([60.0, 99.0]), np.array([1.0, 2.0]),
      ...                  ylabel="test accuracy (%)", limits=(0, 100))
      >>> fig.axes[0].get_ylabel(), len(fig.axes[0].patches)
      ('test accuracy (%)', 2)
      >>> [float(v) for v in fig.axes[0].get_ylim()][1] <= 101.0  # 99 + 2 clipped at 100
      True
    """
    plt = pyplot()
    means, errors = np.asarray(means, float), np.asarray(errors, float)
    low, high = (-np.inf, np.inf) if limits is None else limits
    spread = np.stack([np.minimum(errors, means - low), np.minimum(errors, high - means)])
    positions = np.arange(len(names))
    if len(names) > 6 or sum(len(name) for name in names) > 40:
        fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.2))
        ax.barh(positions, means, xerr=spread, capsize=3, color="C0", alpha=0.8)
        ax.set_yticks(positions, names, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.grid(alpha=0.3, axis="x")
        if limits is not None:
            ax.set_xlim(right=high)
    else:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6))
        ax.bar(positions, means, yerr=spread, capsize=4, color="C0", alpha=0.8)
        ax.set_xticks(positions, names)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        if limits is not None:
            ax.set_ylim(top=high)
    ax.set_title(title, fontsize="medium", wrap=True)
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def spectral_density(
    densities: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path | None = None,
    *,
    log: bool = True,
):
    """Hessian eigenvalue densities (from :func:`jaxreg.sharpness.spectral_density`).

    Args:
      densities: name → ``(grid, density)``.
      path: where to save the PNG.
      log: logarithmic density axis (the bulk near 0 dwarfs the outliers).

    Example:
      >>> grid = np.linspace(-1, 5, 50)
      >>> bump = np.exp(-((grid - 1) ** 2)) / np.sqrt(np.pi)
      >>> fig = spectral_density({"trained MLP": (grid, bump)})
      >>> fig.axes[0].get_yscale()
      'log'
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for index, (name, (grid, density)) in enumerate(densities.items()):
        density = np.asarray(density)
        ax.plot(
            np.asarray(grid),
            np.maximum(density, 1e-12) if log else density,
            color=f"C{index}",
            label=name,
        )
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-6)
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def landscapes(
    slices: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path | None = None,
    *,
    levels: int = 20,
):
    """Contour plots of 2-D loss slices (from :func:`jaxreg.landscape.slice_2d`), side by side.

    Example:
      >>> alphas = betas = np.linspace(-1, 1, 5)
      >>> bowl = alphas[:, None] ** 2 + betas[None] ** 2
      >>> fig = landscapes({"flat": (alphas, betas, bowl), "sharp": (alphas, betas, 10 * bowl)})
      >>> [ax.get_title() for ax in fig.axes[:2]]  # one colour scale shared by both panels
      ['flat', 'sharp']
    """
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(slices), figsize=(4.0 * len(slices) + 1.0, 3.8), squeeze=False, layout="constrained"
    )
    # One colour scale for every panel, so equal colours mean equal loss.
    finite = [np.asarray(s[2])[np.isfinite(s[2])] for s in slices.values()]
    low = min(float(f.min()) for f in finite)
    high = max(float(f.max()) for f in finite)
    bounds = np.linspace(low, high if high > low else low + 1e-6, levels + 1)
    contour = None
    for ax, (name, (alphas, betas, losses)) in zip(axes[0], slices.items(), strict=True):
        contour = ax.contourf(
            np.asarray(alphas),
            np.asarray(betas),
            np.asarray(losses).T,
            levels=bounds,
            cmap="viridis",
            extend="neither",
        )
        ax.plot(0, 0, "w*", ms=10)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("α (filter-normalized)")
        ax.set_ylabel("β")
    from matplotlib.ticker import MaxNLocator

    fig.colorbar(contour, ax=list(axes[0]), label="loss", ticks=MaxNLocator(nbins=6))
    if path is not None:
        save(fig, path)
    return fig


def weight_histograms(
    weights: Mapping[str, np.ndarray], path: str | Path | None = None, *, bins: int = 80
):
    """Histograms of weight values per model (log counts), with the exact-zero count noted.

    Example:
      >>> weights = {"L2": np.random.default_rng(0).normal(size=1000),
      ...            "L1 (proximal)": np.r_[np.zeros(600), np.ones(400)]}
      >>> fig = weight_histograms(weights)
      >>> [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
      ['L2 (0.0% exactly 0)', 'L1 (proximal) (60.0% exactly 0)']
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for index, (name, values) in enumerate(weights.items()):
        values = np.asarray(values).ravel()
        zeros = np.mean(values == 0)
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            lw=1.5,
            color=f"C{index}",
            label=f"{name} ({100 * zeros:.1f}% exactly 0)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def _log_axis(ax, values: np.ndarray) -> None:
    """A log x axis labelled at the grid's ends and middle when it spans under two decades
    (matplotlib would label crowded minor ticks), else at its decades."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if values.max() / values.min() < 100:
        ticks = np.unique(values[[0, len(values) // 2, -1]])
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    else:
        ax.xaxis.set_major_locator(LogLocator(numticks=5))


def _path_abscissa(values: np.ndarray, parameter: str) -> tuple[np.ndarray, str]:
    """Decays and momenta (every value in [0.5, 1)) crowd at 1 on any axis of the value:
    draw them against ``1 − value``, whose log axis spreads 0.9, 0.99, 0.999 evenly."""
    if values.size > 1 and np.all((values >= 0.5) & (values < 1)):
        return 1 - values, f"1 − {parameter} (decay)"
    return values, parameter


def regularization_paths(
    paths: Mapping[str, Mapping[str, Any]],
    path: str | Path | None = None,
    *,
    columns: int = 4,
):
    """Validation (solid) and test (dashed) accuracy against each regularizer's strength.

    Args:
      paths: row name -> ``{"parameter", "values", "val_mean", "val_sd",
        "test_mean", "test_sd", "chosen"}`` (accuracies in [0, 1]).
      path: where to save the PNG.
      columns: panels per line.

    Returns:
      The matplotlib ``Figure``.
    """
    plt = pyplot()
    count = max(1, len(paths))
    lines = -(-count // columns)
    fig, axes = plt.subplots(
        lines,
        min(columns, count),
        figsize=(3.2 * min(columns, count), 2.7 * lines),
        squeeze=False,
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    for ax, (name, data) in zip(axes.flat, paths.items(), strict=False):
        values = np.asarray(data["values"], np.float64)
        x, xlabel = _path_abscissa(values, data["parameter"])
        for split, style, color in (("val", "-", "C0"), ("test", "--", "C1")):
            mean = 100 * np.asarray(data[f"{split}_mean"])
            sd = 100 * np.asarray(data[f"{split}_sd"])
            label = "validation" if split == "val" else "test"
            ax.plot(x, mean, style, color=color, marker="o", ms=3, label=label)
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
        best = int(np.argmin(np.abs(values - data["chosen"])))
        ax.plot(x[best], 100 * data["val_mean"][best], "k*", ms=10, label="chosen")
        if np.all(x > 0):
            _log_axis(ax, x)
        if x is not values:
            ax.invert_xaxis()  # a larger decay still lies to the right
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel(xlabel, fontsize="small")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("accuracy (%)")
    axes.flat[0].legend(fontsize="x-small")
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def _colorbar_axes(fig) -> set:
    return {
        image.colorbar.ax
        for ax in fig.axes
        for image in (*ax.collections, *ax.images)
        if getattr(image, "colorbar", None) is not None
    }


def _outside(text, renderer, frame) -> bool:
    """A non-empty text whose rendered box runs past the figure's left or right edge."""
    box = text.get_window_extent(renderer)
    return bool(text.get_text()) and (box.x0 < frame.x0 - 1 or box.x1 > frame.x1 + 1)


def _categorical(axis) -> bool:
    """Tick labels that are names (e.g. one bar per row) label the axis themselves."""
    texts = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    return bool(texts) and all(any(c.isalpha() for c in t) for t in texts)


def _overlapping(extents: list) -> bool:
    ordered = sorted(extents, key=lambda box: (box.x0, box.y0))
    return any(a.overlaps(b) for a, b in itertools.pairwise(ordered))


def _tick_problems(ax, renderer, where: str) -> list[str]:
    problems = []
    for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
        if _overlapping([t.get_window_extent(renderer) for t in labels]):
            problems.append(f"{where}: {name} tick labels overlap")
    return problems


def _legend_problems(ax, where: str) -> list[str]:
    import matplotlib.colors as mcolors

    legend = ax.get_legend()
    if legend is None:
        return []
    problems = []
    artists = {a.get_label(): a for a in (*ax.lines, *ax.patches, *ax.collections)}
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=False):
        artist = artists.get(text.get_text())
        if artist is None or handle is None:
            continue
        colour = "get_color" if hasattr(handle, "get_color") else "get_facecolor"
        mine = np.atleast_2d(mcolors.to_rgba_array(getattr(handle, colour)()))[0]
        theirs = np.atleast_2d(mcolors.to_rgba_array(getattr(artist, colour)()))[0]
        if not np.allclose(mine, theirs, atol=0.02):
            problems.append(f"{where}: legend entry {text.get_text()!r} has another colour")
    return problems


def figure_problems(fig) -> list[str]:
    """What a reviewer would flag in a rendered figure, read from its matplotlib objects:
    a title or label outside the figure, overlapping tick labels, an axes without axis
    labels (a row of panels may share its first panel's y label), a legend entry whose
    colour differs from the artist it names.

    Example:
      >>> plt = pyplot()
      >>> fig, ax = plt.subplots(figsize=(2, 2))
      >>> _ = ax.plot([0, 1], label="a"); _ = ax.set_title("a very long title " * 4)
      >>> figure_problems(fig)  # doctest: +NORMALIZE_WHITESPACE
      ["panel 1: title 'a very long title a very long title ...' runs outside the figure",
       'panel 1: no x label', 'panel 1: no y label']
      >>> plt.close(fig)
    """
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    frame = fig.bbox
    problems = []
    colorbars = _colorbar_axes(fig)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax not in colorbars]
    rows_with_ylabel = {
        ax.get_subplotspec().rowspan.start
        for ax in panels
        if ax.get_ylabel() and ax.get_subplotspec() is not None
    }
    for index, ax in enumerate(panels, start=1):
        where = f"panel {index}"
        for kind, text in (("title", ax.title), ("x label", ax.xaxis.label),
                           ("y label", ax.yaxis.label)):  # fmt: skip
            if _outside(text, renderer, frame):
                shown = text.get_text()[:36] + ("..." if len(text.get_text()) > 36 else "")
                problems.append(f"{where}: {kind} {shown!r} runs outside the figure")
        if not ax.get_xlabel() and not _categorical(ax.xaxis):
            problems.append(f"{where}: no x label")
        spec = ax.get_subplotspec()
        shared = spec is not None and spec.rowspan.start in rows_with_ylabel
        if not ax.get_ylabel() and not shared and not _categorical(ax.yaxis):
            problems.append(f"{where}: no y label")
        problems += _tick_problems(ax, renderer, where) + _legend_problems(ax, where)
    titles = [t for t in fig.get_children() if t is not None and hasattr(t, "get_text")]
    for text in titles:
        if _outside(text, renderer, frame):
            problems.append(f"the figure's text {text.get_text()[:36]!r} runs outside the figure")
    return problems
