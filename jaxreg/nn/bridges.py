"""Bridges from Flax NNX, Flax Linen and Equinox models to one :class:`~jaxreg.nn.Model`.

Training, sweeps, ensembles and analysis in jaxreg take a model as pure
functions (:mod:`jaxreg.nn.model`). Each bridge gives the same contract:
``params`` (what is trained), ``state`` (BatchNorm statistics, updated in train
mode) and ``apply(params, state, x, *, key, train, hparams) -> (outputs,
new_state)``. :func:`from_nnx` is for NNX modules (dropout rates answer to
``hparams`` by name), :func:`from_linen` and :func:`from_equinox` for the other
frameworks; :func:`functional` gives an NNX module's plain ``apply`` and params.

Equinox is an optional dependency (``pip install 'jaxreg[equinox]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.calling import takes
from jaxreg.nn.dropout import DropoutRate, check_rate
from jaxreg.nn.model import Apply, Model

__all__ = [
    "from_equinox",
    "from_linen",
    "from_nnx",
    "functional",
    "init_model",
    "init_params",
]

Hparams = Mapping[str, Any]


def _to_pure_dict(state: nnx.State) -> dict:
    if hasattr(nnx, "to_pure_dict"):
        return nnx.to_pure_dict(state)
    return state.to_pure_dict()  # flax < 0.12


def _check_hparam_rates(hparams: Hparams, names: frozenset[str]) -> None:
    for name in sorted(names):
        if name in hparams:
            check_rate(hparams[name], f"hparams[{name!r}]")


def from_nnx(module: nnx.Module) -> Model:
    """Split an NNX module into a :class:`Model`: pure ``apply``, ``params`` and ``state``.

    ``params`` is a plain nested dict of the module's ``nnx.Param`` arrays;
    ``state`` holds every other variable that can change (``nnx.BatchStat``
    running statistics, ...) as a plain dict; dropout rates
    (:class:`~jaxreg.nn.DropoutRate`) stay inside the model and answer to
    ``hparams`` by name, so ``apply(..., hparams={"dropout_rate": r})`` with a
    traced ``r`` sweeps the rate with one compile. In train mode ``apply``
    returns the updated state (BatchNorm: new running averages).

    Args:
      module: an NNX module whose ``__call__(x, *, train, rngs)`` follows the
        jaxreg model convention (all models in :mod:`jaxreg.nn` do). The
        dropout key arrives at call time as ``rngs=nnx.Rngs(dropout=key)``.

    Returns:
      A :class:`Model`.

    Example:
      >>> from jaxreg.nn import MLP
      >>> model = from_nnx(MLP((4, 8, 3), dropout_rate=0.0, rngs=nnx.Rngs(0)))
      >>> sorted(model.hparam_names)
      ['dropconnect_rate', 'dropout_rate']
      >>> out, _ = model.apply(model.params, model.state, jnp.ones((2, 4)),
      ...                      key=jax.random.key(0), train=True, hparams={"dropout_rate": 0.5})
      >>> out.shape
      (2, 3)
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
    graphdef, params, rates, state = nnx.split(module, nnx.Param, DropoutRate, ...)
    rate_leaves = jax.tree.leaves(rates, is_leaf=lambda v: isinstance(v, nnx.Variable))
    names = frozenset(
        name
        for v in rate_leaves
        if isinstance(v, nnx.Variable) and (name := v.get_metadata().get("hparam")) is not None
    )
    mutable = nnx.Not(nnx.Any(nnx.Param, DropoutRate))

    def apply(
        params: chex.ArrayTree,
        state: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        chosen = rates
        if hparams:
            _check_hparam_rates(hparams, names)
            chosen = jax.tree.map(
                lambda v: (
                    v.replace(jnp.asarray(hparams[v.get_metadata()["hparam"]], jnp.float32))
                    if v.get_metadata().get("hparam") in hparams
                    else v
                ),
                rates,
                is_leaf=lambda v: isinstance(v, nnx.Variable),
            )
        model = nnx.merge(graphdef, params, chosen, state)
        rngs = None if key is None else nnx.Rngs(dropout=key)
        outputs = model(x, train=train, rngs=rngs)
        if not train:
            return outputs, state
        return outputs, _to_pure_dict(nnx.state(model, mutable))

    return Model(apply, _to_pure_dict(params), _to_pure_dict(state), names)


def functional(model: nnx.Module) -> tuple[Apply, dict]:
    """Split an NNX module into a plain ``apply`` and its trainable parameters.

    ``params`` is a plain nested dict of the module's ``nnx.Param`` arrays, so it
    can be vmapped, differentiated, penalized and checkpointed like any pytree.
    Non-parameter state (e.g. BatchNorm statistics) is held fixed inside
    ``apply``: to *train* such a model, use :func:`from_nnx` and pass the
    :class:`Model` to :func:`jaxreg.fit`. The dropout key arrives at call time:
    ``apply(params, x, key=k, train=True)``; a ``vmap`` over keys gives each
    member its own mask. ``apply`` also takes ``hparams`` (dropout rates by name).

    Args:
      model: an NNX module whose ``__call__(x, *, train, rngs)`` follows the
        jaxreg model convention (all models in :mod:`jaxreg.nn` do).

    Returns:
      ``(apply, params)``.

    Example:
      >>> from jaxreg.nn import MLP
      >>> apply, params = functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))
      >>> apply(params, jnp.ones((2, 4))).shape
      (2, 3)
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    split = from_nnx(model)

    @takes("hparams")
    def apply(
        params: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> jax.Array:
        return split.apply(params, split.state, x, key=key, train=train, hparams=hparams)[0]

    return apply, split.params


def _check_keys(keys: jax.Array) -> None:
    if keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of keys, got shape {keys.shape}")


def init_params(
    make_model: Callable[[nnx.Rngs], nnx.Module], keys: jax.Array
) -> tuple[Apply, dict]:
    """Initialise a stack of models, one per key, as ``(apply, params with leading axis)``.

    Example:
      >>> from jaxreg.nn import MLP
      >>> make = lambda rngs: MLP((4, 8, 3), rngs=rngs)
      >>> apply, params = init_params(make, jax.random.split(jax.random.key(0), 5))
      >>> params["layers"][0]["kernel"].shape
      (5, 4, 8)
    """
    _check_keys(keys)
    apply, _ = functional(make_model(nnx.Rngs(params=keys[0])))
    params = jax.vmap(lambda k: functional(make_model(nnx.Rngs(params=k)))[1])(keys)
    return apply, params


def init_model(make_model: Callable[[nnx.Rngs], nnx.Module], keys: jax.Array) -> Model:
    """Initialise a stack of NNX models, one per key, as a :class:`Model` with a leading axis.

    ``params`` and ``state`` both gain the leading member axis, ready for
    ``jax.vmap`` over :func:`jaxreg.fit`, ensembles or sweeps.

    Example:
      >>> from jaxreg.nn import ResNet1D
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> model = init_model(lambda rngs: ResNet1D(rngs=rngs), keys)
      >>> model.params["head"]["kernel"].shape, model.state["stem_bn"]["mean"].shape
      ((3, 64, 10), (3, 32))
    """
    _check_keys(keys)
    template = from_nnx(make_model(nnx.Rngs(params=keys[0])))

    def arrays(k):
        split = from_nnx(make_model(nnx.Rngs(params=k)))
        return split.params, split.state

    params, state = jax.vmap(arrays)(keys)
    return Model(template.apply, params, state, template.hparam_names)


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
