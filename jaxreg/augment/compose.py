"""A pipeline of augmentations, each applied with its own probability, per example, one key in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import chex
import jax
from jax.typing import ArrayLike

from jaxreg._checks import check_interval
from jaxreg.augment._util import batch_where

__all__ = ["Stage", "compose"]

Transform = Callable[[jax.Array, Any], Any]


class Stage(NamedTuple):
    """One step of a pipeline: ``transform(key, batch) -> batch`` applied with ``probability``.

    Example:
      >>> from jaxreg.augment import signal
      >>> always, never = Stage(signal.jitter), Stage(signal.jitter, probability=0.0)
      >>> x = jnp.zeros((4, 40))
      >>> bool(jnp.all(compose([never])(jax.random.key(0), x) == x)), always.probability
      (True, 1.0)
    """

    transform: Transform
    probability: ArrayLike = 1.0


def compose(stages: Sequence[Stage | Transform | tuple[Transform, ArrayLike]]) -> Transform:
    """Chain batch transforms; each example takes each stage independently with its probability.

    Every stage maps ``(key, batch) -> batch`` where ``batch`` is an array or
    pytree with a leading example axis and keeps its shapes (e.g. the
    functions of :mod:`jaxreg.augment.image` and :mod:`~jaxreg.augment.signal`,
    or ``lambda k, b: text.random_swap(k, *b)`` on ``(tokens, lengths)``).
    A stage with probability ``p`` is computed for the whole batch and kept
    for a Bernoulli(``p``) subset of examples, so shapes stay static under
    ``jit``. Probabilities may be traced. The pipeline itself is a transform,
    so pipelines nest.

    Example:
      >>> from jaxreg.augment import signal
      >>> pipeline = compose([
      ...     Stage(lambda k, x: signal.random_shift(k, x, 3), 0.5),
      ...     Stage(lambda k, x: signal.jitter(k, x, 0.05)),
      ... ])
      >>> pipeline(jax.random.key(0), jnp.zeros((8, 40))).shape
      (8, 40)
    """
    normalized = []
    for stage in stages:
        if callable(stage) and not isinstance(stage, tuple):
            stage = Stage(stage)
        stage = Stage(*stage)
        if not callable(stage.transform):
            raise TypeError(f"stage transform must be callable, got {stage.transform!r}")
        check_interval(stage.probability, "probability", 0.0, 1.0, closed_high=True)
        normalized.append(stage)

    def pipeline(key: jax.Array, batch: chex.ArrayTree) -> chex.ArrayTree:
        n = jax.tree.leaves(batch)[0].shape[0]
        for index, stage in enumerate(normalized):
            stage_key, coin_key = jax.random.split(jax.random.fold_in(key, index))
            out = stage.transform(stage_key, batch)
            if isinstance(stage.probability, int | float) and stage.probability == 1.0:
                batch = out
                continue
            selected = jax.random.bernoulli(coin_key, stage.probability, (n,))
            batch = jax.tree.map(lambda new, old, s=selected: batch_where(s, new, old), out, batch)
        return batch

    return pipeline
