"""What the training loop hands a callable: declared where the callable is defined, never guessed.

:func:`jaxreg.fit` calls a penalty as ``penalty(params)``, a batch transform as
``transform(key, batch)``, a loss as ``loss(outputs, labels)`` and a plain model as
``apply(params, x, key=..., train=...)``. A callable that needs more from the
step says so with :func:`takes`: the keywords it names are then passed, and only
those. jaxreg's own hyperparameter-aware pieces (the transforms in
:mod:`jaxreg.training.batch_transforms`, :func:`jaxreg.nn.functional`'s
``apply``) are declared already.

Keywords:
  ``hparams``: the run's hyperparameter mapping (e.g. a penalty reading its own
  strength, a transform its noise scale).
  ``batch``: the minibatch after the batch transform (``{"x", "y", "weight"}``), for
  input-space penalties such as :func:`jaxreg.jacobian.input_gradient_norm`.
  ``key``: a PRNG key of the penalty's own, split from the step key (e.g. R-Drop's
  dropout passes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["KEYWORDS", "Takes", "keywords_of", "takes"]

#: Every keyword the training loop can hand a callable (a penalty may take all three; a
#: batch transform, a loss or a model ``apply`` only ``hparams``).
#:
#: Example:
#:   >>> from jaxreg.calling import KEYWORDS
#:   >>> sorted(KEYWORDS)
#:   ['batch', 'hparams', 'key']
KEYWORDS = frozenset({"hparams", "batch", "key"})


def _known(keywords) -> frozenset[str]:
    """``keywords`` as a frozenset, with a ``ValueError`` for any the loop does not hand."""
    declared = frozenset(keywords)
    unknown = sorted(declared - KEYWORDS)
    if unknown:
        raise ValueError(f"unknown keyword(s) {unknown}; the loop hands {sorted(KEYWORDS)}")
    return declared


class Takes:
    """A callable with the keywords it takes from the training loop (see :func:`takes`).

    Calling it calls the wrapped function; ``keywords`` is the declaration.

    Example:
      >>> scaled = Takes(lambda params, *, hparams: hparams["s"] * params, frozenset({"hparams"}))
      >>> scaled(2.0, hparams={"s": 3.0}), sorted(scaled.keywords)
      (6.0, ['hparams'])
    """

    def __init__(self, fn: Callable, keywords: frozenset[str]):
        if not callable(fn):
            raise TypeError(f"takes() wraps a callable, got {type(fn).__name__}")
        self.fn = fn
        self.keywords = _known(keywords)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"takes({', '.join(sorted(self.keywords))})({self.fn!r})"


def takes(*keywords: str) -> Callable[[Callable], Takes]:
    """Declare which keywords a callable takes from the training loop (a decorator).

    Args:
      *keywords: any of ``"hparams"``, ``"batch"``, ``"key"`` (see the module docstring).

    Returns:
      A decorator returning a :class:`Takes`; the function itself is unchanged.

    Example:
      >>> from jaxreg import penalties
      >>> @takes("hparams")
      ... def l2_with_its_strength(params, *, hparams):
      ...     return hparams["l2_strength"] * penalties.l2(params)
      >>> sorted(keywords_of(l2_with_its_strength))
      ['hparams']
      >>> float(l2_with_its_strength(jnp.ones(2), hparams={"l2_strength": 0.5}))
      0.5
    """
    declared = _known(keywords)  # checked at the decorator, before any function is wrapped
    return lambda fn: Takes(fn, declared)


def keywords_of(fn: Callable) -> frozenset[str]:
    """The keywords ``fn`` declared with :func:`takes` (none for an undeclared callable).

    Example:
      >>> keywords_of(lambda params: 0.0)
      frozenset()
      >>> sorted(keywords_of(takes("batch", "key")(lambda params, *, batch, key: 0.0)))
      ['batch', 'key']
    """
    return fn.keywords if isinstance(fn, Takes) else frozenset()


def check_keywords(fn: Callable | None, allowed: frozenset[str], name: str) -> frozenset[str]:
    """``keywords_of(fn)``, with a ``ValueError`` naming ``name`` for a keyword it cannot get."""
    if fn is None:
        return frozenset()
    keywords = keywords_of(fn)
    extra = sorted(keywords - allowed)
    if extra:
        raise ValueError(f"{name} declares {extra}, but the loop hands it only {sorted(allowed)}")
    return keywords
