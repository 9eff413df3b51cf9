"""Inverted dropout as a Flax NNX module whose key arrives at call time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from jaxreg._checks import check_interval

__all__ = ["Dropout", "check_rate"]


def check_rate(rate: ArrayLike, name: str = "rate") -> None:
    """Raise ``ValueError`` if a concrete ``rate`` lies outside ``[0, 1)``; traced rates pass."""
    check_interval(rate, name, 0.0, 1.0)


class Dropout(nnx.Module):
    """Inverted dropout: zero units with probability ``rate``, scale the rest by ``1/(1-rate)``.

    Unlike ``nnx.Dropout`` the random stream is never stored in the module: the
    key comes in at call time (through :func:`jaxreg.nn.functional`'s ``key=``),
    so a ``vmap`` over keys gives every member its own mask. Identity when
    ``train`` is False.

    Example:
      >>> layer = Dropout(0.5)
      >>> y = layer(jnp.ones(4), train=True, rngs=nnx.Rngs(dropout=jax.random.key(0)))
      >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
      True
    """

    def __init__(self, rate: float = 0.5):
        check_rate(rate)
        self.rate = float(rate)

    def __call__(
        self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        if rngs is None:
            raise ValueError(
                "Dropout in train mode needs a key: call apply(params, x, key=..., train=True)"
            )
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(rngs.dropout(), keep, x.shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
