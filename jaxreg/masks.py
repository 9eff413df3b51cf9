"""Ready-made masks with optax semantics: ``True`` means "regularize this leaf".

A mask is a pytree of bools with the structure of ``params`` (or a prefix of
it), or a callable ``params -> mask``; every jaxreg penalty, proximal operator
and transform accepts one as ``mask=``, and so do optax's own
``optax.masked``/``optax.add_decayed_weights``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import chex
import jax
import numpy as np

__all__ = ["MaskLike", "by_leaf_index", "by_path", "leaf_path", "resolve", "weights_only"]

#: What every ``mask=`` argument accepts (a type alias). Either a pytree of bools with
#: the structure of ``params`` (or a prefix of it, where one bool covers a whole
#: subtree), or a callable ``params -> such a pytree``. ``True`` means "regularize this
#: leaf" (optax semantics).
#:
#: Example:
#:   >>> import jax.numpy as jnp
#:   >>> from jaxreg.masks import resolve, weights_only
#:   >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}, "head": jnp.ones(2)}
#:   >>> resolve({"dense": True, "head": False}, params)  # a prefix
#:   {'dense': {'bias': True, 'kernel': True}, 'head': False}
#:   >>> resolve(weights_only, params)  # a callable
#:   {'dense': {'bias': False, 'kernel': True}, 'head': False}
MaskLike = Any


def weights_only(params: chex.ArrayTree) -> chex.ArrayTree:
    """True for leaves with ``ndim >= 2`` (kernels), False for biases and norm scales.

    Example:
      >>> weights_only({"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)})
      {'bias': False, 'kernel': True}
    """
    return jax.tree.map(lambda leaf: np.ndim(leaf) >= 2, params)


def leaf_path(path: tuple) -> str:
    """``"layers/0/kernel"`` for a pytree key path; NNX's trailing ``.value`` is dropped.

    Example:
      >>> paths = [leaf_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(
      ...     {"layers": [{"kernel": 1, "bias": 2}]})]
      >>> paths
      ['layers/0/bias', 'layers/0/kernel']
    """
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry))
    if len(path) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def _compile(pattern: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise TypeError(f"by_path patterns must be str, got {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"by_path pattern {pattern!r} is not a valid regular expression: {error}"
        ) from error


def by_path(
    *patterns: str, exclude: bool = False, allow_unmatched: bool = False
) -> Callable[[chex.ArrayTree], chex.ArrayTree]:
    """Mask from regular expressions matched (``re.search``) against ``"a/b/c"`` leaf paths.

    Works on plain dicts, lists and NNX ``State`` alike.

    Args:
      *patterns: regular expressions; a leaf is selected if any of them matches.
      exclude: invert the selection (regularize everything *but* the matches).
      allow_unmatched: accept a pattern that matches no leaf. By default that
        raises ``ValueError`` when the mask is applied: a typo would otherwise
        switch a regularizer off without a word.

    Returns:
      A callable ``params -> mask``.

    Example:
      >>> params = {"layers": [{"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}]}
      >>> by_path(r"kernel$")(params)
      {'layers': [{'bias': False, 'kernel': True}]}
    """
    if not patterns:
        raise ValueError("by_path needs at least one pattern")
    compiled = [_compile(pattern) for pattern in patterns]

    def mask_fn(params: chex.ArrayTree) -> chex.ArrayTree:
        paths = [leaf_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        if not allow_unmatched:
            for pattern in compiled:
                if not any(pattern.search(p) for p in paths):
                    shown = ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
                    raise ValueError(
                        f"by_path pattern {pattern.pattern!r} matches no parameter "
                        f"(paths: {shown}); pass allow_unmatched=True if that is intended"
                    )

        def select(path, _):
            hit = any(c.search(leaf_path(path)) for c in compiled)
            return hit != exclude

        return jax.tree_util.tree_map_with_path(select, params)

    return mask_fn


def by_leaf_index(indices: Iterable[int]) -> Callable[[chex.ArrayTree], chex.ArrayTree]:
    """Mask selecting the leaves at ``indices`` in ``jax.tree.leaves(params)`` order.

    Args:
      indices: leaf positions (e.g. a layer's kernel and bias from
        :func:`jaxreg.curvature.dense_layers`).

    Returns:
      A callable ``params -> mask``.

    Example:
      >>> params = {"a": jnp.ones(2), "b": jnp.ones(3), "c": jnp.ones(1)}
      >>> by_leaf_index({0, 2})(params)
      {'a': True, 'b': False, 'c': True}
    """
    chosen = frozenset(indices)

    def mask_fn(params: chex.ArrayTree) -> chex.ArrayTree:
        treedef = jax.tree.structure(params)
        return jax.tree.unflatten(treedef, [i in chosen for i in range(treedef.num_leaves)])

    return mask_fn


def _is_bool_tree(mask: Any) -> bool:
    """A tree whose leaves are all bools: a mask even when callable (an Equinox module of
    bools); a function, a ``functools.partial`` or a ``jax.tree_util.Partial`` is not."""
    leaves = jax.tree.leaves(mask)
    return bool(leaves) and all(isinstance(leaf, bool | np.bool_) for leaf in leaves)


def resolve(mask: MaskLike | None, params: chex.ArrayTree) -> chex.ArrayTree:
    """Full mask with the structure of ``params``: calls a callable, broadcasts a prefix.

    ``None`` selects every leaf. Leaves of the mask must be Python or NumPy bools.
    A callable that is itself a tree with leaves (an Equinox module holding
    bools, the shape of Equinox params) is a mask, not a function.

    Raises:
      ValueError: the mask's tree does not match (a prefix of) ``params``.
      TypeError: a mask leaf is not a bool.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"a": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "b": jnp.ones(3)}
      >>> resolve({"a": True, "b": False}, params)
      {'a': {'bias': True, 'kernel': True}, 'b': False}
      >>> resolve(None, params)["b"]
      True
    """
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    if callable(mask) and not _is_bool_tree(mask):
        mask = mask(params)
    try:
        full = jax.tree.map(
            lambda m, sub: jax.tree.map(lambda _: m, sub), mask, params, is_leaf=lambda x: x is None
        )
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"mask does not match the params tree: mask structure {jax.tree.structure(mask)} "
            f"vs params {jax.tree.structure(params)}"
        ) from err
    for leaf in jax.tree.leaves(full):
        if not isinstance(leaf, bool | np.bool_):
            raise TypeError(f"mask leaves must be bools, got {type(leaf).__name__}")
    return full
