"""The study's models by name: the MNIST-1D MLP that overfits, its wide variant, the CNN."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flax import nnx

from jaxreg.nn import CNN1D, MLP, functional

__all__ = ["MODELS", "model_apply"]

#: Model constructors by the name a :class:`~experiments.study.spec.Row` gives.
#:
#: Example:
#:   >>> from flax import nnx
#:   >>> from experiments.study.models import MODELS
#:   >>> sorted(MODELS), type(MODELS["mlp"](nnx.Rngs(0))).__name__
#:   (['cnn', 'mlp', 'wide_mlp'], 'MLP')
MODELS: dict[str, Callable[[nnx.Rngs], nnx.Module]] = {
    "mlp": lambda rngs: MLP((40, 100, 100, 10), rngs=rngs),
    "wide_mlp": lambda rngs: MLP((40, 512, 512, 512, 10), rngs=rngs),
    "cnn": lambda rngs: CNN1D(channels=64, rngs=rngs),
}


@functools.cache
def model_apply(model: str) -> Callable:
    """One ``apply`` per model kind, so compiled measurements are shared between rows.

    Example:
      >>> apply = model_apply("mlp")
      >>> model_apply("mlp") is apply
      True
    """
    return functional(MODELS[model](nnx.Rngs(0)))[0]
