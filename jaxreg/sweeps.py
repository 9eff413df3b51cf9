"""Hyperparameter sweeps as one compiled, vmapped program: chunked, sharded, resumable.

``run(train_fn, configs, key=..., seeds=S)`` calls ``train_fn(config, key)`` for
every config × seed under ``jax.vmap`` and ``jax.jit`` — one compile for the
whole sweep, since hyperparameters are traced values. ``chunk_size`` bounds
peak memory (chunks go through the same compiled function; the last one is
padded); ``mesh`` shards the member axis over devices; ``out_dir`` writes each
finished chunk at once (atomically, ``.npz`` with a checksum, no pickle) so an
interrupted sweep resumes where it stopped and ends with the same result.

Multi-process (several hosts, or several processes on one): call
``jax.distributed.initialize()`` in every process first, then run the same
``run`` call everywhere with a mesh over ``jax.devices()`` (all processes'
devices, e.g. ``mesh="auto"``). Each process feeds its own devices' slice of
every chunk; every process gets the whole result; with ``out_dir`` (a folder
all processes see) only process 0 writes, and all processes agree on which
chunks to resume. Tested with two local processes (CPU collectives over gloo)
and with eight simulated CPU devices in one process.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxreg.io import atomic_savez
from jaxreg.masks import leaf_path

__all__ = ["Choice", "LogUniform", "SweepResult", "Uniform", "grid", "random", "run"]

Configs = dict[str, np.ndarray]


def grid(**axes: Sequence[Any]) -> Configs:
    """Cartesian product of the given values: a dict of arrays with leading axis ``N``.

    Example:
      >>> configs = grid(lr=[1e-3, 1e-2], wd=[0.0, 1e-4, 1e-3])
      >>> configs["lr"].shape, configs["wd"][:3].tolist()
      ((6,), [0.0, 0.0001, 0.001])
    """
    if not axes:
        raise ValueError("grid needs at least one axis")
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"axis {name!r} has no values")
    names = list(axes)
    product = list(itertools.product(*(axes[n] for n in names)))
    return {n: np.asarray([p[i] for p in product]) for i, n in enumerate(names)}


@dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high)``.

    Example:
      >>> configs = random(jax.random.key(0), 100, dropout_rate=Uniform(0.0, 0.5))
      >>> bool((configs["dropout_rate"] >= 0).all() and (configs["dropout_rate"] < 0.5).all())
      True
    """

    low: float
    high: float


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on ``[low, high)`` (``low > 0``).

    Example:
      >>> lr = random(jax.random.key(0), 1000, lr=LogUniform(1e-4, 1e-2))["lr"]
      >>> bool((lr >= 1e-4).all() and (lr < 1e-2).all()), round(float(np.median(np.log10(lr))))
      (True, -3)
    """

    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    """Uniform choice among ``values``.

    Example:
      >>> configs = random(jax.random.key(0), 50, batch_norm=Choice([0.0, 1.0]))
      >>> sorted(set(configs["batch_norm"].tolist()))
      [0.0, 1.0]
    """

    values: Sequence[Any]


def random(key: jax.Array, n: int, **distributions: Uniform | LogUniform | Choice) -> Configs:
    """``n`` random configs, each hyperparameter drawn independently from its distribution.

    Example:
      >>> configs = random(jax.random.key(0), 4, lr=LogUniform(1e-4, 1e-1), depth=Choice([2, 3]))
      >>> configs["lr"].shape, set(configs["depth"].tolist()) <= {2, 3}
      ((4,), True)
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    out = {}
    for index, (name, dist) in enumerate(distributions.items()):
        k = jax.random.fold_in(key, index)
        if isinstance(dist, Uniform):
            out[name] = np.asarray(jax.random.uniform(k, (n,), minval=dist.low, maxval=dist.high))
        elif isinstance(dist, LogUniform):
            if dist.low <= 0:
                raise ValueError(f"LogUniform for {name!r} needs low > 0, got {dist.low}")
            logs = jax.random.uniform(k, (n,), minval=np.log(dist.low), maxval=np.log(dist.high))
            out[name] = np.exp(np.asarray(logs))
        elif isinstance(dist, Choice):
            values = np.asarray(dist.values)
            out[name] = values[np.asarray(jax.random.randint(k, (n,), 0, len(values)))]
        else:
            raise TypeError(f"distribution for {name!r} must be Uniform, LogUniform or Choice")
    return out


class _ReadTracker(dict):
    """A config dict that records which keys ``train_fn`` looks up (at trace time).

    Iterating over it counts as reading every key, so a ``train_fn`` that
    forwards the whole config (``**config``) is never flagged.
    """

    def __init__(self, values: Mapping[str, Any], read: set[str]):
        super().__init__(values)
        self._read = read

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
    """The set of keys a tracker recorded, compared by identity (a hashable pytree aux)."""

    def __init__(self, names: set[str]):
        self.names = names


def _flatten_tracker(tracker: _ReadTracker):
    # Flattening is not reading: jit passes the tracker on as an argument unchanged.
    keys = tuple(sorted(dict.keys(tracker)))
    children = [(jax.tree_util.DictKey(k), dict.__getitem__(tracker, k)) for k in keys]
    return children, (keys, _ReadLog(tracker._read))


def _unflatten_tracker(aux, children) -> _ReadTracker:
    keys, log = aux
    return _ReadTracker(dict(zip(keys, children, strict=True)), log.names)


# A tracker crosses jax.jit inside train_fn (fit's compiled chunks) and keeps recording there.
jax.tree_util.register_pytree_with_keys(_ReadTracker, _flatten_tracker, _unflatten_tracker)


def _check_configs(configs: Mapping[str, Any]) -> tuple[Configs, int]:
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError("configs must be a non-empty dict of arrays with a leading axis")
    arrays = {k: np.asarray(v) for k, v in configs.items()}
    for name, values in arrays.items():
        if values.dtype.kind not in "biuf":
            raise TypeError(
                f"configs[{name!r}] holds {values.dtype} values; a sweep axis must be numeric "
                "(bool, int or float) because it is traced. Sweep an index into your choices "
                "instead, e.g. grid(optimizer_index=[0, 1]) and OPTIMIZERS[...] outside the trace "
                "(or one sweep per choice)"
            )
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"configs must share one leading length, got {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("configs are empty")
    return arrays, n


@dataclass
class SweepResult:
    """Results of :func:`run`, one row per member (config × seed, config-major).

    Attributes:
      metrics: pytree returned by ``train_fn``, leading axis ``N·S``.
      configs: the configs repeated per seed, leading axis ``N·S``.
      config_index: which config each member ran, ``(N·S,)``.
      seed: which seed each member ran, ``(N·S,)``.
      failed: members with any non-finite metric, ``(N·S,)``.

    Example:
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


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_chunk(path: Path, num_leaves: int) -> list[np.ndarray] | None:
    """A chunk's leaves if the file is complete and its checksum matches, else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            leaves = {f"leaf_{i}": f[f"leaf_{i}"] for i in range(num_leaves)}
            stored = str(f["digest"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # missing, truncated or foreign: recompute, never trust
    if stored != _digest(leaves):
        return None
    return [leaves[f"leaf_{i}"] for i in range(num_leaves)]


def _place(tree: chex.ArrayTree, sharding: NamedSharding | None) -> chex.ArrayTree:
    """Put a chunk on the mesh; across processes each one supplies its own devices' slices."""
    if sharding is None:
        return jax.tree.map(jnp.asarray, tree)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def global_array(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))
            # Key arrays travel as their raw data (the member axis leads; the rest is replicated).
            array = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
            return jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(global_array, tree)


def _gather(leaf: jax.Array) -> np.ndarray:
    """A chunk output as a host array on every process (an all-gather across processes)."""
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(leaf)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def _stored_chunks(
    out: Path | None, num_chunks: int, num_leaves: int
) -> dict[int, list[np.ndarray] | None]:
    """Complete chunks on disk, decided by process 0 so that every process resumes alike:
    chunk index -> its leaves (process 0, already read) or None (other processes read it)."""
    loaded: dict[int, list[np.ndarray]] = {}
    if out is not None and jax.process_index() == 0:
        for c in range(num_chunks):
            path = out / f"chunk_{c:05d}.npz"
            leaves = _load_chunk(path, num_leaves) if path.exists() else None
            if leaves is not None:
                loaded[c] = leaves
    if jax.process_count() == 1:
        return loaded
    from jax.experimental import multihost_utils

    flags = np.zeros(num_chunks, bool)
    flags[list(loaded)] = True
    flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
    return {int(c): loaded.get(int(c)) for c in np.flatnonzero(flags)}


_COMPILED: dict[tuple[Any, ...], tuple[Callable, set[str]]] = {}
_COMPILED_LIMIT = 8


def _check_fixed(fixed: Mapping[str, Any] | None, swept: Mapping[str, Any]) -> dict[str, Any]:
    """``fixed`` as a dict of concrete scalars that no swept key repeats."""
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a mapping of names to scalars, got {type(fixed).__name__}")
    for name, value in fixed.items():
        if not isinstance(name, str):
            raise TypeError(f"fixed keys must be str, got {name!r}")
        if isinstance(value, str | bool) or np.ndim(value) != 0:
            raise ValueError(f"fixed[{name!r}] must be a number, got {value!r}")
    both = sorted(set(fixed) & set(swept))
    if both:
        raise ValueError(f"fixed and configs both set {both}: give each key in one of them")
    return dict(fixed)


def _compiled_for(
    train_fn: Callable,
    names: tuple[str, ...],
    options: tuple[tuple[str, Any], ...] = (),
    fixed: tuple[tuple[str, Any], ...] = (),
) -> tuple[Callable, set[str]]:
    """The jitted, vmapped ``train_fn`` and the config keys it read when traced.

    Kept for the last few ``(train_fn, config keys)`` pairs, so a second
    :func:`run` with the same function and chunk shapes (e.g. the chosen
    config on more seeds after a tuning sweep) reuses the compiled program.
    """
    cache_key = (train_fn, names, options, fixed)
    if cache_key in _COMPILED:
        _COMPILED[cache_key] = _COMPILED.pop(cache_key)  # most recently used last
        return _COMPILED[cache_key]
    read: set[str] = set()

    def tracked_fn(config, member_key):
        # Fixed values join each member's config as Python numbers: constants, not traced.
        return train_fn(_ReadTracker({**dict(fixed), **config}, read), member_key)

    compiled = jax.jit(jax.vmap(tracked_fn), compiler_options=dict(options) or None)
    _COMPILED[cache_key] = (compiled, read)
    while len(_COMPILED) > _COMPILED_LIMIT:
        _COMPILED.pop(next(iter(_COMPILED)))
    return _COMPILED[cache_key]


def run(
    train_fn: Callable[[Mapping[str, jax.Array], jax.Array], chex.ArrayTree],
    configs: Mapping[str, Any],
    *,
    key: jax.Array,
    seeds: int = 1,
    chunk_size: int | None = None,
    mesh: Mesh | Literal["auto"] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    allow_unused: bool = False,
    compiler_options: Mapping[str, Any] | None = None,
    fixed: Mapping[str, float] | None = None,
) -> SweepResult:
    """Run ``train_fn(config, key)`` for every config × seed, vmapped and compiled once.

    Args:
      train_fn: ``(config, key) -> metrics pytree``; ``config`` is a dict of
        scalars (traced), ``key`` a PRNG key. Must be jit/vmap-able.
      configs: dict of arrays with a shared leading axis ``N`` (see :func:`grid`).
      key: PRNG key; seed ``s`` uses ``split(key, seeds)[s]`` for every config
        (common random numbers: configs are compared on the same seeds).
      seeds: seeds per config; members are ordered config-major.
      chunk_size: members per compiled call (memory bound); default all. A later
        ``run`` with the same ``train_fn``, config keys and chunk size reuses
        the compiled program (no new compile).
      mesh: a ``jax.sharding.Mesh`` whose first axis shards the members (use
        ``AxisType.Auto`` axes, so XLA places everything inside ``train_fn``), or
        ``"auto"`` for all devices; chunks are padded to a multiple of it.
      out_dir: folder for resumable results (see module docstring).
      progress: a progress bar over chunks.
      allow_unused: accept config keys that ``train_fn`` never reads. By
        default such a key (usually a typo) raises ``ValueError``: its members
        would silently be duplicates of each other.
      fixed: values every member shares (``{"learning_rate": 1e-3}``), merged into each
        ``config`` as Python numbers (compile-time constants, not traced). Like a swept
        key, a fixed key that ``train_fn`` never reads raises ``ValueError``.
      compiler_options: XLA compile options for the sweep's program (``jax.jit``'s
        ``compiler_options``), e.g. ``{"xla_backend_optimization_level": 0}``:
        on CPU it compiles a training loop faster and runs it about twice as slowly
        (measured on the study's rows: a gain only where compiling dominates).

    Returns:
      :class:`SweepResult`.

    Example:
      >>> def train_fn(config, key):
      ...     return {"loss": (config["x"] - 1.0) ** 2 + 0.01 * jax.random.normal(key)}
      >>> result = run(train_fn, grid(x=[0.0, 1.0, 2.0]), key=jax.random.key(0), seeds=2,
      ...              progress=False)
      >>> result.metrics["loss"].shape, result.best("loss", "min")["x"]
      ((6,), 1.0)
    """
    arrays, n = _check_configs(configs)
    fixed = _check_fixed(fixed, arrays)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, got {seeds!r}")
    members = n * seeds
    if chunk_size is None:
        chunk_size = members
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if mesh == "auto":
        mesh = jax.make_mesh(
            (jax.device_count(),), ("members",), axis_types=(jax.sharding.AxisType.Auto,)
        )
    # Every chunk must split evenly over the devices of the member axis.
    multiple = 1 if mesh is None else mesh.devices.shape[0]
    chunk_size = -(-min(chunk_size, members) // multiple) * multiple

    config_index = np.repeat(np.arange(n), seeds)
    seed_index = np.tile(np.arange(seeds), n)
    member_configs = {k: v[config_index] for k, v in arrays.items()}
    seed_keys = jax.random.split(key, seeds)
    member_keys = seed_keys[jnp.asarray(seed_index)]
    num_chunks = -(-members // chunk_size)

    def fingerprint():
        raw = {f"config_{k}": v for k, v in arrays.items()}
        raw["key"] = np.asarray(jax.random.key_data(key))
        raw["shape"] = np.asarray([n, seeds, chunk_size])
        raw.update({f"fixed_{k}": np.asarray(v) for k, v in fixed.items()})
        return _digest(raw)

    writer = jax.process_index() == 0  # one writer when several processes share out_dir
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        meta_path = out / "sweep.json"
        sweep_id = fingerprint()
        if writer:
            out.mkdir(parents=True, exist_ok=True)
        if meta_path.exists():
            stored = json.loads(meta_path.read_text()).get("fingerprint")
            if stored != sweep_id:
                raise ValueError(
                    f"out_dir {out} holds a different sweep (configs, seeds, key or chunk_size "
                    "differ); use another folder"
                )
        elif writer:
            meta_path.write_text(
                json.dumps({"fingerprint": sweep_id, "members": members, "chunk_size": chunk_size})
            )

    options = tuple(sorted((compiler_options or {}).items()))
    compiled, read = _compiled_for(
        train_fn, tuple(sorted(arrays)), options, tuple(sorted(fixed.items()))
    )
    index = np.arange(chunk_size).clip(max=members - 1)
    # Same shapes as every chunk, so this trace is the one the chunks reuse.
    shape_of = compiled.eval_shape(
        {k: jnp.asarray(v[index]) for k, v in member_configs.items()},
        member_keys[jnp.asarray(index)],
    )
    unused = sorted((set(arrays) | set(fixed)) - read)
    if unused and not allow_unused:
        raise ValueError(
            f"train_fn never reads the config key(s) {unused}: a typo? Members that differ only "
            f"there would be duplicates. Keys read: {sorted(read)} (allow_unused=True to accept)"
        )
    treedef = jax.tree.structure(shape_of)
    num_leaves = treedef.num_leaves
    sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_chunks, desc="sweep", unit="chunk", leave=False)
    stored_chunks = _stored_chunks(out, num_chunks, num_leaves)
    results: list[list[np.ndarray]] = []
    for c in range(num_chunks):
        start, stop = c * chunk_size, min((c + 1) * chunk_size, members)
        path = None if out is None else out / f"chunk_{c:05d}.npz"
        leaves = stored_chunks.get(c)
        if c in stored_chunks and leaves is None:  # another process found it complete
            leaves = _load_chunk(path, num_leaves)
        if leaves is None:
            index = np.arange(start, start + chunk_size).clip(max=members - 1)  # pad: repeat last
            chunk_configs = {k: np.asarray(v[index]) for k, v in member_configs.items()}
            chunk_keys = member_keys[jnp.asarray(index)]
            chunk_configs, chunk_keys = (
                _place(chunk_configs, sharding),
                _place(chunk_keys, sharding),
            )
            outputs = compiled(chunk_configs, chunk_keys)
            leaves = [_gather(leaf)[: stop - start] for leaf in jax.tree.leaves(outputs)]
            if path is not None and writer:
                named = {f"leaf_{i}": leaf for i, leaf in enumerate(leaves)}
                atomic_savez(path, {**named, "digest": np.asarray(_digest(named))})
        results.append(leaves)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    metrics = jax.tree.unflatten(
        treedef, [np.concatenate([r[i] for r in results]) for i in range(num_leaves)]
    )
    failed = np.zeros(members, bool)
    for leaf in jax.tree.leaves(metrics):
        if np.issubdtype(leaf.dtype, np.inexact):
            failed |= ~np.all(np.isfinite(leaf.reshape(members, -1)), axis=1)
    return SweepResult(metrics, member_configs, config_index, seed_index, failed)
