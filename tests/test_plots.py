"""Every figure jaxreg draws passes the checks a reviewer makes, read from matplotlib's
objects (titles inside the figure, labelled axes, tick labels apart, legends that match)."""

import jax
import numpy as np
import pytest

from jaxreg import plots
from jaxreg.metrics import ece, reliability_bins

ROWS = [
    "baseline", "weight decay", "L2 penalty", "L1 (proximal)", "elastic net (proximal)",
    "input noise", "1-D augmentation", "mixup", "label smoothing", "dropout",
    "early stopping", "bagged ensemble", "small batch (16)", "large batch (1000)", "SAM",
    "CNN1D (parameter sharing)", "max-norm", "SAM (one descent step per minibatch)",
    "best combination", "wide MLP + combination",
]  # fmt: skip


def _paths(rng):
    grids = {
        "1-D augmentation": [0.25, 0.5, 1.0, 1.15, 1.5, 2.0],
        "dropout": [0.05, 0.1, 0.135, 0.2, 0.3, 0.4],
        "max-norm": [1.0, 2.0, 3.0, 4.59, 6.0, 8.0],
        "weight decay": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        "mixup": [0.0, 0.2, 0.4, 0.8, 1.6, 3.2],
        "EMA of weights": [0.9, 0.97, 0.99, 0.997, 0.999, 0.9997],  # decays crowd near 1
    }
    paths = {}
    for name, values in grids.items():
        mean = rng.uniform(0.5, 0.7, len(values))
        paths[name] = {"parameter": "strength", "values": values, "val_mean": mean,
                       "val_sd": 0.02 + 0 * mean, "test_mean": mean, "test_sd": 0.02 + 0 * mean,
                       "chosen": values[2]}  # fmt: skip
    return paths


def _figures():
    rng = np.random.default_rng(0)
    history = {
        "train_accuracy": rng.uniform(size=(2, 10)),
        "eval_accuracy": rng.uniform(size=(2, 10)),
    }
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (500, 3)) * 3)
    labels = jax.random.randint(jax.random.key(1), (500,), 0, 3)
    bins = {**reliability_bins(probs, labels, num_bins=10), "ece": ece(probs, labels)}
    grid, alphas = np.linspace(-1, 5, 50), np.linspace(-1, 1, 9)
    bowl = alphas[:, None] ** 2 + alphas[None] ** 2
    return {
        "error bars, 20 rows": plots.error_bars(
            ROWS, rng.uniform(50, 97, len(ROWS)), rng.uniform(0.5, 4, len(ROWS)),
            ylabel="test accuracy (%)", title="Test accuracy per row, mean ± 95% CI over seeds",
            limits=(0, 100),
        ),
        "error bars, 3 rows": plots.error_bars(ROWS[:3], np.array([60.0, 62, 70]),
                                               np.array([1.0, 2, 1]), ylabel="accuracy (%)"),
        "learning curves": plots.learning_curves({"baseline": history, "dropout": history},
                                                 eval_name="validation"),
        "reliability": plots.reliability_diagram({"baseline": bins, "label smoothing": bins}),
        "spectral density": plots.spectral_density({"a": (grid, np.exp(-((grid - 1) ** 2)))}),
        "landscapes": plots.landscapes({"baseline": (alphas, alphas, 1.041 + bowl),
                                        "SAM": (alphas, alphas, 2.331 + 3 * bowl)}),
        "weights": plots.weight_histograms({"L2": rng.normal(size=1000),
                                            "L1": np.r_[np.zeros(600), rng.normal(size=400)]}),
        "paths": plots.regularization_paths(_paths(rng)),
    }  # fmt: skip


def test_every_figure_passes_the_reviewers_checks():
    problems = {name: plots.figure_problems(fig) for name, fig in _figures().items()}
    assert problems == {name: [] for name in problems}
    plots.pyplot().close("all")


def test_error_bars_clip_intervals_to_the_metrics_range():
    fig = plots.error_bars(ROWS, np.full(len(ROWS), 99.0), np.full(len(ROWS), 3.0),
                           ylabel="accuracy (%)", limits=(0, 100))  # fmt: skip
    (bars,) = [c for c in fig.axes[0].collections]  # the error-bar segments
    ends = np.concatenate([segment[:, 0] for segment in bars.get_segments()])
    assert ends.max() == pytest.approx(100.0) and ends.min() == pytest.approx(96.0)
    plots.pyplot().close(fig)


def test_the_checks_catch_each_defect():
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(2.0, 2.0))
    ax.plot([0, 1], label="line", color="C0")
    ax.set_title("a title far too long to fit in a two-inch-wide figure at all")
    ax.set_xticks(np.linspace(0, 1, 30), [f"{v:.4f}" for v in np.linspace(0, 1, 30)])
    ax.legend()
    ax.get_legend().legend_handles[0].set_color("C3")
    found = plots.figure_problems(fig)
    assert any("title" in p and "outside" in p for p in found)
    assert "panel 1: x tick labels overlap" in found
    assert "panel 1: no y label" in found
    assert "panel 1: legend entry 'line' has another colour" in found
    plt.close(fig)


def test_decays_near_one_are_drawn_against_one_minus_the_decay():
    fig = plots.regularization_paths(_paths(np.random.default_rng(0)))
    ema = next(ax for ax in fig.axes if ax.get_title() == "EMA of weights")
    assert ema.get_xlabel() == "1 − strength (decay)"
    x = ema.get_lines()[0].get_xdata()
    np.testing.assert_allclose(x, 1 - np.array([0.9, 0.97, 0.99, 0.997, 0.999, 0.9997]))
    assert ema.xaxis_inverted()  # a larger decay still lies to the right
    plots.pyplot().close(fig)


def test_learning_curves_name_the_held_out_split():
    history = {"train_accuracy": np.ones(3), "eval_accuracy": np.ones(3)}
    fig = plots.learning_curves({"baseline": history}, eval_name="validation")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "baseline (train)", "baseline (validation)",
    ]  # fmt: skip
    plots.pyplot().close(fig)
