"""The pre-registered configurations: every experiment's claim and configuration, and the
study's rows and grids, frozen in ``experiments/preregistration.json``.

A test fails when a script's claim or configuration differs from the frozen file, so a
change is a visible edit of that file, and ``experiments/CHANGELOG.md`` says why (and
whether a result had been seen). ``python -m experiments.preregistration`` rewrites the
file from the scripts — run it only together with a CHANGELOG entry.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

FILE = Path(__file__).with_name("preregistration.json")
CONSTANTS = ("FULL", "QUICK", "SEEDS", "DISTANCE_BOUND", "ARMS", "VARIANTS", "BATCH_SIZES")


def _plain(value: Any) -> Any:
    """JSON-ready: dict keys kept, tuples as lists, callables by name, numbers as floats."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _experiment(name: str) -> dict[str, Any]:
    module = importlib.import_module(f"experiments.{name}")
    entry = {"claim": module.CLAIM}
    for constant in CONSTANTS:
        if hasattr(module, constant):
            value = getattr(module, constant)
            entry[constant.lower()] = sorted(value) if constant == "ARMS" else _plain(value)
    return entry


def _study() -> dict[str, Any]:
    from experiments import tour
    from experiments.study import StudyConfig, default_rows, extended_rows

    rows = {
        row.key: {
            "name": row.name,
            "search": _plain(row.search),
            "epoch_factor": row.epoch_factor,
            "reference": row.reference,
            "chosen_by": "validation" if row.evidence is None else _plain(row.evidence),
            "predictive": _plain(row.predictive) if row.predictive else None,
            "derived_from": row.derived_from,
            "ensemble_members": row.ensemble_members,
            "bootstrap": row.bootstrap,
        }
        for row in default_rows() + extended_rows()
    }
    return {
        "full": dataclasses.asdict(StudyConfig()),
        "quick": dataclasses.asdict(StudyConfig.quick()),
        "rows": rows,
        "wide_retune": _plain(tour.WIDE_RETUNE),
    }


def current() -> dict[str, Any]:
    """The configurations the scripts hold now.

    Example:
      >>> sorted(current())[:3]
      ['augmentation', 'batch_size', 'bias_variance']
    """
    from experiments.__main__ import EXPERIMENTS

    return {**{name: _experiment(name) for name in EXPERIMENTS}, "tour": _study()}


def main() -> None:
    FILE.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {FILE}; add the reason to experiments/CHANGELOG.md")


if __name__ == "__main__":
    main()
