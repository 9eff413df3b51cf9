"""Stock framework dropout layers with their rate as data, so a swept rate needs no rewrite.

``flax.nnx.Dropout`` and ``flax.linen.Dropout`` test ``rate == 0`` in Python, so a
traced rate (one compile for a whole sweep) cannot reach them as they are. The
bridges (:func:`jaxreg.nn.from_nnx`, :func:`jaxreg.nn.from_linen`) put the same
computation in their place — same key, same Bernoulli draw, same scaling — with the
rate read from ``hparams``: :class:`SweptDropout` replaces the NNX layers a
``rates=`` mapping names, :func:`linen_dropout_interceptor` intercepts Linen's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxreg._checks import is_traced
from jaxreg.nn.dropout import DropoutRate, check_rate

__all__ = ["SweptDropout", "linen_dropout_interceptor", "stock_dropout", "swap_stock_dropouts"]


def stock_dropout(
    key: jax.Array, x: jax.Array, rate: jax.Array, broadcast_dims: Sequence[int] = ()
) -> jax.Array:
    """Flax's inverted dropout with a rate that may be traced (0: identity; 1: zeros).

    The same key draws the same mask as ``nnx.Dropout``/``linen.Dropout`` at the same
    concrete rate.

    Example:
      >>> x = jnp.ones((2, 4))
      >>> bool((stock_dropout(jax.random.key(0), x, jnp.float32(0.0)) == x).all())
      True
      >>> stock = nnx.Dropout(0.5)(x, deterministic=False, rngs=jax.random.key(0))
      >>> bool((stock_dropout(jax.random.key(0), x, jnp.float32(0.5)) == stock).all())
      True
    """
    keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
    shape = list(x.shape)
    for dim in broadcast_dims:
        shape[dim] = 1
    mask = jnp.broadcast_to(jax.random.bernoulli(key, p=keep_prob, shape=shape), x.shape)
    safe = jnp.where(keep_prob > 0, keep_prob, 1.0).astype(x.dtype)
    return jax.lax.select(mask, x / safe, jnp.zeros_like(x))


class SweptDropout(nnx.Module):
    """``nnx.Dropout`` with its rate in a :class:`~jaxreg.nn.DropoutRate` named ``hparam``.

    Built from a stock layer (same ``deterministic``, ``broadcast_dims``, RNG stream) and
    called the same way; :func:`jaxreg.nn.from_nnx` puts it where ``rates=`` says.

    Example:
      >>> layer = SweptDropout(nnx.Dropout(0.3, rngs=nnx.Rngs(0)), hparam="dropout_rate")
      >>> float(layer.rate.get_value()), layer.rate.hparam
      (0.3..., 'dropout_rate')
    """

    def __init__(self, stock: nnx.Dropout, *, hparam: str):
        check_rate(stock.rate, f"the rate of the nnx.Dropout swept as {hparam!r}")
        self.rate = DropoutRate(np.asarray(stock.rate, np.float32), hparam=hparam)
        self.broadcast_dims = tuple(stock.broadcast_dims)
        self.deterministic = stock.deterministic
        self.rng_collection = stock.rng_collection
        self.rngs = stock.rngs

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic:
            return inputs
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        elif isinstance(rngs, jax.Array):
            key = rngs
        else:
            raise ValueError("SweptDropout in train mode needs rngs (a stream or a key)")
        return stock_dropout(key, inputs, self.rate.get_value(), self.broadcast_dims)


def _path(text: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def _modules(module: nnx.Module) -> dict[tuple[Any, ...], nnx.Module]:
    walk = nnx.iter_modules(module) if hasattr(nnx, "iter_modules") else module.iter_modules()
    return {tuple(path): sub for path, sub in walk}


def _set_at(root: nnx.Module, path: tuple[Any, ...], layer: nnx.Module) -> None:
    parent = root
    for part in path[:-1]:
        parent = parent[part] if isinstance(part, int) else getattr(parent, part)
    if isinstance(path[-1], int):
        parent[path[-1]] = layer
    else:
        setattr(parent, path[-1], layer)


def _targets(found: dict, name: str, where: str | Sequence[str], owner: str) -> list[tuple]:
    dropouts = sorted(".".join(map(str, p)) for p, m in found.items() if isinstance(m, nnx.Dropout))
    if where == "*":
        if not dropouts:
            raise ValueError(f"rates[{name!r}] = '*', but {owner} has no nnx.Dropout")
        return [_path(p) for p in dropouts]
    paths = [where] if isinstance(where, str) else list(where)
    for text in paths:
        if not isinstance(found.get(_path(text)), nnx.Dropout):
            raise ValueError(
                f"rates[{name!r}]: {text!r} is not an nnx.Dropout of {owner}; "
                f"its nnx.Dropout layers are {dropouts}"
            )
    return [_path(p) for p in paths]


def swap_stock_dropouts(module: nnx.Module, rates: Mapping[str, str | Sequence[str]]) -> nnx.Module:
    """A copy of ``module`` whose named ``nnx.Dropout`` layers are :class:`SweptDropout`.

    Args:
      module: an NNX module.
      rates: hyperparameter name -> attribute path(s) (``"dropout"``,
        ``"blocks.0.drop"``) or ``"*"`` (every ``nnx.Dropout``).

    Returns:
      The copy (``module`` itself is unchanged).

    Example:
      >>> net = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.1))
      >>> swapped = swap_stock_dropouts(net, {"dropout_rate": "*"})
      >>> type(swapped.layers[1]).__name__, type(net.layers[1]).__name__
      ('SweptDropout', 'Dropout')
    """
    if not isinstance(rates, Mapping):
        raise TypeError(f"rates must be a mapping of names to paths, got {type(rates).__name__}")
    copy = nnx.clone(module)
    found = _modules(copy)
    owner = type(module).__name__
    for name, where in rates.items():
        if not isinstance(name, str):
            raise TypeError(f"rates keys must be hyperparameter names (str), got {name!r}")
        for path in _targets(found, name, where, owner):
            _set_at(copy, path, SweptDropout(found[path], hparam=name))
    return copy


def linen_dropout_interceptor(
    rates: Mapping[str, Any] | None, rate_of: Callable[[Any], str | None]
) -> Callable:
    """A ``flax.linen.intercept_methods`` interceptor that runs ``linen.Dropout`` on data.

    A ``linen.Dropout`` call whose rate is data — ``rates[rate_of(module)]`` when that name
    is set, or the module's own ``rate`` when it is traced (``Net(rate=hparams["r"])``) — is
    computed by :func:`stock_dropout` (same RNG stream and mask as Linen's); a layer with a
    written, concrete rate runs Linen's own code.

    Example:
      >>> import flax.linen as nn
      >>> layer = nn.Dropout(0.5, deterministic=False)
      >>> x, rngs = jnp.ones((2, 4)), {"dropout": jax.random.key(0)}
      >>> with nn.intercept_methods(linen_dropout_interceptor({"r": 0.0}, lambda m: "r")):
      ...     y = layer.apply({}, x, rngs=rngs)
      >>> bool((y == x).all())
      True
    """
    import flax.linen as nn

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not isinstance(module, nn.Dropout) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        name = rate_of(module)
        rate = rates[name] if rates is not None and name is not None and name in rates else None
        if rate is None and not is_traced(module.rate):
            return next_fun(*args, **kwargs)  # a written, concrete rate: Linen's own code
        rate = module.rate if rate is None else rate
        inputs, *rest = args  # linen.Dropout.__call__(inputs, deterministic=None, rng=None)
        called = kwargs.get("deterministic", rest[0] if rest else None)
        if nn.merge_param("deterministic", module.deterministic, called):
            return inputs
        key = kwargs.get("rng", rest[1] if len(rest) > 1 else None)
        key = module.make_rng(module.rng_collection) if key is None else key
        return stock_dropout(key, inputs, rate, module.broadcast_dims)

    return interceptor
