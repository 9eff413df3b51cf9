"""Running a sweep: one jitted, vmapped ``train_fn`` over chunks of members."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxreg._checks import check_key, hparam_problems
from jaxreg.io import atomic_savez
from jaxreg.progress import progress_bar
from jaxreg.sweeps._placement import gather, place
from jaxreg.sweeps._store import digest, load_chunk, stored_chunks
from jaxreg.sweeps._tracking import ReadTracker
from jaxreg.sweeps.result import SweepResult
from jaxreg.sweeps.spaces import Configs, check_configs, check_fixed

__all__ = ["run"]


class _Compiled(NamedTuple):
    """``jax.jit(jax.vmap(train_fn))``, called with each chunk's configs in a :class:`ReadTracker`.

    ``train_fn`` itself is vmapped: the tracker is its config, a pytree whose
    fixed values are constants in its structure (Python numbers, not traced).
    """

    vmapped: Callable
    read: set[str]
    fixed: dict[str, Any]

    def __call__(self, configs, keys):
        return self.vmapped(ReadTracker(configs, self.read, self.fixed), keys)

    def eval_shape(self, configs, keys):
        return self.vmapped.eval_shape(ReadTracker(configs, self.read, self.fixed), keys)


_COMPILED: dict[tuple[Any, ...], _Compiled] = {}
_COMPILED_LIMIT = 8


def _compiled_for(
    train_fn: Callable,
    names: tuple[str, ...],
    options: tuple[tuple[str, Any], ...] = (),
    fixed: tuple[tuple[str, Any], ...] = (),
) -> _Compiled:
    """The jitted, vmapped ``train_fn`` and the config keys it read when traced.

    Kept for the last few ``(train_fn, config keys)`` pairs, so a second
    :func:`run` with the same function and chunk shapes (e.g. the chosen
    config on more seeds after a tuning sweep) reuses the compiled program.
    """
    cache_key = (train_fn, names, options, fixed)
    if cache_key in _COMPILED:
        _COMPILED[cache_key] = _COMPILED.pop(cache_key)  # most recently used last
        return _COMPILED[cache_key]
    vmapped = jax.jit(jax.vmap(train_fn), compiler_options=dict(options) or None)
    _COMPILED[cache_key] = _Compiled(vmapped, set(), dict(fixed))
    while len(_COMPILED) > _COMPILED_LIMIT:
        _COMPILED.pop(next(iter(_COMPILED)))
    return _COMPILED[cache_key]


def _hashable(fixed: dict[str, Any]) -> dict[str, Any]:
    """Fixed values as hashable scalars of the same dtype (a 0-d array becomes a NumPy scalar)."""
    return {
        k: v if isinstance(v, int | float | np.generic) else np.asarray(v)[()]
        for k, v in fixed.items()
    }


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
      >>> from jaxreg.sweeps import grid
      >>> def train_fn(config, key):
      ...     return {"loss": (config["x"] - 1.0) ** 2 + 0.01 * jax.random.normal(key)}
      >>> result = run(train_fn, grid(x=[0.0, 1.0, 2.0]), key=jax.random.key(0), seeds=2,
      ...              progress=False)
      >>> result.metrics["loss"].shape, result.best("loss", "min")["x"]
      ((6,), 1.0)
    """
    arrays, n = check_configs(configs)
    fixed = check_fixed(fixed, arrays)
    check_key(key)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, got {seeds!r}")
    mesh = _resolve_mesh(mesh)
    plan = _plan(arrays, n, seeds, key, _chunk_size(chunk_size, n * seeds, mesh))
    options = tuple(sorted((compiler_options or {}).items()))
    compiled = _compiled_for(
        train_fn, tuple(sorted(arrays)), options, tuple(sorted(_hashable(fixed).items()))
    )
    treedef = _trace_and_check_reads(
        compiled, compiled.read, plan, set(arrays) | set(fixed), allow_unused
    )
    out = _open_store(out_dir, _fingerprint(arrays, fixed, key, n, seeds, plan.chunk_size), plan)
    sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    chunks = _run_chunks(compiled, plan, treedef.num_leaves, sharding, out, progress)
    metrics = jax.tree.unflatten(
        treedef, [np.concatenate([c[i] for c in chunks]) for i in range(treedef.num_leaves)]
    )
    failure = _failure(metrics, plan, fixed)
    invalid = (failure != "") & (failure != "non-finite metric")
    if invalid.any():
        warnings.warn(
            f"{invalid.sum()} of {plan.members} members ran with invalid config values and "
            f"are flagged failed: {sorted(set(failure[invalid]))}",
            stacklevel=2,
        )
    return SweepResult(
        metrics, plan.member_configs, plan.config_index, plan.seed_index, failure != "", failure
    )


class _Plan(NamedTuple):
    """Which config and seed each member runs, its key, and the chunking."""

    member_configs: Configs
    member_keys: jax.Array
    config_index: np.ndarray
    seed_index: np.ndarray
    chunk_size: int

    @property
    def members(self) -> int:
        return len(self.config_index)

    @property
    def num_chunks(self) -> int:
        return -(-self.members // self.chunk_size)

    def chunk(self, start: int) -> tuple[dict[str, np.ndarray], jax.Array]:
        """Configs and keys of the chunk from ``start``; a short last chunk repeats its last."""
        index = np.arange(start, start + self.chunk_size).clip(max=self.members - 1)
        configs = {k: np.asarray(v[index]) for k, v in self.member_configs.items()}
        return configs, self.member_keys[jnp.asarray(index)]


def _resolve_mesh(mesh: Mesh | Literal["auto"] | None) -> Mesh | None:
    if mesh == "auto":
        return jax.make_mesh(
            (jax.device_count(),), ("members",), axis_types=(jax.sharding.AxisType.Auto,)
        )
    return mesh


def _chunk_size(chunk_size: int | None, members: int, mesh: Mesh | None) -> int:
    """Members per compiled call, rounded up so every chunk splits evenly over the devices."""
    if chunk_size is None:
        chunk_size = members
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    multiple = 1 if mesh is None else mesh.devices.shape[0]
    return -(-min(chunk_size, members) // multiple) * multiple


def _plan(arrays: Configs, n: int, seeds: int, key: jax.Array, chunk_size: int) -> _Plan:
    config_index = np.repeat(np.arange(n), seeds)
    seed_index = np.tile(np.arange(seeds), n)
    member_keys = jax.random.split(key, seeds)[jnp.asarray(seed_index)]
    member_configs = {k: v[config_index] for k, v in arrays.items()}
    return _Plan(member_configs, member_keys, config_index, seed_index, chunk_size)


def _trace_and_check_reads(compiled, read: set[str], plan: _Plan, names: set[str], allow: bool):
    """Trace ``train_fn`` once (the trace every chunk reuses); refuse keys it never reads."""
    shape_of = compiled.eval_shape(*plan.chunk(0))
    unused = sorted(names - read)
    if unused and not allow:
        raise ValueError(
            f"train_fn never reads the config key(s) {unused}: a typo? Members that differ only "
            f"there would be duplicates. Keys read: {sorted(read)} (allow_unused=True to accept)"
        )
    return jax.tree.structure(shape_of)


def _fingerprint(arrays: Configs, fixed, key: jax.Array, n: int, seeds: int, chunk: int) -> str:
    raw = {f"config_{k}": v for k, v in arrays.items()}
    raw["key"] = np.asarray(jax.random.key_data(key))
    raw["shape"] = np.asarray([n, seeds, chunk])
    raw.update({f"fixed_{k}": np.asarray(v) for k, v in fixed.items()})
    return digest(raw)


def _open_store(out_dir: str | Path | None, sweep_id: str, plan: _Plan) -> Path | None:
    """The results folder, checked to hold this sweep (or nothing yet); None without one."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    meta_path = out / "sweep.json"
    writer = jax.process_index() == 0  # one writer when several processes share out_dir
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    if meta_path.exists():
        if json.loads(meta_path.read_text()).get("fingerprint") != sweep_id:
            raise ValueError(
                f"out_dir {out} holds a different sweep (configs, seeds, key or chunk_size "
                "differ); use another folder"
            )
    elif writer:
        meta_path.write_text(
            json.dumps(
                {"fingerprint": sweep_id, "members": plan.members, "chunk_size": plan.chunk_size}
            )
        )
    return out


def _run_chunks(compiled, plan: _Plan, num_leaves: int, sharding, out, progress: bool):
    """Every chunk's output leaves (host arrays), computed or read back from ``out``."""
    bar = None
    if progress:
        bar = progress_bar(plan.num_chunks, desc="sweep", unit="chunk", leave=False)
    stored = stored_chunks(out, plan.num_chunks, num_leaves)
    results: list[list[np.ndarray]] = []
    for c in range(plan.num_chunks):
        start, stop = c * plan.chunk_size, min((c + 1) * plan.chunk_size, plan.members)
        path = None if out is None else out / f"chunk_{c:05d}.npz"
        leaves = stored.get(c)
        if c in stored and leaves is None:  # another process found it complete
            leaves = load_chunk(path, num_leaves)
        if leaves is None:
            configs, keys = plan.chunk(start)
            outputs = compiled(place(configs, sharding), place(keys, sharding))
            leaves = [gather(leaf)[: stop - start] for leaf in jax.tree.leaves(outputs)]
            if path is not None and jax.process_index() == 0:
                named = {f"leaf_{i}": leaf for i, leaf in enumerate(leaves)}
                atomic_savez(path, {**named, "digest": np.asarray(digest(named))})
        results.append(leaves)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results


def _failure(metrics, plan: _Plan, fixed: Mapping[str, Any]) -> np.ndarray:
    """Why each member failed: its invalid config values, else a non-finite metric, else ""."""
    nonfinite = np.zeros(plan.members, bool)
    for leaf in jax.tree.leaves(metrics):
        if np.issubdtype(leaf.dtype, np.inexact):
            nonfinite |= ~np.all(np.isfinite(leaf.reshape(plan.members, -1)), axis=1)
    columns = {name: np.full(plan.members, v) for name, v in fixed.items() if _numeric(v)}
    columns.update(plan.member_configs)
    problems = [hparam_problems(name, columns[name]) for name in sorted(columns)]
    failure = np.array(
        ["; ".join(p for p in member if p) for member in zip(*problems, strict=True)]
        if problems
        else [""] * plan.members,
        dtype=object,
    )
    return np.where((failure == "") & nonfinite, "non-finite metric", failure).astype(object)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)
