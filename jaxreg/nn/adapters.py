"""Adapters from Flax Linen and Equinox models to a :class:`~jaxreg.nn.Model`.

Training, sweeps, ensembles and analysis in jaxreg take a model as pure
functions (:mod:`jaxreg.nn.functional`); these adapters give Linen and
Equinox users the same contract NNX models get from
:func:`~jaxreg.nn.from_nnx`: ``params`` (what is trained), ``state``
(BatchNorm statistics, updated in train mode) and ``apply(params, state, x,
*, key, train, hparams) -> (outputs, new_state)``.

Equinox is an optional dependency (``pip install 'jaxreg[equinox]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import chex
import jax

from jaxreg.nn.functional import Model

__all__ = ["from_equinox", "from_linen"]

Hparams = Mapping[str, Any]


def from_linen(
    module: Any,
    variables: Mapping[str, Any],
    *,
    train_kwarg: str | None = "train",
    rng_collection: str = "dropout",
) -> Model:
    """Wrap a Flax Linen module and its variables as a :class:`~jaxreg.nn.Model`.

    ``variables["params"]`` become ``params``; every other collection
    (``batch_stats``, ...) becomes ``state`` and is mutable in train mode.

    Args:
      module: a ``flax.linen.Module`` whose ``__call__(x, **{train_kwarg: bool})``
        switches train/eval mode (e.g. ``nn.BatchNorm(use_running_average=not
        train)``, ``nn.Dropout(deterministic=not train)``), or a function
        ``hparams -> module`` so that rates can be set per call (Linen modules
        are cheap dataclasses; build one with ``rate=hparams["dropout_rate"]``).
        A swept rate is traced, and ``linen.Dropout`` tests ``rate == 0`` in
        Python, so a Linen model with a swept rate draws its mask itself
        (``jax.random.bernoulli(self.make_rng("dropout"), 1 - rate, h.shape)``).
      variables: the output of ``module.init(...)``.
      train_kwarg: name of the call's train/eval switch (None: not passed).
      rng_collection: the RNG stream the key is given as (dropout).

    Returns:
      A :class:`~jaxreg.nn.Model`.

    Example:
      >>> import flax.linen as nn
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train=False):
      ...         x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
      ...         return nn.Dense(3)(nn.relu(x))
      >>> net = Net()
      >>> model = from_linen(net, net.init(jax.random.key(0), jnp.ones((1, 4))))
      >>> sorted(model.state), model.apply(model.params, model.state, jnp.ones((2, 4)))[0].shape
      (['batch_stats'], (2, 3))
    """
    import flax.linen as nn
    from flax.core import unfreeze

    if not isinstance(module, nn.Module) and not callable(module):
        raise TypeError("module must be a flax.linen.Module or a function hparams -> one")
    variables = dict(unfreeze(variables))
    if "params" not in variables:
        raise ValueError(f"variables must have a 'params' collection, got {sorted(variables)}")
    params = variables.pop("params")
    collections = sorted(variables)

    def build(hparams: Hparams | None):
        if isinstance(module, nn.Module):
            return module
        return module({} if hparams is None else hparams)

    def apply(
        params: chex.ArrayTree,
        state: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        kwargs = {} if train_kwarg is None else {train_kwarg: train}
        rngs = None if key is None else {rng_collection: key}
        net = build(hparams)
        if train and collections:
            outputs, updates = net.apply(
                {"params": params, **state}, x, rngs=rngs, mutable=collections, **kwargs
            )
            return outputs, {**state, **unfreeze(updates)}
        return net.apply({"params": params, **state}, x, rngs=rngs, **kwargs), state

    return Model(apply, params, variables)


def from_equinox(
    module: Any,
    state: Any = None,
    *,
    batched: bool = False,
    axis_name: str = "batch",
) -> Model:
    """Wrap an Equinox module as a :class:`~jaxreg.nn.Model`.

    ``params`` are the module's inexact arrays (``eqx.partition(module,
    eqx.is_inexact_array)``); everything else is held fixed. Train/eval mode
    is switched with ``eqx.nn.inference_mode`` (Dropout, BatchNorm).

    Args:
      module: an ``equinox.Module``. Equinox layers act on one example, so
        by default ``apply`` vmaps it over the batch with one key per example
        (``batched=True``: the module takes the whole batch itself).
      state: an ``eqx.nn.State`` from ``eqx.nn.make_with_state`` for models
        with BatchNorm; the module is then called as ``module(x, state,
        key=k) -> (y, state)`` and vmapped with ``axis_name`` (the name its
        BatchNorm layers were built with).
      batched: the module already takes a batch.
      axis_name: vmap axis name for batch statistics.

    Returns:
      A :class:`~jaxreg.nn.Model`.

    Example:
      >>> import equinox as eqx
      >>> mlp = eqx.nn.MLP(4, 3, 8, 1, key=jax.random.key(0))
      >>> model = from_equinox(mlp)
      >>> model.apply(model.params, model.state, jnp.ones((2, 4)))[0].shape
      (2, 3)
    """
    try:
        import equinox as eqx
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("from_equinox needs equinox: pip install 'jaxreg[equinox]'") from error
    if not isinstance(module, eqx.Module):
        raise TypeError(f"module must be an equinox.Module, got {type(module).__name__}")
    params, static = eqx.partition(module, eqx.is_inexact_array)
    stateful = state is not None

    def call(net, x, model_state, key):
        if stateful:
            return net(x, model_state, key=key)
        return net(x, key=key), model_state

    def apply(
        params: chex.ArrayTree,
        state: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        del hparams  # Equinox rates are module fields; sweep them by rebuilding under vmap
        net = eqx.nn.inference_mode(eqx.combine(params, static), value=not train)
        if batched:
            outputs, new_state = call(net, x, state if stateful else None, key)
        else:
            keys = None if key is None else jax.random.split(key, x.shape[0])
            outputs, new_state = jax.vmap(
                lambda xi, ki: call(net, xi, state if stateful else None, ki),
                in_axes=(0, None if keys is None else 0),
                out_axes=(0, None),
                axis_name=axis_name,
            )(x, keys)
        if not stateful:
            return outputs, state
        return outputs, (new_state if train else state)

    return Model(apply, params, state if stateful else {})
