"""A sweep's results on disk: one checksummed ``.npz`` per finished chunk, no pickle."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np


def digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_chunk(path: Path, num_leaves: int) -> list[np.ndarray] | None:
    """A chunk's leaves if the file is complete and its checksum matches, else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            leaves = {f"leaf_{i}": f[f"leaf_{i}"] for i in range(num_leaves)}
            stored = str(f["digest"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # missing, truncated or foreign: recompute, never trust
    if stored != digest(leaves):
        return None
    return [leaves[f"leaf_{i}"] for i in range(num_leaves)]


def stored_chunks(
    out: Path | None, num_chunks: int, num_leaves: int
) -> dict[int, list[np.ndarray] | None]:
    """Complete chunks on disk, decided by process 0 so that every process resumes alike:
    chunk index -> its leaves (process 0, already read) or None (other processes read it)."""
    loaded: dict[int, list[np.ndarray]] = {}
    if out is not None and jax.process_index() == 0:
        for c in range(num_chunks):
            path = out / f"chunk_{c:05d}.npz"
            leaves = load_chunk(path, num_leaves) if path.exists() else None
            if leaves is not None:
                loaded[c] = leaves
    if jax.process_count() == 1:
        return loaded
    from jax.experimental import multihost_utils

    flags = np.zeros(num_chunks, bool)
    flags[list(loaded)] = True
    flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
    return {int(c): loaded.get(int(c)) for c in np.flatnonzero(flags)}
