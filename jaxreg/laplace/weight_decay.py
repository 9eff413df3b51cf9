"""Weight decay ↔ prior precision: which Gaussian prior a training recipe's decay is.

Training minimizes the mean loss plus a decay; the MAP of a model with a
Gaussian prior ``N(0, δ⁻¹ I)`` on ``N`` examples minimizes ``Σₙ ℓₙ + ½δ‖θ‖²``,
i.e. ``mean ℓ + ½(δ/N)‖θ‖²``. A recipe's stationary point is therefore a MAP
with ``δ`` given by where its decay enters:

- ``"penalty"``: ``fit(..., penalty=penalties.l2, penalty_strength=λ)``, the
  objective ``mean ℓ + λ·½‖θ‖²``: ``δ = N·λ``.
- ``"coupled"``: ``optax.add_decayed_weights(λ)`` *before* the optimizer's
  scaling (``optax.chain(optax.add_decayed_weights(λ), optax.adam(lr))``; also
  SGD's classic weight decay): the optimizer sees ``∇ mean ℓ + λθ``, whose zero
  is the same point whatever the preconditioner: ``δ = N·λ``.
- ``"decoupled"``: :func:`jaxreg.transforms.decoupled_weight_decay` ``(rate)``
  after **SGD** at learning rate ``η``: the step ``−η∇ mean ℓ − rate·θ`` is zero
  where ``∇ mean ℓ = −(rate/η)θ``: ``δ = N·rate/η``. ``optax.sgd(η)`` followed by
  decay ``λ`` scaled by the learning rate (``optax.adamw``'s placement, with SGD)
  is the same with ``rate = η·λ``.

**Decoupled decay under Adam (AdamW) has no fixed prior:** its stationary point
solves ``adam_direction(g) = −λθ``, where the direction is the gradient
rescaled per coordinate by Adam's second-moment estimate, which changes along
training; the equivalent L2 strength differs per coordinate and is not known
in advance. :func:`prior_precision_from_weight_decay` refuses it.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["CONVENTIONS", "prior_precision_from_weight_decay", "weight_decay_from_prior_precision"]

#: Where a recipe's weight decay enters (a type alias; see the module docstring).
Convention = Literal["penalty", "coupled", "decoupled"]
#: The conventions :func:`prior_precision_from_weight_decay` accepts.
#:
#: Example:
#:   >>> from jaxreg.laplace import CONVENTIONS
#:   >>> CONVENTIONS
#:   ('penalty', 'coupled', 'decoupled')
CONVENTIONS: tuple[str, ...] = ("penalty", "coupled", "decoupled")


def _factor(convention: str, learning_rate: ArrayLike | None) -> ArrayLike:
    """``δ / (N · decay)`` for a convention."""
    if convention == "adamw":
        raise ValueError(
            "decoupled weight decay under Adam (AdamW) has no fixed Gaussian prior: its "
            "stationary point depends on Adam's per-coordinate scaling. Use a penalty or "
            "coupled decay (optax.add_decayed_weights before the optimizer) to read the "
            "decay as a prior"
        )
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention != "decoupled":
        return 1.0
    if learning_rate is None:
        raise ValueError("convention='decoupled' needs learning_rate= (SGD's step size)")
    return 1.0 / jnp.asarray(learning_rate)


def prior_precision_from_weight_decay(
    weight_decay: ArrayLike,
    num_data: ArrayLike,
    *,
    convention: Convention = "penalty",
    learning_rate: ArrayLike | None = None,
) -> jax.Array:
    """The prior precision ``δ`` whose MAP is the stationary point of a decayed training run.

    Args:
      weight_decay: the recipe's decay (``λ``, or the per-step ``rate`` for
        ``"decoupled"``); may be traced.
      num_data: ``N``, the number of training examples the mean loss averages.
      convention: ``"penalty"``, ``"coupled"`` or ``"decoupled"`` (module docstring).
      learning_rate: SGD's step size ``η``, for ``"decoupled"`` only.

    Example:
      >>> round(float(prior_precision_from_weight_decay(1e-3, 4000)), 6)
      4.0
      >>> round(float(prior_precision_from_weight_decay(1e-4, 4000, convention="decoupled",
      ...                                               learning_rate=0.1)), 6)
      4.0
    """
    factor = _factor(convention, learning_rate)
    return jnp.asarray(weight_decay) * jnp.asarray(num_data) * factor


def weight_decay_from_prior_precision(
    prior_precision: ArrayLike,
    num_data: ArrayLike,
    *,
    convention: Convention = "penalty",
    learning_rate: ArrayLike | None = None,
) -> jax.Array:
    """The decay a recipe needs to train to the MAP of prior precision ``δ`` (the inverse).

    Example:
      >>> round(float(weight_decay_from_prior_precision(4.0, 4000)), 6)
      0.001
    """
    factor = _factor(convention, learning_rate)
    return jnp.asarray(prior_precision) / (jnp.asarray(num_data) * factor)
