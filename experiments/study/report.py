"""Statistics, the results table and the report's sentences, all computed from the numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxreg.stats import confidence_interval, finite, holm, paired_difference

__all__ = [
    "ALPHA",
    "compare_to_baseline",
    "compare_to_references",
    "confidence_interval",
    "format_chosen",
    "format_comparisons",
    "format_table",
    "paired_difference",
    "sentences",
]

ALPHA = 0.05  # family-wise error rate of the table's marks (Holm over every comparison)


def compare_to_references(
    per_seed_test: Mapping[str, Sequence[float]], references: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Each row's paired test-accuracy difference to its own reference row, Holm-marked.

    ``references`` maps a row to the row it is compared with (rows absent from it, such
    as the baseline, are not compared). Each difference is
    :func:`jaxreg.stats.paired_difference` ``(row, reference)`` over the shared seeds,
    with ``reference`` (the row's name) recorded; ``p_holm`` is Holm's adjusted p-value
    over all the comparisons and ``significant`` is ``p_holm < ALPHA``.

    Example:
      >>> per_seed = {"baseline": [0.60, 0.61, 0.59], "tuned": [0.66, 0.66, 0.65],
      ...             "small batch": [0.67, 0.66, 0.66]}
      >>> differences = compare_to_references(
      ...     per_seed, {"tuned": "baseline", "small batch": "tuned"})
      >>> d = differences["small batch"]
      >>> d["reference"], round(d["mean"], 3)  # against the tuned baseline, not the baseline
      ('tuned', 0.007)
    """
    unknown = sorted({ref for ref in references.values() if ref not in per_seed_test})
    if unknown:
        raise ValueError(f"references name rows that are not in per_seed_test: {unknown}")
    differences = {
        name: {
            **paired_difference(per_seed_test[name], per_seed_test[reference]),
            "reference": reference,
        }
        for name, reference in references.items()
    }
    adjusted = holm([d["p_value"] for d in differences.values()])
    for difference, p_holm in zip(differences.values(), adjusted, strict=True):
        difference["p_holm"] = float(p_holm)
        difference["significant"] = bool(np.isfinite(p_holm) and p_holm < ALPHA)
    return differences


def compare_to_baseline(
    per_seed_test: Mapping[str, Sequence[float]], baseline: str
) -> dict[str, dict[str, Any]]:
    """Every row's paired test-accuracy difference to ``baseline``, marked with Holm's correction.

    Each difference is :func:`jaxreg.stats.paired_difference` ``(row, baseline)`` over the
    shared seeds (its ``low``/``high`` are the unadjusted 95% interval); ``p_holm`` is
    Holm's adjusted p-value over all the rows' comparisons and ``significant`` is
    ``p_holm < ALPHA``: with 25 rows, a row's own interval excluding 0 is not enough.

    Example:
      >>> differences = compare_to_baseline(
      ...     {"baseline": [0.60, 0.61, 0.59], "a": [0.70, 0.71, 0.70], "b": [0.61, 0.63, 0.60]},
      ...     "baseline")
      >>> {name: (round(d["mean"], 3), d["significant"]) for name, d in differences.items()}
      {'a': (0.103, True), 'b': (0.013, False)}
    """
    return compare_to_references(
        per_seed_test, {name: baseline for name in per_seed_test if name != baseline}
    )


def _pct(ci: Mapping[str, float], digits: int = 1) -> str:
    if not finite(ci["mean"]):
        return "—"
    if not finite(ci.get("half_width")):
        return f"{100 * ci['mean']:.{digits}f}"
    return f"{100 * ci['mean']:.{digits}f} ± {100 * ci['half_width']:.{digits}f}"


def _chosen(chosen: Mapping[str, float], by: str = "validation") -> str:
    if not chosen:
        return "—"
    values = ", ".join(f"{k} {v:.3g}" for k, v in chosen.items())
    return values if by == "validation" else f"{values} (by {by})"


def format_chosen(chosen: Mapping[str, float]) -> str:
    """Chosen values as the table writes them.

    Example:
      >>> format_chosen({"l2_strength": 0.004641588})
      'l2_strength 0.00464'
    """
    return _chosen(chosen)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: chosen strengths, accuracies (mean ± 95% CI), the paired difference
    to the baseline with its 95% interval (``*``: the difference's ``significant`` flag,
    Holm-corrected in :func:`compare_to_baseline`) and the measurements.

    Example:
      >>> metrics = ("train_accuracy", "val_accuracy", "test_accuracy", "gap", "test_nll", "ece",
      ...            "lambda_max")
      >>> def row(name, test, chosen):
      ...     values = {m: confidence_interval([1.0, 1.0, 1.0]) for m in metrics}
      ...     values["test_accuracy"] = confidence_interval(test)
      ...     values["gap"] = confidence_interval([1 - t for t in test])
      ...     difference = paired_difference(test, [0.59, 0.60, 0.61]) if chosen else None
      ...     return {**values, "name": name, "chosen": chosen, "difference": difference,
      ...             "zero_fraction": 0.0, "num_params": 15210}
      >>> rows = [row("baseline", [0.59, 0.60, 0.61], {}),
      ...         row("dropout", [0.64, 0.66, 0.65], {"dropout_rate": 0.135})]
      >>> table = format_table(rows).splitlines()
      >>> table[0].split(" | ")[4:6]
      ['test acc (%)', 'Δ test vs reference (pp)']
      >>> table[3].split(" | ")[4:6]  # ± 95% CI; * marks the difference's significant flag
      ['65.0 ± 2.5', '+5.0 [+2.5, +7.5] *']
    """
    lines = [
        "| row | chosen on validation (unless noted) | train acc (%) | val acc (%) | "
        "test acc (%) | Δ test vs reference (pp) | gap (pp) | test NLL | ECE | λmax | "
        "exact zeros | params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        diff = row.get("difference")
        if diff is None:
            delta = "—"
        else:
            delta = (
                f"{100 * diff['mean']:+.1f} [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]"
            )
            delta += " *" if diff["significant"] else ""
            if diff.get("reference", "baseline") != "baseline":
                delta += f" vs {diff['reference']}"
        lam = row["lambda_max"]
        lam_text = "—" if not finite(lam["mean"]) else f"{lam['mean']:.2f}"
        chosen = _chosen(row["chosen"], row.get("chosen_by", "validation"))
        lines.append(
            f"| {row['name']} | {chosen} | {_pct(row['train_accuracy'])} | "
            f"{_pct(row['val_accuracy'])} | {_pct(row['test_accuracy'])} | {delta} | "
            f"{100 * row['gap']['mean']:.1f} | {row['test_nll']['mean']:.3f} | "
            f"{row['ece']['mean']:.3f} | {lam_text} | {100 * row['zero_fraction']:.1f}% | "
            f"{row['num_params']:,} |"
        )
    return "\n".join(lines)


def _signed(test: Mapping[str, Any], scale: float, digits: int) -> str:
    text = (
        f"{scale * test['mean']:+.{digits}f} "
        f"[{scale * test['low']:+.{digits}f}, {scale * test['high']:+.{digits}f}]"
    )
    return text + (" *" if test["significant"] else "")


def format_comparisons(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of paired differences in test accuracy (points), NLL and ECE, each
    with its 95% interval (``*``: Holm-significant over the table's comparisons).

    Example:
      >>> test = {"mean": -0.004, "low": -0.01, "high": 0.002, "significant": False}
      >>> nll = {"mean": -0.52, "low": -0.60, "high": -0.44, "significant": True}
      >>> line = format_comparisons([{"row": "Laplace", "compared_with": "baseline",
      ...                             "test": test, "test_nll": nll, "ece": nll}])
      >>> line.splitlines()[2].split(" | ")[2:4]
      ['-0.4 [-1.0, +0.2]', '-0.520 [-0.600, -0.440] *']
    """
    lines = [
        "| row | compared with | Δ test acc (pp) | Δ test NLL | Δ ECE |",
        "|---|---|---:|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c['row']} | {c['compared_with']} | {_signed(c['test'], 100, 1)} | "
            f"{_signed(c['test_nll'], 1, 3)} | {_signed(c['ece'], 1, 3)} |"
        )
    return "\n".join(lines)


def sentences(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per row, each worded from its own numbers and interval.

    Example:
      >>> metrics = ("train_accuracy", "val_accuracy", "test_accuracy", "gap", "test_nll", "ece",
      ...            "lambda_max")
      >>> def row(name, test, chosen):
      ...     values = {m: confidence_interval([1.0, 1.0, 1.0]) for m in metrics}
      ...     values["test_accuracy"] = confidence_interval(test)
      ...     values["gap"] = confidence_interval([1 - t for t in test])
      ...     difference = paired_difference(test, [0.59, 0.60, 0.61]) if chosen else None
      ...     return {**values, "name": name, "chosen": chosen, "difference": difference,
      ...             "zero_fraction": 0.0, "num_params": 15210}
      >>> rows = [row("baseline", [0.59, 0.60, 0.61], {}),
      ...         row("dropout", [0.64, 0.66, 0.65], {"dropout_rate": 0.135})]
      >>> import textwrap
      >>> for line in sentences({r["name"]: r for r in rows}):
      ...     print(textwrap.fill(line, 80))
      - **baseline**: the MLP reaches 100.0% on its training data but 60.0% on test, a
      40-point gap: the overfitting the study starts from.
      - **dropout** raises test accuracy by 5.0 points; gap 35 pp (chosen on
      validation: dropout_rate 0.135).
    """
    base = rows["baseline"]
    lines = [
        f"- **baseline**: the MLP reaches {100 * base['train_accuracy']['mean']:.1f}% on its "
        f"training data but {100 * base['test_accuracy']['mean']:.1f}% on test, a "
        f"{100 * base['gap']['mean']:.0f}-point gap: the overfitting the study starts from."
    ]
    for name, row in rows.items():
        if name == "baseline":
            continue
        diff = row["difference"]
        direction = "raises" if diff["mean"] > 0 else "lowers"
        reference = diff.get("reference", "baseline")
        accuracy = "test accuracy" + ("" if reference == "baseline" else f" against {reference}")
        if diff["significant"]:
            verdict = f"{direction} {accuracy} by {100 * abs(diff['mean']):.1f} points"
        elif finite(diff["half_width"]):
            verdict = (
                f"changes {accuracy} by {100 * diff['mean']:+.1f} points, not distinguishable "
                f"from 0 over {diff['n']} seeds after Holm's correction"
            )
        else:
            verdict = f"changes {accuracy} by {100 * diff['mean']:+.1f} points (one seed)"
        extras = []
        by = row.get("chosen_by", "validation")
        if row["chosen"]:
            extras.append(f"chosen {'on' if by == 'validation' else 'by'} {by}: "
                          f"{_chosen(row['chosen'])}")  # fmt: skip
        if row["zero_fraction"] > 0.001:
            extras.append(f"{100 * row['zero_fraction']:.1f}% of the weights exactly zero")
        if name == "label smoothing":
            extras.append(f"ECE {base['ece']['mean']:.3f} → {row['ece']['mean']:.3f}")
        if row.get("note"):
            extras.append(row["note"])
        extra = f" ({'; '.join(extras)})" if extras else ""
        lines.append(f"- **{name}** {verdict}; gap {100 * row['gap']['mean']:.0f} pp{extra}.")
    return lines
