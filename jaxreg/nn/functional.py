"""A model as pure functions: ``Model(apply, params, state)``, and the bridge from Flax NNX.

Every training and analysis routine of jaxreg needs the model as a pure
function of arrays. Two forms are accepted everywhere:

* a plain ``apply(params, x, *, key=None, train=False) -> outputs`` (no
  non-parameter state), as :func:`functional` returns;
* a :class:`Model`, whose ``apply(params, state, x, *, key=None, train=False,
  hparams=None) -> (outputs, new_state)`` also carries non-parameter state
  (BatchNorm running statistics) and reads hyperparameters (dropout rates)
  at call time. :func:`from_nnx` builds one from an NNX module;
  :func:`jaxreg.nn.from_linen` and :func:`jaxreg.nn.from_equinox` from the
  other frameworks.

``params`` holds only what is trained: the leaves that gradients, penalties,
masks, sharpness and landscape functions see. ``state`` is updated in train
mode (``new_state``) and used as is in eval mode; it is never differentiated
or perturbed. Analysis runs in eval mode on the trained state through
:meth:`Model.bind`, which gives back the plain ``apply`` form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.calling import keywords_of, takes
from jaxreg.nn.dropout import DropoutRate, check_rate

__all__ = [
    "Apply",
    "Model",
    "StatefulApply",
    "as_model",
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


class Apply(Protocol):
    """A model as a pure function of its parameters.

    Example:
      >>> def linear(params, x, *, key=None, train=False):  # any such function is an Apply
      ...     return x @ params["w"]
      >>> linear({"w": jnp.ones((3, 2))}, jnp.ones((4, 3))).shape
      (4, 2)
      >>> from jaxreg.nn import MLP
      >>> apply, params = functional(MLP((3, 8, 2), dropout_rate=0.5, rngs=nnx.Rngs(0)))
      >>> apply(params, jnp.ones((4, 3)), key=jax.random.key(0), train=True).shape
      (4, 2)
    """

    def __call__(
        self,
        params: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array: ...


class StatefulApply(Protocol):
    """A model as a pure function of parameters, non-parameter state and hyperparameters.

    Example:
      >>> from jaxreg.nn import MLP
      >>> model = from_nnx(MLP((3, 8, 2), dropout_rate=0.5, rngs=nnx.Rngs(0)))
      >>> logits, state = model.apply(model.params, model.state, jnp.ones((4, 3)),
      ...     key=jax.random.key(0), train=True, hparams={"dropout_rate": 0.1})
      >>> logits.shape, state == model.state  # an MLP has no BatchNorm statistics to update
      ((4, 2), True)
    """

    def __call__(
        self,
        params: chex.ArrayTree,
        state: chex.ArrayTree,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        hparams: Hparams | None = None,
    ) -> tuple[jax.Array, chex.ArrayTree]: ...


@dataclass(frozen=True)
class Model:
    """A model as pure functions plus its initial arrays.

    Attributes:
      apply: ``apply(params, state, x, *, key=None, train=False, hparams=None)
        -> (outputs, new_state)``. In eval mode ``new_state`` is ``state``.
      params: trainable parameters (a pytree; the only leaves that are
        differentiated, penalized, masked or perturbed).
      state: non-parameter state such as BatchNorm statistics (``{}`` if none).
      hparam_names: the hyperparameter names ``apply`` reads from ``hparams``
        (e.g. ``{"dropout_rate"}``).

    Example:
      >>> from jaxreg.nn import ResNet1D
      >>> model = from_nnx(ResNet1D(rngs=nnx.Rngs(0)))
      >>> x = jnp.ones((4, 40))
      >>> logits, new_state = model.apply(model.params, model.state, x, train=True)
      >>> logits.shape, model.bind()(model.params, x).shape   # bind: eval mode, plain apply
      ((4, 10), (4, 10))
    """

    apply: StatefulApply
    params: chex.ArrayTree
    state: chex.ArrayTree = field(default_factory=dict)
    hparam_names: frozenset[str] = frozenset()

    @property
    def has_state(self) -> bool:
        """Whether the model carries any non-parameter state leaf."""
        return bool(jax.tree.leaves(self.state))

    def bind(self, state: chex.ArrayTree | None = None, hparams: Hparams | None = None) -> Apply:
        """A plain ``apply(params, x, *, key=None, train=False)`` with ``state`` held fixed.

        This is the form analysis functions take (through
        :func:`jaxreg.losses.classification_loss`); state updates a train-mode
        call would make are discarded.
        """
        fixed = self.state if state is None else state

        def apply(
            params: chex.ArrayTree,
            x: jax.Array,
            *,
            key: jax.Array | None = None,
            train: bool = False,
        ) -> jax.Array:
            return self.apply(params, fixed, x, key=key, train=train, hparams=hparams)[0]

        return apply


def as_model(apply: Apply | Model, params: chex.ArrayTree | None = None) -> Model:
    """Wrap a plain ``apply(params, x, *, key=None, train=False)`` as a stateless :class:`Model`.

    A :class:`Model` is returned unchanged. An ``apply`` declared with
    :func:`jaxreg.calling.takes` ``("hparams")`` (as :func:`functional`'s is) receives the
    mapping; any other is called without it.

    Example:
      >>> model = as_model(lambda p, x, **kw: x @ p, jnp.eye(2))
      >>> model.apply(model.params, {}, jnp.ones((1, 2)))[0].tolist()
      [[1.0, 1.0]]
    """
    if isinstance(apply, Model):
        return apply
    if not callable(apply):
        raise TypeError(
            f"apply must be a callable or a jaxreg.nn.Model, got {type(apply).__name__}"
        )
    takes_hparams = "hparams" in keywords_of(apply)

    def stateful(params, state, x, *, key=None, train=False, hparams=None):
        extra = {"hparams": hparams} if takes_hparams else {}
        return apply(params, x, key=key, train=train, **extra), state

    return Model(stateful, params, {})


def _check_hparam_rates(hparams: Hparams, names: frozenset[str]) -> None:
    for name in sorted(names):
        if name in hparams:
            check_rate(hparams[name], f"hparams[{name!r}]")


def _with_rates(rates: nnx.State, hparams: Hparams) -> nnx.State:
    """``rates`` with every :class:`DropoutRate` named in ``hparams`` set to its value."""

    def replace(variable):
        name = variable.get_metadata().get("hparam") if isinstance(variable, DropoutRate) else None
        if name is None or name not in hparams:
            return variable
        return variable.replace(jnp.asarray(hparams[name], jnp.float32))

    return jax.tree.map(replace, rates, is_leaf=lambda v: isinstance(v, nnx.Variable))


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
            chosen = _with_rates(rates, hparams)
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
