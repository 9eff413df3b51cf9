"""A convolution that stays fast inside loop bodies on XLA:CPU.

XLA:CPU runs a convolution's gradients on a slow path when they sit inside a
``while_loop`` body (a ``lax.scan`` over training steps, a Lanczos iteration,
a scan over batches): the weight gradient is 20–30× slower than the same
operation outside a loop, the input gradient 3–7× (measured in
``benchmarks/hessian.py``, recorded in ``benchmarks/results/hessian.json``;
jax-ml/jax#12868 is the same family). Training and curvature always run in loops,
so :func:`patch_conv` computes channels-last convolutions as strided slices and one
matrix product (im2col): their transposes are pads and matrix products, fast in and
out of loops. Elsewhere
(GPU, TPU, dilations, grouped or channels-first convolutions) it is
``lax.conv_general_dilated`` itself. :func:`swap_stock_convs` makes a stock NNX
model's ``nnx.Conv`` layers use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["patch_conv", "swap_stock_convs"]


def _channels_last(numbers: jax.lax.ConvDimensionNumbers, ndim: int) -> bool:
    spatial = tuple(range(1, ndim - 1))
    return (
        tuple(numbers.lhs_spec) == (0, ndim - 1, *spatial)
        and tuple(numbers.rhs_spec) == (ndim - 1, ndim - 2, *range(ndim - 2))
        and tuple(numbers.out_spec) == (0, ndim - 1, *spatial)
    )


def _ones(values: Sequence[int] | None) -> bool:
    return values is None or all(v == 1 for v in values)


def patch_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated`` with the same signature, as im2col on XLA:CPU.

    Pass it to Flax as ``nnx.Conv(..., conv_general_dilated=patch_conv)``;
    jaxreg's CNNs and ResNets do. The result equals ``lax.conv_general_dilated``
    up to float rounding.

    Example:
      >>> x, w = jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4))
      >>> patch_conv(x, w, (2,), [(1, 1)], dimension_numbers=("NWC", "WIO", "NWC")).shape
      (2, 4, 4)
    """
    numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = (
        jax.default_backend() == "cpu"
        and _channels_last(numbers, lhs.ndim)
        and _ones(lhs_dilation)
        and _ones(rhs_dilation)
        and feature_group_count == 1
        and batch_group_count == 1
        and not kwargs.get("out_sharding")
    )
    window = rhs.shape[:-2]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], window, window_strides, padding)
    if not plain or any(lo < 0 or hi < 0 for lo, hi in padding):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **kwargs,
        )
    padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    sizes = padded.shape[1:-1]
    out = [(size - k) // s + 1 for size, k, s in zip(sizes, window, window_strides, strict=True)]
    patches = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = (0, *offset, 0)
        limit = (
            padded.shape[0],
            *(o + s * (n - 1) + 1 for o, s, n in zip(offset, window_strides, out, strict=True)),
            padded.shape[-1],
        )
        patches.append(jax.lax.slice(padded, start, limit, (1, *window_strides, 1)))
    # (n, *out, taps·C) against (taps·C, O): the kernel's row-major order is (*window, C).
    stacked = jnp.concatenate(patches, axis=-1)
    return jax.lax.dot_general(
        stacked,
        rhs.reshape(-1, rhs.shape[-1]),
        (((stacked.ndim - 1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def swap_stock_convs(module: nnx.Module) -> nnx.Module:
    """A copy of an NNX module whose stock ``nnx.Conv`` layers compute with :func:`patch_conv`.

    A model written as the Flax documentation writes it convolves with
    ``lax.conv_general_dilated``, whose gradients XLA:CPU runs on a slow path inside
    loop bodies: every Lanczos step, Hutchinson probe and scanned training step or
    sweep. The copy computes the same function (to float rounding) with im2col there.
    Only layers left at Flax's default convolution are changed; parameters, state and
    the module's structure are copied as they are.

    Args:
      module: a Flax NNX module holding ``nnx.Conv`` layers (at any depth).

    Returns:
      The copy (``module`` itself is unchanged).

    Raises:
      TypeError: ``module`` is not an NNX module. In Linen pass
        ``conv_general_dilated=patch_conv`` to ``nn.Conv`` (or to the ``conv``
        partial a model takes); Equinox convolves one channels-first example at a
        time, which :func:`patch_conv` leaves to ``lax`` (train with
        ``HostOptions(steps="host")`` on CPU instead).
      ValueError: ``module`` has no ``nnx.Conv`` layer.

    Example:
      >>> net = nnx.Sequential(nnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(0)), nnx.relu)
      >>> fast = swap_stock_convs(net)
      >>> fast.layers[0].conv_general_dilated is patch_conv
      True
      >>> x = jnp.ones((2, 8, 8, 1))
      >>> bool(jnp.allclose(fast(x), net(x), atol=1e-5))
      True
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(
            "swap_stock_convs takes a Flax NNX module, got "
            f"{type(module).__module__}.{type(module).__name__}; in Linen pass "
            "conv_general_dilated=jaxreg.nn.patch_conv to nn.Conv, and Equinox convolutions "
            "(channels-first, one example at a time) are left to lax"
        )
    copy = nnx.clone(module)
    convs = [layer for _, layer in nnx.iter_graph(copy) if isinstance(layer, nnx.Conv)]
    if not convs:
        raise ValueError(f"module: {type(module).__name__} has no nnx.Conv layer to swap")
    for layer in convs:
        if layer.conv_general_dilated is jax.lax.conv_general_dilated:
            layer.conv_general_dilated = patch_conv
    return copy
