"""A model's convolutions, found in its jaxpr, and the model run with their inputs recorded.

KFAC for a convolution needs what no gradient gives: the layer's input patches
and its output gradients *per position*. Instead of asking the user to tag
layers, the model is traced once (:func:`jax.make_jaxpr`) and every
convolution whose kernel is a parameter leaf (directly, or through a dtype
cast or a nested ``jit``) is a *site*: a ``conv_general_dilated``, or an
im2col product (a ``dot_general`` of patches with the kernel reshaped to
``(taps·in, out)``, as :func:`jaxreg.nn.patch_conv` computes it on CPU), or a
dense kernel applied at several positions of one example (a sequence).
:meth:`Traced.run_with_sites` then evaluates that jaxpr primitive by
primitive, with public JAX only, and at each site records the input and adds
a perturbation to the output: the gradient with respect to the perturbation
is the per-position output gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.extend.core as jex
import numpy as np

#: Primitives whose body is evaluated inline (a convolution inside is still found).
_CALLS = ("jit", "pjit", "closed_call", "core_call", "checkpoint", "remat")
#: Primitives that keep a parameter leaf's identity (a kernel cast to the compute dtype).
_PASS_THROUGH = ("convert_element_type", "copy", "copy_p")


@dataclass(frozen=True)
class Site:
    """One convolution whose kernel is parameter leaf ``kernel``.

    Attributes:
      kind: ``"conv"`` (a ``conv_general_dilated``) or ``"im2col"`` (patches
        ``(..., taps·in)`` times the kernel reshaped to ``(taps·in, out)``, or
        inputs ``(1, positions..., in)`` times a dense kernel ``(in, out)``).
      kernel: the kernel's index in ``jax.tree.leaves(params)``.
      params: the ``conv_general_dilated`` equation's parameters.
      kernel_shape: the kernel's shape (the leaf's).
      output_shape: the convolution's output shape for one example.
      output_dtype: the convolution's output dtype.
    """

    kind: str
    kernel: int
    params: dict
    kernel_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output_dtype: Any

    @property
    def out_axis(self) -> int:
        """The kernel's output-channel axis."""
        if self.kind == "im2col":
            return len(self.kernel_shape) - 1
        return self.params["dimension_numbers"].rhs_spec[0]

    @property
    def feature_axis(self) -> int:
        """The output's channel axis."""
        if self.kind == "im2col":
            return len(self.output_shape) - 1
        return self.params["dimension_numbers"].out_spec[1]


def _site_kind(eqn: Any, leaves: list) -> str | None:
    """``"conv"``/``"im2col"`` when ``eqn`` applies a parameter kernel we can factor."""
    p = eqn.params
    if eqn.primitive.name == "conv_general_dilated" and isinstance(leaves[1], int):
        plain = p["feature_group_count"] == 1 and p["batch_group_count"] == 1
        return "conv" if plain and all(d == 1 for d in p["lhs_dilation"]) else None
    if eqn.primitive.name == "dot_general":
        lhs_ndim, rhs_ndim = (len(v.aval.shape) for v in eqn.invars)
        plain = p["dimension_numbers"] == (((lhs_ndim - 1,), (0,)), ((), ()))
        # patches times a reshaped conv kernel, or a dense kernel applied at several
        # positions of one example (over a sequence: a 1×1 convolution)
        shared = isinstance(leaves[1], int) and rhs_ndim == 2 and lhs_ndim >= 3
        return "im2col" if plain and (isinstance(leaves[1], tuple) or shared) else None
    return None


def _origin_after(eqn: Any, leaves: list) -> int | tuple | None:
    """Which leaf ``eqn``'s output still is: a cast of it (an int), or its im2col
    reshape ``(taps·in, out)`` (a 1-tuple), else ``None``."""
    name, leaf = eqn.primitive.name, leaves[0] if leaves else None
    if name in _PASS_THROUGH:
        return leaf
    if name == "reshape" and isinstance(leaf, int):
        shape, new = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
        if len(shape) >= 3 and tuple(new) == (int(np.prod(shape[:-1])), shape[-1]):
            return (leaf,)
    return None


def _body(eqn: Any) -> tuple[Any, Sequence[Any]] | None:
    if eqn.primitive.name not in _CALLS:
        return None
    for name in ("jaxpr", "call_jaxpr"):
        body = eqn.params.get(name)
        if isinstance(body, jex.ClosedJaxpr):
            return body.jaxpr, body.consts
        if isinstance(body, jex.Jaxpr):
            return body, ()
    return None


Visit = Callable[[Any, list, str, int], Any]


def _evaluate(jaxpr: Any, consts: Sequence, args: Sequence, origins: Sequence, visit: Visit):
    """Evaluate ``jaxpr``; ``visit(eqn, inputs, kind, leaf)`` computes each site's output."""
    env: dict = {}
    origin: dict = {}

    def read(var):
        return var.val if isinstance(var, jex.Literal) else env[var]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value, leaf in zip(jaxpr.invars, args, origins, strict=True):
        env[var], origin[var] = value, leaf
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        leaves = [None if isinstance(v, jex.Literal) else origin.get(v) for v in eqn.invars]
        body, kind = _body(eqn), _site_kind(eqn, leaves)
        if body is not None:
            outputs = _evaluate(*body, inputs, leaves, visit)
        elif kind is not None:
            leaf = leaves[1] if isinstance(leaves[1], int) else leaves[1][0]
            outputs = [visit(eqn, inputs, kind, leaf)]
        else:
            outputs = _bind(eqn, inputs)
            outputs = outputs if eqn.primitive.multiple_results else [outputs]
            origin[eqn.outvars[0]] = _origin_after(eqn, leaves)
        for var, value in zip(eqn.outvars, outputs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn: Any, inputs: list) -> Any:
    return eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))


class Traced:
    """``apply`` traced at ``params`` and one example: its sites and a re-evaluator."""

    def __init__(self, apply: Callable, params: Any, example: jax.Array):
        closed, shape = jax.make_jaxpr(apply, return_shape=True)(params, example)
        self._closed, self._out_tree = closed, jax.tree.structure(shape)
        sites: list[Site] = []

        def record(eqn, inputs, kind, leaf):
            shape, aval = jax.tree.leaves(params)[leaf].shape, eqn.outvars[0].aval
            sites.append(Site(kind, leaf, dict(eqn.params), shape, aval.shape, aval.dtype))
            return _bind(eqn, inputs)

        jax.eval_shape(lambda p, x: self._run(p, x, record), params, example)
        counts = np.bincount([s.kernel for s in sites], minlength=len(jax.tree.leaves(params)))
        # A kernel used at several sites (shared over calls) is left out: its factors are not one.
        self.sites = tuple(s for s in sites if counts[s.kernel] == 1)

    def _run(self, params, example, visit):
        leaves = jax.tree.leaves(params)
        args = [*leaves, *jax.tree.leaves(example)]
        origins = [*range(len(leaves)), *([None] * (len(args) - len(leaves)))]
        flat = _evaluate(self._closed.jaxpr, self._closed.consts, args, origins, visit)
        return jax.tree.unflatten(self._out_tree, flat)

    def run_with_sites(self, params: Any, example: jax.Array, perturbations: Sequence[jax.Array]):
        """``(outputs, inputs)``: ``apply``'s outputs with ``perturbations[i]`` added to
        site ``i``'s output, and each site's input (in the convolution's own layout)."""
        by_kernel = {site.kernel: i for i, site in enumerate(self.sites)}
        inputs: list = [None] * len(self.sites)

        def visit(eqn, values, kind, leaf):
            output = _bind(eqn, values)
            index = by_kernel.get(leaf)
            if index is None:
                return output
            inputs[index] = values[0]
            return output + perturbations[index].astype(output.dtype)

        outputs = self._run(params, example, visit)
        return outputs, inputs
