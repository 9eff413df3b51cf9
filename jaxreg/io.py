"""File writes for caches, resumable sweeps and research scripts: atomic, strict JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_savez", "json_safe", "write_json"]


def atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as ``.npz`` via a temporary file and ``os.replace``.

    A reader never sees a half-written file: it finds the old one, or none, or the new one.

    Example:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "arrays.npz"
      >>> atomic_savez(path, {"w": np.arange(3)})
      >>> np.load(path)["w"].tolist()
      [0, 1, 2]
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``.

    Python's ``json`` writes bare ``NaN``/``Infinity``, which is not JSON: other
    readers (``jq``, JavaScript, pandas' strict mode) reject the file. Mappings,
    lists, tuples, NumPy scalars and arrays are converted recursively.

    Example:
      >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2)})
      {'a': None, 'b': [1.0, None], 'c': 2.0}
    """
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` as strict JSON (non-finite floats as ``null``), indented.

    Example:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "result.json"
      >>> write_json(path, {"accuracy": np.float32(0.5), "loss": float("nan")})
      >>> json.loads(path.read_text())
      {'accuracy': 0.5, 'loss': None}
    """
    Path(path).write_text(json.dumps(json_safe(value), indent=2, allow_nan=False, default=float))
