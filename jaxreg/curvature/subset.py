"""A subset of the parameters (e.g. the last layer) as the variables of curvature and Laplace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxreg.masks import MaskLike, resolve

__all__ = ["Subset", "subset"]


class Subset:
    """The selected leaves of ``params`` as one flat vector; the others held fixed.

    Attributes:
      flat: the selected leaves, raveled ``(P,)``.
      groups: ``(P,)`` int32, the index of the leaf (the "layer") each entry
        comes from, counted over the selected leaves in pytree order.
      num_groups: how many leaves are selected.
      sizes: the number of entries of each selected leaf.
      paths: the selected leaves' positions in ``jax.tree.leaves(params)``.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"hidden": jnp.ones((2, 3)), "out": jnp.zeros(3)}
      >>> s = subset(params, {"hidden": False, "out": True})
      >>> s.flat.shape, s.num_groups
      ((3,), 1)
      >>> s.combine(s.flat + 1.0)["out"].tolist(), s.combine(s.flat)["hidden"].shape
      ([1.0, 1.0, 1.0], (2, 3))
    """

    def __init__(self, params: chex.ArrayTree, wrt: MaskLike | None = None):
        mask = jax.tree.leaves(resolve(wrt, params))
        leaves, self._treedef = jax.tree.flatten(params)
        self.paths = tuple(i for i, chosen in enumerate(mask) if chosen)
        if not self.paths:
            raise ValueError("wrt selects no parameter")
        self._leaves = leaves
        selected = [leaves[i] for i in self.paths]
        self.flat, self._unravel = ravel_pytree(selected)
        self.sizes = tuple(int(np.size(leaf)) for leaf in selected)
        self.groups = np.repeat(np.arange(len(self.sizes), dtype=np.int32), self.sizes)
        self.num_groups = len(self.sizes)

    def combine(self, flat: jax.Array) -> chex.ArrayTree:
        """The full parameters with the selected leaves taken from ``flat``."""
        leaves = list(self._leaves)
        for index, leaf in zip(self.paths, self._unravel(flat), strict=True):
            leaves[index] = leaf
        return jax.tree.unflatten(self._treedef, leaves)

    def outputs(self, apply: Callable[..., jax.Array]) -> Callable[[jax.Array, Any], jax.Array]:
        """``(flat, x) -> apply(combine(flat), x)``: the model as a function of the subset."""
        return lambda flat, x: apply(self.combine(flat), x)


def subset(params: chex.ArrayTree, wrt: MaskLike | None = None) -> Subset:
    """The parameters ``wrt`` selects (all by default) as a :class:`Subset`.

    Args:
      params: the model's parameters.
      wrt: a mask (pytree of bools, a prefix of ``params``, or a callable such as
        :func:`jaxreg.masks.by_path`); ``None`` selects every leaf. A last-layer
        Laplace selects the output layer, e.g. ``by_path(r"layers/2/")``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxreg.masks import by_path
      >>> params = {"layers": [{"kernel": jnp.ones((4, 3))}, {"kernel": jnp.ones((3, 2))}]}
      >>> subset(params, by_path(r"layers/1/")).flat.shape
      (6,)
    """
    return Subset(params, wrt)
