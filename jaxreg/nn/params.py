"""Parameter counting, and the dense-vs-convolution arithmetic behind parameter sharing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
from flax import nnx

__all__ = ["LayerCost", "count_params", "dense_vs_conv"]


def count_params(params: chex.ArrayTree | nnx.Module) -> int:
    """Number of scalar parameters in a pytree (or in an NNX module's ``nnx.Param`` state).

    Example:
      >>> count_params({"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)})
      8
    """
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return sum(int(leaf.size) for leaf in jax.tree.leaves(params))


class LayerCost(NamedTuple):
    """Weights of one dense unit vs one conv filter on the same input, and whole-layer totals.

    Example:
      >>> cost = dense_vs_conv((40, 1), (5,), features=32)  # MNIST-1D: 40 steps, 1 channel
      >>> cost.dense_layer_params, cost.conv_layer_params, cost.ratio
      (1280, 160, 8.0)
    """

    dense_weights_per_unit: int
    conv_weights_per_filter: int
    dense_layer_params: int
    conv_layer_params: int
    ratio: float


def dense_vs_conv(
    input_shape: Sequence[int],
    kernel_size: Sequence[int],
    features: int = 1,
    *,
    use_bias: bool = False,
) -> LayerCost:
    """Parameter cost of a dense layer vs a convolution on an input of ``input_shape``.

    A dense unit connects to every input value (``prod(input_shape)``
    weights); a conv filter connects to a ``kernel_size`` window of all input
    channels (``prod(kernel_size) · channels``) and is shared across positions.
    ``features`` units or filters, plus ``features`` biases with ``use_bias``.

    Args:
      input_shape: ``(*spatial, channels)``, e.g. ``(224, 224, 1)``.
      kernel_size: spatial kernel, e.g. ``(3, 3)``.
      features: number of dense units / conv filters.
      use_bias: count biases.

    Example:
      >>> cost = dense_vs_conv((224, 224, 1), (3, 3))
      >>> cost.dense_weights_per_unit, cost.conv_weights_per_filter
      (50176, 9)
    """
    input_shape, kernel_size = tuple(input_shape), tuple(kernel_size)
    if len(kernel_size) != len(input_shape) - 1:
        raise ValueError(
            f"kernel_size {kernel_size} must have one entry per spatial axis of {input_shape}"
        )
    if any(k > s for k, s in zip(kernel_size, input_shape, strict=False)):
        raise ValueError(f"kernel_size {kernel_size} is larger than the input {input_shape}")
    per_unit = math.prod(input_shape)
    per_filter = math.prod(kernel_size) * input_shape[-1]
    bias = features if use_bias else 0
    dense, conv = per_unit * features + bias, per_filter * features + bias
    return LayerCost(per_unit, per_filter, dense, conv, dense / conv)
