"""Flax NNX models for the study: an MLP, the MNIST-1D CNN, and a small 2-D CNN."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.nn.conv import patch_conv
from jaxreg.nn.dropout import ChannelDropout, DropConnect, Dropout, DropPath

__all__ = ["ACTIVATIONS", "CNN1D", "CNN2D", "MLP", "SpectralNormalized", "get_activation"]

#: Activations the models accept by name (``MLP(..., activation="gelu")``).
#:
#: Example:
#:   >>> import jax.numpy as jnp
#:   >>> from jaxreg.nn import ACTIVATIONS
#:   >>> "relu" in ACTIVATIONS, ACTIVATIONS["relu"](jnp.array([-1.0, 2.0])).tolist()
#:   (True, [0.0, 2.0])
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}


def get_activation(activation: str | Callable[[jax.Array], jax.Array]) -> Callable:
    """Look up an activation by name (see ``ACTIVATIONS``) or pass a callable through.

    Example:
      >>> get_activation("relu")(jnp.array([-1.0, 1.0])).tolist()
      [0.0, 1.0]
      >>> get_activation(jnp.tanh) is jnp.tanh
      True
    """
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)} "
            "or pass a callable"
        )
    return ACTIVATIONS[activation]


class SpectralNormalized(nnx.Module):
    """A layer whose weight matrix is divided by its largest singular value (Miyato et al. 2018).

    Wraps ``nnx.SpectralNorm``: σ comes from power iteration whose vector ``u``
    is model state (updated only in train mode, like BatchNorm statistics;
    ``jaxreg.nn.from_nnx`` carries it), and the gradient flows through the
    division. Kernels with more than two axes (convolutions) are reshaped to
    ``(-1, out_features)``, as :func:`jaxreg.transforms.spectral_norm_penalty`
    does.

    Args:
      layer: the layer to normalize (``nnx.Linear``, ``nnx.Conv``); it is called
        as ``layer(x)``.
      num_iterations: power-iteration steps per call.
      rngs: random streams for ``u``'s initialization.

    Example:
      >>> layer = SpectralNormalized(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
      >>> layer(jnp.ones((2, 3)), train=True).shape
      (2, 4)
    """

    call_keywords = ("train", "rngs")  # jaxreg's convention, for from_nnx

    def __init__(self, layer: nnx.Module, num_iterations: int = 1, *, rngs: nnx.Rngs):
        if not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f"num_iterations must be a positive int, got {num_iterations!r}")
        self.inner = nnx.SpectralNorm(layer, n_steps=num_iterations, rngs=rngs)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        del rngs
        return self.inner(x, update_stats=train)


def _plain_or_normalized(layer: nnx.Module, spectral_norm: bool, rngs: nnx.Rngs) -> nnx.Module:
    return SpectralNormalized(layer, rngs=rngs) if spectral_norm else layer


def _call(layer: nnx.Module, x: jax.Array, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    if isinstance(layer, SpectralNormalized | DropConnect):
        return layer(x, train=train, rngs=rngs)
    return layer(x)


class MLP(nnx.Module):
    """Fully connected ``sizes[0] -> … -> sizes[-1]``, with optional regularizing layers.

    Args:
      sizes: layer widths including input and output, e.g. ``(40, 100, 100, 10)``.
      activation: name from ``ACTIVATIONS`` or a callable.
      dropout_rate: :class:`~jaxreg.nn.Dropout` after every hidden activation.
      dropconnect_rate: DropConnect rate of the hidden layers (every hidden layer is a
        :class:`~jaxreg.nn.DropConnect`, which at rate 0 is a plain ``nnx.Linear``).
      residual: hidden layers whose input and output widths match become
        residual blocks ``x + f(x)``.
      drop_path_rate: stochastic depth on those residual branches
        (:class:`~jaxreg.nn.DropPath`); needs ``residual=True``.
      spectral_norm: every layer's weight divided by its largest singular value
        (:class:`SpectralNormalized`; Miyato et al. 2018); the power-iteration
        vectors are model state. Hidden layers are then plain linear layers, so
        it excludes ``dropconnect_rate``.
      rngs: NNX random streams for initialisation.

    The parameter tree depends only on ``sizes`` and ``residual``, never on a
    rate's value, so every rate can also be set per call through
    ``hparams`` (``"dropout_rate"``, ``"dropconnect_rate"``, ``"drop_path_rate"``;
    see :func:`jaxreg.nn.from_nnx`) — one compile for a sweep of rates.

    Example:
      >>> model = MLP((40, 100, 100, 10), rngs=nnx.Rngs(0))
      >>> model(jnp.ones((3, 40))).shape
      (3, 10)
    """

    call_keywords = ("train", "rngs")  # jaxreg's convention, for from_nnx

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Callable = "relu",
        dropout_rate: float = 0.0,
        *,
        dropconnect_rate: float = 0.0,
        residual: bool = False,
        drop_path_rate: float = 0.0,
        spectral_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s <= 0 for s in sizes):
            raise ValueError(f"sizes must be >= 2 positive ints, got {sizes!r}")
        if not residual and not (isinstance(drop_path_rate, float | int) and drop_path_rate == 0):
            raise ValueError("drop_path_rate needs residual=True (it drops residual branches)")
        self.activation = get_activation(activation)
        pairs = list(itertools.pairwise(sizes))
        if spectral_norm:
            if not (isinstance(dropconnect_rate, float | int) and dropconnect_rate == 0):
                raise ValueError("spectral_norm excludes dropconnect_rate (plain hidden layers)")
            layers = [SpectralNormalized(nnx.Linear(a, b, rngs=rngs), rngs=rngs) for a, b in pairs]
        else:
            hidden = [DropConnect(a, b, dropconnect_rate, rngs=rngs) for a, b in pairs[:-1]]
            layers = [*hidden, nnx.Linear(*pairs[-1], rngs=rngs)]
        self.layers = nnx.List(layers)
        self.residual = tuple(residual and a == b for a, b in pairs[:-1])
        self.dropout = Dropout(dropout_rate)
        self.drop_path = DropPath(drop_path_rate) if residual else None

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for layer, is_residual in zip(self.layers[:-1], self.residual, strict=True):
            h = _call(layer, x, train, rngs)
            h = self.dropout(self.activation(h), train=train, rngs=rngs)
            if is_residual:
                if self.drop_path is not None:
                    h = self.drop_path(h, train=train, rngs=rngs)
                h = x + h
            x = h
        return _call(self.layers[-1], x, train, rngs)


def _conv_out(length: int, kernel: int, stride: int, pad: int) -> int:
    return (length + 2 * pad - kernel) // stride + 1


class CNN1D(nnx.Module):
    """The MNIST-1D paper's convolutional network (Greydanus & Kobak): three strided convs.

    ``Conv(k5,s2) -> Conv(k3,s2) -> Conv(k3,s2) -> Linear``, each conv with
    ``channels`` filters and padding 1; ~94% test accuracy on MNIST-1D. Input
    is ``(n, length)`` or ``(n, length, 1)``. Options: ``dropout_rate`` before
    the head, ``channel_dropout_rate`` (spatial dropout) after every conv,
    ``spectral_norm`` on every conv and the head (:class:`SpectralNormalized`).

    Example:
      >>> CNN1D(rngs=nnx.Rngs(0))(jnp.ones((2, 40))).shape
      (2, 10)
    """

    call_keywords = ("train", "rngs")  # jaxreg's convention, for from_nnx

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 25,
        input_length: int = 40,
        activation: str | Callable = "relu",
        dropout_rate: float = 0.0,
        *,
        channel_dropout_rate: float = 0.0,
        spectral_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        self.activation = get_activation(activation)
        self.channel_dropout = ChannelDropout(channel_dropout_rate)
        spec = ((5, 2), (3, 2), (3, 2))
        self.convs = nnx.List(
            [
                _plain_or_normalized(
                    nnx.Conv(
                        1 if i == 0 else channels,
                        channels,
                        k,
                        s,
                        padding=[(1, 1)],
                        conv_general_dilated=patch_conv,
                        rngs=rngs,
                    ),
                    spectral_norm,
                    rngs,
                )
                for i, (k, s) in enumerate(spec)
            ]
        )
        length = input_length
        for k, s in spec:
            length = _conv_out(length, k, s, 1)
        if length <= 0:
            raise ValueError(f"input_length={input_length} is too short for CNN1D")
        self.head = _plain_or_normalized(
            nnx.Linear(channels * length, num_classes, rngs=rngs), spectral_norm, rngs
        )
        self.dropout = Dropout(dropout_rate)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        if x.ndim == 2:
            x = x[..., None]
        for conv in self.convs:
            h = self.activation(_call(conv, x, train, rngs))
            x = self.channel_dropout(h, train=train, rngs=rngs)
        x = self.dropout(x.reshape((x.shape[0], -1)), train=train, rngs=rngs)
        return _call(self.head, x, train, rngs)


class CNN2D(nnx.Module):
    """Small 2-D CNN for 8×8 digits: two 3×3 convs with 2×2 average pooling, then an MLP head.

    Example:
      >>> CNN2D(rngs=nnx.Rngs(0))(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """

    call_keywords = ("train", "rngs")  # jaxreg's convention, for from_nnx

    def __init__(
        self,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        input_shape: Sequence[int] = (8, 8, 1),
        activation: str | Callable = "relu",
        dropout_rate: float = 0.0,
        *,
        channel_dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        height, width, in_channels = input_shape
        self.channel_dropout = ChannelDropout(channel_dropout_rate)
        self.activation = get_activation(activation)
        widths = (in_channels, *channels)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, (3, 3), conv_general_dilated=patch_conv, rngs=rngs)
                for a, b in itertools.pairwise(widths)
            ]
        )
        for _ in channels:
            height, width = height // 2, width // 2
        if height <= 0 or width <= 0:
            raise ValueError(
                f"input_shape={tuple(input_shape)} is too small for {len(channels)} pools"
            )
        self.hidden = nnx.Linear(height * width * widths[-1], hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)
        self.dropout = Dropout(dropout_rate)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        for conv in self.convs:
            x = nnx.avg_pool(self.activation(conv(x)), (2, 2), strides=(2, 2))
            x = self.channel_dropout(x, train=train, rngs=rngs)
        x = self.activation(self.hidden(x.reshape((x.shape[0], -1))))
        return self.head(self.dropout(x, train=train, rngs=rngs))
