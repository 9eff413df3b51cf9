"""Structural checks of user callables, made once on the host (never on traced values)."""

from __future__ import annotations

import inspect
from collections.abc import Callable


def accepts_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` can be called with keyword ``name`` (named, or through ``**kwargs``).

    Example:
      >>> accepts_keyword(lambda key, batch, *, hparams: batch, "hparams")
      True
      >>> accepts_keyword(lambda key, batch: batch, "hparams")
      False
    """
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in parameters
    )
