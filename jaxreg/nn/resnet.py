"""Residual networks with BatchNorm: ResNet-20 for 32×32×3 images and a small 1-D ResNet.

These are the models whose non-parameter state (BatchNorm running statistics)
the training core carries beside ``params``: :func:`jaxreg.nn.from_nnx` splits
them into ``(apply, params, state)``; :func:`jaxreg.fit` updates the
statistics in train mode and evaluates with them; analysis functions see
only ``params`` (bind the trained state with ``model.bind(state)``).

BatchNorm follows PyTorch's conventions (momentum 0.1 on the new batch, i.e.
NNX ``momentum=0.9``; ε = 1e-5; biased batch variance for normalisation) and
convolutions pad like PyTorch (``padding=1`` for 3×3), so weights port
one-to-one to a ``torchvision``-style model for side-by-side comparisons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.nn.conv import patch_conv
from jaxreg.nn.models import get_activation

__all__ = ["BasicBlock", "ResNet1D", "ResNet20"]

_BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1 on the new batch statistics


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, momentum=_BN_MOMENTUM, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` in 1-D or 2-D (He et al., 2016).

    The shortcut is the identity, or a strided 1×1 convolution with BatchNorm
    when the stride or width changes (option B of the paper).

    Example:
      >>> block = BasicBlock(4, 8, stride=2, ndim=2, rngs=nnx.Rngs(0))
      >>> block(jnp.ones((2, 8, 8, 4))).shape
      (2, 4, 4, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        ndim: int = 2,
        activation: str | Callable = "relu",
        rngs: nnx.Rngs,
    ):
        kernel, pad = (3,) * ndim, [(1, 1)] * ndim
        self.activation = get_activation(activation)
        self.conv1 = nnx.Conv(
            in_channels,
            out_channels,
            kernel,
            (stride,) * ndim,
            padding=pad,
            use_bias=False,
            conv_general_dilated=patch_conv,
            rngs=rngs,
        )
        self.bn1 = _batch_norm(out_channels, rngs)
        self.conv2 = nnx.Conv(
            out_channels,
            out_channels,
            kernel,
            padding=pad,
            use_bias=False,
            conv_general_dilated=patch_conv,
            rngs=rngs,
        )
        self.bn2 = _batch_norm(out_channels, rngs)
        self.projection = nnx.data(None)
        self.projection_bn = nnx.data(None)
        if stride != 1 or in_channels != out_channels:
            self.projection = nnx.Conv(
                in_channels,
                out_channels,
                (1,) * ndim,
                (stride,) * ndim,
                padding="VALID",
                use_bias=False,
                conv_general_dilated=patch_conv,
                rngs=rngs,
            )
            self.projection_bn = _batch_norm(out_channels, rngs)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        eval_mode = not train
        h = self.activation(self.bn1(self.conv1(x), use_running_average=eval_mode))
        h = self.bn2(self.conv2(h), use_running_average=eval_mode)
        shortcut = x
        if self.projection is not None:
            shortcut = self.projection_bn(self.projection(x), use_running_average=eval_mode)
        return self.activation(h + shortcut)


class _ResNet(nnx.Module):
    """Stem conv + BN, stages of :class:`BasicBlock` (stride 2 from the second), pool, head."""

    call_keywords = ("train", "rngs")  # jaxreg's convention, for from_nnx

    def __init__(
        self,
        *,
        ndim: int,
        in_channels: int,
        widths: Sequence[int],
        blocks_per_stage: int,
        num_classes: int,
        activation: str | Callable,
        rngs: nnx.Rngs,
    ):
        if blocks_per_stage < 1 or not widths:
            raise ValueError(
                f"need blocks_per_stage >= 1 and at least one stage, got {blocks_per_stage}, "
                f"{tuple(widths)}"
            )
        self.ndim = ndim
        self.activation = get_activation(activation)
        self.stem = nnx.Conv(
            in_channels,
            widths[0],
            (3,) * ndim,
            padding=[(1, 1)] * ndim,
            use_bias=False,
            conv_general_dilated=patch_conv,
            rngs=rngs,
        )
        self.stem_bn = _batch_norm(widths[0], rngs)
        blocks = []
        previous = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(
                    BasicBlock(
                        previous, width, stride=stride, ndim=ndim, activation=activation, rngs=rngs
                    )
                )
                previous = width
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(previous, num_classes, rngs=rngs)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        del rngs  # deterministic model: accepts the key of the jaxreg convention and ignores it
        if x.ndim == self.ndim + 1:
            x = x[..., None]
        h = self.activation(self.stem_bn(self.stem(x), use_running_average=not train))
        for block in self.blocks:
            h = block(h, train=train)
        pooled = jnp.mean(h, axis=tuple(range(1, self.ndim + 1)))
        return self.head(pooled)


class ResNet20(_ResNet):
    """ResNet-20 for CIFAR-10-shaped inputs ``(N, 32, 32, 3)`` (He et al., 2016, §4.2).

    ``depth = 6n + 2`` with ``n`` basic blocks in each of three stages of
    16, 32 and 64 channels: ``depth=20`` (0.27 M parameters), 32, 44, 56, 110.
    This is the network PyHessian's paper analyses.

    Example:
      >>> model = ResNet20(rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        depth: int = 20,
        widths: Sequence[int] = (16, 32, 64),
        in_channels: int = 3,
        activation: str | Callable = "relu",
        rngs: nnx.Rngs,
    ):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, ...), got {depth}")
        super().__init__(
            ndim=2,
            in_channels=in_channels,
            widths=widths,
            blocks_per_stage=(depth - 2) // 6,
            num_classes=num_classes,
            activation=activation,
            rngs=rngs,
        )


class ResNet1D(_ResNet):
    """A small 1-D ResNet with BatchNorm for MNIST-1D: inputs ``(N, 40)`` or ``(N, 40, 1)``.

    Example:
      >>> ResNet1D(rngs=nnx.Rngs(0))(jnp.ones((2, 40))).shape
      (2, 10)
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (32, 64),
        blocks_per_stage: int = 1,
        in_channels: int = 1,
        activation: str | Callable = "relu",
        rngs: nnx.Rngs,
    ):
        super().__init__(
            ndim=1,
            in_channels=in_channels,
            widths=widths,
            blocks_per_stage=blocks_per_stage,
            num_classes=num_classes,
            activation=activation,
            rngs=rngs,
        )
