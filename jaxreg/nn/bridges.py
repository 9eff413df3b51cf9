"""Bridges from Flax NNX, Flax Linen and Equinox models to one :class:`~jaxreg.nn.Model`.

Training, sweeps, ensembles and analysis in jaxreg take a model as pure
functions (:mod:`jaxreg.nn.model`). Each bridge gives the same contract:
``params`` (what is trained), ``state`` (BatchNorm statistics, updated in train
mode) and ``apply(params, state, x, *, key, train, hparams) -> (outputs,
new_state)``, for models written as each framework's documentation writes them:
:func:`from_nnx` for NNX modules (mode by NNX's own attributes, held RNG streams
re-keyed per call, stock ``nnx.Dropout`` rates swept through ``rates``),
:func:`from_linen` (``linen.Dropout`` intercepted, rates by layer name or a builder)
and :func:`from_equinox` (declared ``fields`` set with ``eqx.tree_at``);
:func:`functional` gives an NNX module's plain ``apply`` and params.

Equinox is an optional dependency (``pip install 'jaxreg[equinox]'``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.calling import takes
from jaxreg.nn.dropout import DropoutRate, check_rate
from jaxreg.nn.model import Apply, Model, StatefulApply
from jaxreg.nn.stock import linen_dropout_interceptor, swap_stock_dropouts

__all__ = [
    "call_keywords",
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


def call_keywords(module: nnx.Module) -> tuple[str, ...]:
    """How :func:`from_nnx` calls ``module``: the class attribute ``call_keywords``.

    ``("train", "rngs")`` declares jaxreg's convention, ``module(x, train=..., rngs=...)``
    (every model in :mod:`jaxreg.nn`); none (the default) means the module is called as
    the Flax docs write it, ``module(x)``, with its mode set through its attributes.

    Example:
      >>> from jaxreg.nn import MLP
      >>> rngs = nnx.Rngs(0)
      >>> call_keywords(MLP((2, 3), rngs=rngs)), call_keywords(nnx.Linear(2, 3, rngs=rngs))
      (('train', 'rngs'), ())
    """
    keywords = tuple(getattr(type(module), "call_keywords", ()))
    if keywords not in ((), ("train", "rngs")):
        raise ValueError(
            f"{type(module).__name__}.call_keywords must be () or ('train', 'rngs'), "
            f"got {keywords!r}"
        )
    if not keywords and "train" in inspect.signature(type(module).__call__).parameters:
        # Never guessed: a `train` argument nobody declared would silently stay False.
        raise TypeError(
            f"{type(module).__name__}.__call__ takes `train`, but from_nnx calls a module as "
            "module(x) and sets its mode through deterministic/use_running_average "
            "attributes. Declare jaxreg's convention on the class, call_keywords = "
            "('train', 'rngs') (then __call__(x, *, train, rngs)), or drop the argument"
        )
    return keywords


def _check_hparam_rates(hparams: Hparams, names: frozenset[str]) -> None:
    for name in sorted(names):
        if name in hparams:
            check_rate(hparams[name], f"hparams[{name!r}]")


def _rate_names(rates: nnx.State) -> frozenset[str]:
    leaves = jax.tree.leaves(rates, is_leaf=_is_variable)
    return frozenset(
        name
        for v in leaves
        if isinstance(v, nnx.Variable) and (name := v.get_metadata().get("hparam")) is not None
    )


def _is_variable(value: Any) -> bool:
    return isinstance(value, nnx.Variable)


def from_nnx(
    module: nnx.Module, *, rates: Mapping[str, str | Sequence[str]] | None = None
) -> Model:
    """Split an NNX module into a :class:`Model`: pure ``apply``, ``params`` and ``state``.

    ``params`` is a plain nested dict of the module's ``nnx.Param`` arrays;
    ``state`` holds every other variable that can change (``nnx.BatchStat``
    running statistics, ...) as a plain dict; RNG streams are not state (they are
    re-keyed at every call). In train mode ``apply`` returns the updated state
    (BatchNorm: new running averages).

    Two ways of writing a module are driven (see :func:`call_keywords`):

    * **as the Flax docs write it** — ``__call__(self, x)``, with ``nnx.Dropout``
      and ``nnx.BatchNorm`` switched by NNX's own mode attributes. ``apply(...,
      train=t)`` sets ``deterministic=not t`` and ``use_running_average=not t`` on
      every submodule that has them (what ``model.train()``/``model.eval()`` do),
      and the RNG streams the module holds (``nnx.Rngs``) are re-keyed from the
      call's ``key`` (the i-th stream gets ``fold_in(key, i)``), so the same key
      gives the same masks and members of a ``vmap`` over keys independent ones;
    * **jaxreg's convention** — ``__call__(x, *, train, rngs)``, declared by the class
      attribute ``call_keywords = ("train", "rngs")`` (all models in :mod:`jaxreg.nn`):
      the key arrives as ``rngs=nnx.Rngs(dropout=key)``.

    Dropout rates are data. jaxreg's dropout layers (:class:`~jaxreg.nn.DropoutRate`)
    answer to ``hparams`` by their name; stock ``nnx.Dropout`` layers answer to the
    names ``rates`` gives them, so ``apply(..., hparams={"dropout_rate": r})`` with a
    traced ``r`` sweeps the rate with one compile (a rate of 0 is the identity).

    Args:
      module: an NNX module.
      rates: hyperparameter name -> the attribute path(s) of the stock
        ``nnx.Dropout`` layers it sets (``"dropout"``, ``"blocks.0.dropout"``), or
        ``"*"`` for every ``nnx.Dropout`` in the module. A path that reaches no
        ``nnx.Dropout`` raises ``ValueError``.

    Returns:
      A :class:`Model`.

    Example:
      >>> class Net(nnx.Module):  # as the Flax NNX tutorials write a model
      ...     def __init__(self, rngs):
      ...         self.linear = nnx.Linear(4, 3, rngs=rngs)
      ...         self.dropout = nnx.Dropout(0.2, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.dropout(self.linear(x))
      >>> model = from_nnx(Net(nnx.Rngs(0)), rates={"dropout_rate": "dropout"})
      >>> sorted(model.hparam_names)
      ['dropout_rate']
      >>> out, _ = model.apply(model.params, model.state, jnp.ones((2, 4)),
      ...                      key=jax.random.key(0), train=True, hparams={"dropout_rate": 0.5})
      >>> out.shape
      (2, 3)
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
    keywords = call_keywords(module)
    if rates:
        module = swap_stock_dropouts(module, rates)
    graphdef, params, rate_state, rng_state, state = nnx.split(
        module, nnx.Param, DropoutRate, nnx.RngState, ...
    )
    names = _rate_names(rate_state)
    if not keywords and names and not rates:
        raise TypeError(
            f"{type(module).__name__} holds jaxreg dropout layers, which take train= and "
            "rngs= at call time; declare its convention on the class: "
            "call_keywords = ('train', 'rngs')"
        )
    # Streams as a pure dict: merge then builds fresh variables inside each trace, which
    # NNX requires before a stream's count can advance there.
    streams = _to_pure_dict(rng_state)
    parts = _Parts(graphdef, rate_state, streams, names, keywords, type(module).__name__)
    return Model(_nnx_apply(parts), _to_pure_dict(params), _to_pure_dict(state), names)


class _Parts(NamedTuple):
    graphdef: Any
    rates: nnx.State
    rngs: dict
    names: frozenset[str]
    keywords: tuple[str, ...]
    module_name: str


_MUTABLE = nnx.Not(nnx.Any(nnx.Param, DropoutRate, nnx.RngState))


def _nnx_apply(parts: _Parts) -> StatefulApply:
    has_streams = bool(jax.tree.leaves(parts.rngs))

    def apply(
        params: chex.ArrayTree,
        state: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        if train and key is None and has_streams and not parts.keywords:
            raise ValueError(
                f"{parts.module_name} draws random numbers in train mode: pass key= "
                "(fit and sweeps do)"
            )
        streams = parts.rngs if key is None else _keyed_streams(parts.rngs, key)
        rates = parts.rates
        if hparams:  # the swept rates meet the layers here: each DropoutRate its named value
            _check_hparam_rates(hparams, parts.names)
            rates = jax.tree.map(
                lambda v: (
                    v.replace(jnp.asarray(hparams[v.get_metadata()["hparam"]], jnp.float32))
                    if v.get_metadata().get("hparam") in hparams
                    else v
                ),
                rates,
                is_leaf=_is_variable,
            )
        model = nnx.merge(parts.graphdef, params, rates, streams, state)
        outputs = _call_module(model, x, parts, key=key, train=train)
        if not train:
            return outputs, state
        return outputs, _to_pure_dict(nnx.state(model, _MUTABLE))

    return apply


def _call_module(model: nnx.Module, x: jax.Array, parts: _Parts, *, key, train: bool):
    if parts.keywords:
        rngs = None if key is None else nnx.Rngs(dropout=key)
        return model(x, train=train, rngs=rngs)
    model.set_attributes(
        deterministic=not train, use_running_average=not train, raise_if_not_found=False
    )
    try:
        return model(x)
    except ValueError as error:
        if not train or "no `rngs`" not in str(error):
            raise
        raise ValueError(
            f"a dropout layer of {parts.module_name} has no RNG stream the call's key can "
            "re-key: build it with the module's streams (nnx.Dropout(rate, rngs=rngs)), as "
            "the Flax docs do"
        ) from error
    except TypeError as error:
        if "__call__" not in str(error):
            raise
        raise TypeError(
            f"from_nnx calls {parts.module_name} as module(x), with train/eval set by its "
            "deterministic/use_running_average attributes; its __call__ needs more "
            f"({error}). Give it defaults, or declare jaxreg's convention "
            "call_keywords = ('train', 'rngs') on the class"
        ) from error


def _keyed_streams(streams: dict, key: jax.Array) -> dict:
    """Every RNG stream re-keyed from ``key`` (the i-th gets ``fold_in(key, i)``, count 0).

    ``streams`` is a pure dict: its key leaves have a PRNG-key dtype, its counts do not.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    leaves, treedef = jax.tree.flatten(streams)
    keyed, index = [], 0
    for leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            keyed.append(jax.random.fold_in(key, index))
            index += 1
        else:
            keyed.append(jnp.zeros_like(leaf))
    return jax.tree.unflatten(treedef, keyed)


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
      model: an NNX module, driven as :func:`from_nnx` drives it (stock, or in
        jaxreg's ``call_keywords`` convention).

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
    rates: Mapping[str, str | Sequence[str]] | None = None,
) -> Model:
    """Wrap a Flax Linen module and its variables as a :class:`~jaxreg.nn.Model`.

    ``variables["params"]`` become ``params``; every other collection
    (``batch_stats``, ...) becomes ``state`` and is mutable in train mode.
    Stock ``linen.Dropout`` layers run with their rate as data (through
    ``flax.linen.intercept_methods``, :func:`jaxreg.nn.linen_dropout_interceptor`):
    the same key gives Linen's own mask, and a swept rate reaches them either
    through ``rates`` or through a builder ``hparams -> module`` — no rewrite
    of the layer, one compile for the whole sweep.

    Args:
      module: a ``flax.linen.Module`` whose ``__call__(x, **{train_kwarg: bool})``
        switches train/eval mode (e.g. ``nn.BatchNorm(use_running_average=not
        train)``, ``nn.Dropout(deterministic=not train)``), or a function
        ``hparams -> module`` (``lambda h: Net(rate=h["dropout_rate"])``).
      variables: the output of ``module.init(...)``.
      train_kwarg: name of the call's train/eval switch (None: not passed).
      rng_collection: the RNG stream the key is given as (dropout).
      rates: hyperparameter name -> the ``name`` of the ``linen.Dropout`` layers
        it sets (``"Dropout_0"``, a name given in the module) or ``"*"`` (every
        one). A name that reaches no ``linen.Dropout`` call raises ``ValueError``
        when the model is first called.

    Returns:
      A :class:`~jaxreg.nn.Model`.

    Example:
      >>> import flax.linen as nn
      >>> class Net(nn.Module):
      ...     rate: float = 0.1
      ...     @nn.compact
      ...     def __call__(self, x, train=False):
      ...         x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
      ...         x = nn.Dropout(self.rate, deterministic=not train)(nn.relu(x))
      ...         return nn.Dense(3)(x)
      >>> net = Net()
      >>> model = from_linen(net, net.init(jax.random.key(0), jnp.ones((1, 4))),
      ...                    rates={"dropout_rate": "*"})
      >>> out, state = model.apply(model.params, model.state, jnp.ones((2, 4)),
      ...     key=jax.random.key(1), train=True, hparams={"dropout_rate": jnp.float32(0.3)})
      >>> sorted(model.state), out.shape, sorted(model.hparam_names)
      (['batch_stats'], (2, 3), ['dropout_rate'])
    """
    import flax.linen as nn
    from flax.core import unfreeze

    if not isinstance(module, nn.Module) and not callable(module):
        raise TypeError("module must be a flax.linen.Module or a function hparams -> one")
    variables = dict(unfreeze(variables))
    if "params" not in variables:
        raise ValueError(f"variables must have a 'params' collection, got {sorted(variables)}")
    params = variables.pop("params")
    targets = _linen_targets(rates)

    def apply(
        params: chex.ArrayTree,
        state: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]:
        net = (
            module if isinstance(module, nn.Module) else module({} if hparams is None else hparams)
        )
        call = dict(rngs=None if key is None else {rng_collection: key})
        if train_kwarg is not None:
            call[train_kwarg] = train
        mutable = sorted(state) if train and state else False
        reached: set[str] = set()
        rate_of = _linen_rate_of(targets, reached)
        with nn.intercept_methods(linen_dropout_interceptor(hparams, rate_of)):
            result = net.apply({"params": params, **state}, x, mutable=mutable, **call)
        _check_reached(targets, reached)
        if not mutable:
            return result, state
        outputs, updates = result
        return outputs, {**state, **unfreeze(updates)}

    return Model(apply, params, variables, frozenset(targets))


def _linen_targets(rates: Mapping[str, str | Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    if rates is None:
        return {}
    if not isinstance(rates, Mapping):
        raise TypeError(
            f"rates must be a mapping of names to layer names, got {type(rates).__name__}"
        )
    return {
        name: (where,) if isinstance(where, str) else tuple(where) for name, where in rates.items()
    }


def _linen_rate_of(targets: dict[str, tuple[str, ...]], reached: set[str]) -> Callable:
    def rate_of(layer) -> str | None:
        for name, layers in targets.items():
            if "*" in layers or layer.name in layers:
                reached.add(name)
                return name
        return None

    return rate_of


def _check_reached(targets: dict[str, tuple[str, ...]], reached: set[str]) -> None:
    missing = sorted(set(targets) - reached)
    if missing:
        raise ValueError(
            f"rates {missing} reached no linen.Dropout call; name the layers as the module "
            f"does (e.g. 'Dropout_0', or name='...'), or '*' for all: {dict(targets)}"
        )


def from_equinox(
    module: Any,
    state: Any = None,
    *,
    batched: bool = False,
    axis_name: str = "batch",
    fields: Mapping[str, Callable[[Any], Any]] | None = None,
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
      fields: hyperparameter name -> ``where``, a function of the module giving
        the field(s) the value sets, as :func:`equinox.tree_at` takes it
        (``lambda m: m.dropout.p``; a tuple for several). Applied at every call,
        so a traced rate sweeps ``eqx.nn.Dropout.p`` (or any float field) with
        one compile. A ``where`` that reaches nothing raises ``ValueError`` here.

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
    fields = _equinox_fields(module, fields)
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
        net = _set_fields(eqx.combine(params, static), fields, hparams)
        net = eqx.nn.inference_mode(net, value=not train)
        if stateful:
            # Equinox marks a State as spent once an eager call reads it; a pure apply may
            # be called with the same state again, so it reads a clone (Equinox's recipe).
            state = jax.tree.unflatten(*reversed(jax.tree.flatten(state)))
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

    return Model(apply, params, state if stateful else {}, frozenset(fields))


def _equinox_fields(module: Any, fields: Mapping[str, Callable] | None) -> dict[str, Callable]:
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping of names to functions, got {fields!r}")
    for name, where in fields.items():
        if not callable(where):
            raise TypeError(f"fields[{name!r}] must be a function of the module, got {where!r}")
        try:
            where(module)
        except (AttributeError, IndexError, KeyError, TypeError) as error:
            raise ValueError(
                f"fields[{name!r}] reaches nothing in {type(module).__name__}: {error}"
            ) from error
    return dict(fields)


def _set_fields(net: Any, fields: dict[str, Callable], hparams: Hparams | None) -> Any:
    import equinox as eqx

    for name, where in fields.items():
        if hparams is None or name not in hparams:
            continue
        value = jnp.asarray(hparams[name], jnp.float32)
        nodes = where(net)
        several = isinstance(nodes, tuple | list)
        replace = tuple(value for _ in nodes) if several else value
        net = eqx.tree_at(where, net, replace=replace, is_leaf=lambda x: x is None)
    return net
