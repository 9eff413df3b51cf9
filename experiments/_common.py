"""Shared plumbing for the experiment scripts: output folder, verdict line, JSON result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for JSON and figure")
    return parser.parse_args()


def report(name: str, claim: str, evidence: dict[str, Any], passed: bool, out: Path) -> int:
    """Print the claim, the evidence and PASS/FAIL; write ``out/name.json``; return an exit code."""
    out.mkdir(parents=True, exist_ok=True)
    verdict = "PASS" if passed else "FAIL"
    print(f"claim: {claim}")
    for key, value in evidence.items():
        print(f"  {key}: {value}")
    print(f"{verdict}: {name}")
    result = {"name": name, "claim": claim, "evidence": evidence, "verdict": verdict}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    return 0 if passed else 1
