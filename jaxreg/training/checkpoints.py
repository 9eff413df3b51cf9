"""Checkpoints of training state on ``orbax`` (atomic, no pickle), PRNG keys included.

A state is any pytree of arrays — params, optimizer state, early-stopping
state, PRNG keys, step counters, history. Typed PRNG keys are stored as their
raw key data and re-wrapped on restore, so a restored run continues with
bitwise the same randomness. ``orbax`` is imported on first use, so
``import jaxreg`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["latest_step", "restore", "restore_extra", "save"]


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _encode(state: chex.ArrayTree) -> chex.ArrayTree:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _manager(directory: str | Path, max_to_keep: int | None = None):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(
    directory: str | Path,
    step: int,
    state: chex.ArrayTree,
    *,
    extra: chex.ArrayTree | None = None,
    max_to_keep: int = 3,
) -> None:
    """Write ``state`` as checkpoint ``step`` under ``directory`` (atomically; waits until done).

    ``extra`` is an optional second pytree whose shapes may change between
    checkpoints (e.g. a history that grows); read it back with :func:`restore_extra`.

    Example:
      >>> import tempfile
      >>> folder = tempfile.mkdtemp()
      >>> save(folder, 1, {"w": jnp.ones(2), "key": jax.random.key(0)})
      >>> restored, step = restore(folder, {"w": jnp.zeros(2), "key": jax.random.key(9)})
      >>> step, restored["w"].tolist()
      (1, [1.0, 1.0])
    """
    ocp = _ocp()
    if not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    items = {"state": ocp.args.StandardSave(_encode(state))}
    if extra is not None:
        items["extra"] = ocp.args.StandardSave(_encode(extra))
    with _manager(directory, max_to_keep) as manager:
        manager.save(int(step), args=ocp.args.Composite(**items), force=True)
        manager.wait_until_finished()


def latest_step(directory: str | Path) -> int | None:
    """The newest complete checkpoint step under ``directory``, or ``None``.

    Example:
      >>> import tempfile
      >>> folder = tempfile.mkdtemp()
      >>> latest_step(folder) is None
      True
      >>> for step in (1, 2):
      ...     save(folder, step, {"w": jnp.full(2, float(step))})
      >>> latest_step(folder)
      2
    """
    if not Path(directory).exists():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def _resolve_step(directory: str | Path, step: int | None) -> int:
    step = latest_step(directory) if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {directory}")
    return int(step)


def restore(
    directory: str | Path, target: chex.ArrayTree, step: int | None = None
) -> tuple[chex.ArrayTree, int]:
    """Read checkpoint ``step`` (default: the latest) with the structure and dtypes of ``target``.

    Returns:
      ``(state, step)``.

    Raises:
      FileNotFoundError: there is no checkpoint under ``directory``.

    Example:
      >>> import tempfile
      >>> folder = tempfile.mkdtemp()
      >>> for step in (1, 2):
      ...     save(folder, step, {"w": jnp.full(2, float(step))})
      >>> state, step = restore(folder, {"w": jnp.zeros(2)})  # the latest
      >>> step, state["w"].tolist()
      (2, [2.0, 2.0])
      >>> restore(folder, {"w": jnp.zeros(2)}, step=1)[0]["w"].tolist()
      [1.0, 1.0]
    """
    ocp = _ocp()
    step = _resolve_step(directory, step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _encode(target))
    with _manager(directory) as manager:
        raw = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
    state = jax.tree.map(
        lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
        target,
        raw,
    )
    return state, step


def restore_extra(directory: str | Path, step: int | None = None) -> chex.ArrayTree:
    """The ``extra`` pytree saved with checkpoint ``step``, with its stored shapes (NumPy).

    Example:
      >>> import tempfile
      >>> folder = tempfile.mkdtemp()
      >>> save(folder, 3, {"w": jnp.zeros(2)}, extra={"losses": jnp.array([0.75, 0.5, 0.25])})
      >>> restore_extra(folder)["losses"].tolist()
      [0.75, 0.5, 0.25]
    """
    ocp = _ocp()
    step = _resolve_step(directory, step)
    with _manager(directory) as manager:
        return manager.restore(step, args=ocp.args.Composite(extra=ocp.args.StandardRestore()))[
            "extra"
        ]
