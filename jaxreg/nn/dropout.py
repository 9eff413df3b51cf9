"""The dropout family as Flax NNX modules: explicit keys at call time, rates that can be traced.

Every layer here is the identity in eval mode (``train=False``) and needs no
key there. In train mode the key arrives at call time as ``rngs`` (through
:func:`jaxreg.nn.functional`'s ``apply(params, x, key=k, train=True)``) and is
never stored in the module, so ``vmap`` over keys gives every member its own
masks — NNX's stored ``Rngs`` streams would instead be shared across a
vmapped axis unless split by hand. Rates are kept in a non-trainable
:class:`DropoutRate` variable that carries the name of the hyperparameter it
answers to (``hparam``, e.g. ``"dropout_rate"``): :func:`jaxreg.nn.from_nnx`'s
``apply(..., hparams={"dropout_rate": r})`` sets every such rate to ``r`` at
call time, so a traced ``r`` sweeps the rate in one compile without
rebuilding the model. A layer's structure never depends on its rate's value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, is_concrete_zero, is_traced

__all__ = [
    "ChannelDropout",
    "DropConnect",
    "DropPath",
    "Dropout",
    "DropoutRate",
    "GaussianDropout",
    "check_rate",
]


class DropoutRate(nnx.Variable):
    """A non-trainable rate, outside ``params``; metadata ``hparam`` names its hyperparameter.

    Example:
      >>> layer = Dropout(0.3)
      >>> isinstance(layer.rate, DropoutRate), layer.rate.hparam  # hparams["dropout_rate"]
      (True, 'dropout_rate')
      >>> len(jax.tree.leaves(nnx.state(layer, nnx.Param)))  # not a trainable parameter
      0
    """


def check_rate(rate: ArrayLike, name: str = "rate") -> None:
    """Raise ``ValueError`` if a concrete ``rate`` lies outside ``[0, 1)``; traced rates pass.

    Example:
      >>> check_rate(0.5)
      >>> check_rate(1.0, "dropout_rate")
      Traceback (most recent call last):
      ...
      ValueError: dropout_rate must lie in [0.0, 1.0), got 1.0
    """
    check_interval(rate, name, 0.0, 1.0)


def _rate_variable(rate: ArrayLike, hparam: str | None) -> DropoutRate:
    check_rate(rate)
    if hparam is not None and not isinstance(hparam, str):
        raise TypeError(f"hparam must be a str or None, got {hparam!r}")
    # A concrete rate stays a NumPy value so that a rate of 0 is still recognisably 0 when
    # the model is built under jit (a jnp constant would become a tracer there).
    value = rate if is_traced(rate) else np.asarray(rate, np.float32)
    return DropoutRate(value, hparam=hparam)


def _require_key(rngs: nnx.Rngs | None, layer: str) -> nnx.Rngs:
    if rngs is None:
        raise ValueError(
            f"{layer} in train mode needs a key: call apply(params, x, key=..., train=True)"
        )
    return rngs


def _skip_key(rngs: nnx.Rngs | None) -> None:
    """Draw (and drop) the key a non-zero rate would use, so later layers' masks do not
    depend on whether this rate is a concrete 0 or a traced value."""
    if rngs is not None:
        rngs.dropout()


def _keep_mask(rngs: nnx.Rngs, rate: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.bernoulli(rngs.dropout(), 1.0 - rate, shape)


def _inverted(x: jax.Array, keep: jax.Array, rate: jax.Array) -> jax.Array:
    return jnp.where(keep, x / (1.0 - rate).astype(x.dtype), jnp.zeros_like(x))


class _StochasticLayer(nnx.Module):
    """Shared train/eval switch: identity in eval or at a concrete rate 0, else ``_perturb``."""

    default_hparam = "dropout_rate"

    def __init__(self, rate: ArrayLike, hparam: str | None = None):
        self.rate = _rate_variable(rate, hparam or self.default_hparam)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        rate = self.rate.get_value()
        if not train:
            return x
        if is_concrete_zero(rate):
            _skip_key(rngs)
            return x
        return self._perturb(x, rate, _require_key(rngs, type(self).__name__))

    def _perturb(self, x: jax.Array, rate: jax.Array, rngs: nnx.Rngs) -> jax.Array:
        raise NotImplementedError


class Dropout(_StochasticLayer):
    """Inverted dropout: zero units with probability ``rate``, scale the rest by ``1/(1-rate)``.

    Example:
      >>> layer = Dropout(0.5)
      >>> y = layer(jnp.ones(4), train=True, rngs=nnx.Rngs(dropout=jax.random.key(0)))
      >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
      True
    """

    default_hparam = "dropout_rate"

    def __init__(self, rate: ArrayLike = 0.5, *, hparam: str | None = None):
        super().__init__(rate, hparam)

    def _perturb(self, x, rate, rngs):
        return _inverted(x, _keep_mask(rngs, rate, x.shape), rate)


class GaussianDropout(_StochasticLayer):
    """Multiplicative Gaussian noise ``x·ε``, ``ε ~ N(1, rate/(1-rate))`` (Srivastava et al., 2014).

    Same mean and variance of the multiplier as inverted dropout at ``rate``.

    Example:
      >>> layer = GaussianDropout(0.5)  # multiplier ~ N(1, 1)
      >>> y = layer(jnp.ones(20000), train=True, rngs=nnx.Rngs(dropout=jax.random.key(0)))
      >>> round(float(y.mean()), 1), round(float(y.var()), 1)
      (1.0, 1.0)
    """

    default_hparam = "gaussian_dropout_rate"

    def __init__(self, rate: ArrayLike = 0.5, *, hparam: str | None = None):
        super().__init__(rate, hparam)

    def _perturb(self, x, rate, rngs):
        std = jnp.sqrt(rate / (1.0 - rate)).astype(x.dtype)
        return x * (1.0 + std * jax.random.normal(rngs.dropout(), x.shape, x.dtype))


class ChannelDropout(_StochasticLayer):
    """Spatial dropout (Tompson et al., 2015): drop whole feature maps of a conv output.

    Input ``(N, *spatial, C)`` (1-D or 2-D convs); each example drops each
    channel with probability ``rate`` across all positions.

    Example:
      >>> layer = ChannelDropout(0.5)
      >>> y = layer(jnp.ones((2, 6, 4)), train=True, rngs=nnx.Rngs(dropout=jax.random.key(0)))
      >>> bool(jnp.all(y == y[:, :1]))  # a channel is kept or dropped at every position
      True
      >>> bool(jnp.all(layer(jnp.ones((2, 6, 4))) == 1.0))  # eval mode: identity
      True
    """

    default_hparam = "channel_dropout_rate"

    def __init__(self, rate: ArrayLike = 0.1, *, hparam: str | None = None):
        super().__init__(rate, hparam)

    def _perturb(self, x, rate, rngs):
        if x.ndim < 3:
            raise ValueError(f"ChannelDropout expects (N, *spatial, C), got shape {x.shape}")
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        return _inverted(x, _keep_mask(rngs, rate, shape), rate)


class DropPath(_StochasticLayer):
    """Stochastic depth (Huang et al., 2016): drop a residual branch per example.

    Use as ``x + drop_path(branch(x))``: in training each example keeps the
    branch with probability ``1 - rate`` (scaled by ``1/(1-rate)``).

    Example:
      >>> drop_path = DropPath(0.5)
      >>> branch = jnp.ones((8, 3))
      >>> y = drop_path(branch, train=True, rngs=nnx.Rngs(dropout=jax.random.key(0)))
      >>> sorted(set(y[:, 0].tolist())) in ([0.0, 2.0], [2.0], [0.0]), bool(jnp.all(y == y[:, :1]))
      (True, True)
    """

    default_hparam = "drop_path_rate"

    def __init__(self, rate: ArrayLike = 0.1, *, hparam: str | None = None):
        super().__init__(rate, hparam)

    def _perturb(self, branch, rate, rngs):
        shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
        return _inverted(branch, _keep_mask(rngs, rate, shape), rate)


class DropConnect(nnx.Linear):
    """A dense layer whose *weights* are dropped (Wan et al., 2013), inverted scaling.

    An ``nnx.Linear`` (same ``kernel``/``bias`` parameters, so a model's
    parameter tree does not depend on whether DropConnect is on) plus a rate.
    One weight mask is drawn per call (shared by the examples of the batch);
    ``vmap`` over keys draws independent masks. Eval mode uses the full weights.

    Example:
      >>> layer = DropConnect(4, 3, rate=0.5, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 4))).shape
      (2, 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: ArrayLike = 0.5,
        *,
        use_bias: bool = True,
        hparam: str | None = "dropconnect_rate",
        rngs: nnx.Rngs,
    ):
        super().__init__(in_features, out_features, use_bias=use_bias, rngs=rngs)
        self.rate = _rate_variable(rate, hparam)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        rate = self.rate.get_value()
        if not train:
            return super().__call__(x)
        if is_concrete_zero(rate):
            _skip_key(rngs)
            return super().__call__(x)
        kernel = self.kernel.get_value()
        keep = _keep_mask(_require_key(rngs, "DropConnect"), rate, kernel.shape)
        y = x @ _inverted(kernel, keep, rate)
        if self.bias is not None:
            y = y + self.bias.get_value()
        return y
