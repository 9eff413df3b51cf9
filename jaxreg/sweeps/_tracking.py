"""Which config keys a ``train_fn`` reads: a mapping that records lookups at trace time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax


class ReadTracker(dict):
    """A config dict that records which keys ``train_fn`` looks up (at trace time).

    Iterating over it counts as reading every key, so a ``train_fn`` that
    forwards the whole config (``**config``) is never flagged. It is a pytree
    whose leaves are the swept values; the ``fixed`` values ride in its
    structure, so under ``jax.vmap(train_fn)`` they stay Python constants.
    """

    def __init__(
        self, values: Mapping[str, Any], read: set[str], fixed: Mapping[str, Any] | None = None
    ):
        super().__init__({**(fixed or {}), **values})
        self._read = read
        self._fixed = tuple(sorted((fixed or {}).items()))

    def __getitem__(self, name):
        self._read.add(name)
        return super().__getitem__(name)

    def get(self, name, default=None):
        self._read.add(name)
        return super().get(name, default)

    def __contains__(self, name):
        self._read.add(name)
        return super().__contains__(name)

    def _read_all(self):
        self._read.update(dict.keys(self))

    def __iter__(self):
        self._read_all()
        return super().__iter__()

    def keys(self):
        self._read_all()
        return super().keys()

    def items(self):
        self._read_all()
        return super().items()

    def values(self):
        self._read_all()
        return super().values()


class _ReadLog:
    """The set of keys a tracker records, compared by identity (a hashable pytree aux).

    Two trackers that record into the same set have equal structure, so ``jax.jit``
    reuses its trace for them.
    """

    def __init__(self, names: set[str]):
        self.names = names

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ReadLog) and other.names is self.names

    def __hash__(self) -> int:
        return id(self.names)


def _flatten_tracker(tracker: ReadTracker):
    # Flattening is not reading: jit passes the tracker on as an argument unchanged.
    fixed_names = {name for name, _ in tracker._fixed}
    keys = tuple(sorted(k for k in dict.keys(tracker) if k not in fixed_names))
    children = [(jax.tree_util.DictKey(k), dict.__getitem__(tracker, k)) for k in keys]
    return children, (keys, tracker._fixed, _ReadLog(tracker._read))


def _unflatten_tracker(aux, children) -> ReadTracker:
    keys, fixed, log = aux
    return ReadTracker(dict(zip(keys, children, strict=True)), log.names, dict(fixed))


# A tracker crosses jax.jit inside train_fn (fit's compiled chunks) and keeps recording there.
jax.tree_util.register_pytree_with_keys(ReadTracker, _flatten_tracker, _unflatten_tracker)
