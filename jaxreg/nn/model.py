"""The one model type: ``Model(apply, params, state)``, pure functions of arrays.

Every training and analysis routine of jaxreg needs the model as a pure
function of arrays. Two forms are accepted everywhere:

* a plain ``apply(params, x, *, key=None, train=False) -> outputs`` (no
  non-parameter state), as :func:`jaxreg.nn.functional` returns;
* a :class:`Model`, whose ``apply(params, state, x, *, key=None, train=False,
  hparams=None) -> (outputs, new_state)`` also carries non-parameter state
  (BatchNorm running statistics) and reads hyperparameters (dropout rates)
  at call time. :func:`jaxreg.nn.from_nnx`, :func:`jaxreg.nn.from_linen` and
  :func:`jaxreg.nn.from_equinox` (:mod:`jaxreg.nn.bridges`) build one from each framework.

``params`` holds only what is trained: the leaves that gradients, penalties,
masks, sharpness and landscape functions see. ``state`` is updated in train
mode (``new_state``) and used as is in eval mode; it is never differentiated
or perturbed. Analysis runs in eval mode on the trained state through
:meth:`Model.bind`, which gives back the plain ``apply`` form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import chex
import jax

from jaxreg.calling import keywords_of

__all__ = ["Apply", "Model", "StatefulApply", "as_model"]

Hparams = Mapping[str, Any]


class Apply(Protocol):
    """A model as a pure function of its parameters.

    Example:
      >>> def linear(params, x, *, key=None, train=False):  # any such function is an Apply
      ...     return x @ params["w"]
      >>> linear({"w": jnp.ones((3, 2))}, jnp.ones((4, 3))).shape
      (4, 2)
      >>> from jaxreg.nn import MLP, from_nnx, functional
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
      >>> from jaxreg.nn import MLP, from_nnx, functional
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
      >>> from jaxreg.nn import ResNet1D, from_nnx
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


# A framework's module class (by the module that defines its base) -> the bridge to use.
_BRIDGES = {
    "flax.nnx": "jaxreg.nn.from_nnx(module)",
    "flax.linen": "jaxreg.nn.from_linen(module, variables)",
    "equinox": "jaxreg.nn.from_equinox(module, state)",
}


def _refuse_framework_module(model: object) -> None:
    """A module object is not ``apply(params, x, ...)``: say which bridge turns it into one."""
    if type(model).__name__ == "Partial":  # equinox.Partial is a Module and a plain function
        return
    for base in type(model).__mro__:
        for framework, bridge in _BRIDGES.items():
            if base.__module__.startswith(framework) and base.__name__ == "Module":
                raise TypeError(
                    f"model is a {framework} module ({type(model).__name__}), not "
                    f"apply(params, x, ...): wrap it with {bridge}"
                )


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
    _refuse_framework_module(apply)
    takes_hparams = "hparams" in keywords_of(apply)

    def stateful(params, state, x, *, key=None, train=False, hparams=None):
        extra = {"hparams": hparams} if takes_hparams else {}
        return apply(params, x, key=key, train=train, **extra), state

    return Model(stateful, params, {})
