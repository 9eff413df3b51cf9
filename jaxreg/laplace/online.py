"""Online marginal-likelihood training: parameters and prior precision learned together.

Immer et al. (2021, "Scalable marginal likelihood estimation for model
selection in deep learning") alternate ordinary training of the parameters
under the current prior with gradient steps on the log marginal likelihood of
a Laplace approximation at the current parameters, so the prior precision (the
weight decay) is learned from the training data during training, with no
validation split and no grid. Here a round is :func:`jaxreg.fit` for
``epochs_per_round`` epochs with the L2 penalty ``(δ/N)·½‖θ‖²`` (the prior
precision ``δ`` in the mean-loss convention), then :func:`fit_laplace` and
:func:`optimize_prior_precision` started from the current ``δ``.

Every step is a pure function and the number of rounds is static, so the whole
procedure runs under ``jit`` and ``vmap``: a sweep over learning rates, widths or
seeds learns each member's prior in one compiled program. Differences from the
paper: the optimizer's state restarts each round (``fit`` starts from parameters),
and the prior is scalar or per leaf ("layer") as :func:`optimize_prior_precision`
supports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg.data import batches
from jaxreg.laplace.evidence import log_marginal_likelihood, optimize_prior_precision
from jaxreg.laplace.posterior import Laplace, Structure, fit_laplace
from jaxreg.masks import MaskLike
from jaxreg.penalties import l2
from jaxreg.training import fit

__all__ = ["OnlineMarglikResult", "online_marglik"]


class OnlineMarglikResult(NamedTuple):
    """What :func:`online_marglik` learned.

    Attributes:
      params: the parameters after the last round.
      prior_precision: the learned ``δ`` (scalar, or per group).
      laplace: the Laplace approximation at ``params`` (before the last ``δ`` update).
      precision_history: ``δ`` after each round ``(rounds, ...)``.
      evidence_history: the log marginal likelihood at that ``δ`` after each round.

    Example:
      >>> OnlineMarglikResult(None, 1.0, None, jnp.ones(2), jnp.zeros(2)).prior_precision
      1.0
    """

    params: chex.ArrayTree
    prior_precision: jax.Array
    laplace: Laplace
    precision_history: jax.Array
    evidence_history: jax.Array


def online_marglik(
    apply: Callable[..., jax.Array],
    params: chex.ArrayTree,
    optimizer: optax.GradientTransformation,
    train: tuple[ArrayLike, ArrayLike],
    *,
    key: jax.Array,
    num_rounds: int,
    epochs_per_round: int,
    batch_size: int,
    init_prior_precision: ArrayLike = 1.0,
    structure: Structure = "diag",
    wrt: MaskLike | None = None,
    per_group: bool = False,
    hyper_steps: int = 50,
    hyper_learning_rate: float = 0.1,
    curvature_batch_size: int = 500,
) -> OnlineMarglikResult:
    """Train ``params`` and learn the prior precision by the Laplace evidence, alternately.

    Args:
      apply: ``apply(params, x, **kw) -> logits`` (a classifier, as :func:`jaxreg.fit` trains
        it; called with no keywords for the curvature).
      params: initial parameters.
      optimizer: the optax optimizer of each round's :func:`jaxreg.fit`.
      train: ``(x, y)`` training data (all of it: no split is needed).
      key: PRNG key; round ``r`` trains with ``fold_in(key, r)``.
      num_rounds: rounds of training + prior update (static).
      epochs_per_round: epochs of each round (static).
      batch_size: minibatch size of training.
      init_prior_precision: the first round's ``δ``.
      structure: the Laplace structure of the evidence (one of :data:`STRUCTURES`).
      wrt: the parameters the prior and the approximation cover (all by default).
      per_group: learn one ``δ`` per leaf instead of one scalar (a scalar prior is
        used in training: the mean over groups; per-group training penalties need a
        custom penalty).
      hyper_steps: Adam steps on ``log δ`` per round.
      hyper_learning_rate: their step size.
      curvature_batch_size: examples per batch of the Laplace fit (memory
        ``batch × classes × parameters`` for the diagonal).

    Returns:
      An :class:`OnlineMarglikResult`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> x = jax.random.normal(jax.random.key(0), (64, 3)); y = (x[:, 0] > 0).astype(int)
      >>> result = online_marglik(lambda w, x, **kw: x @ w, jnp.zeros((3, 2)), optax.adam(0.1),
      ...                         (x, y), key=jax.random.key(1), num_rounds=3,
      ...                         epochs_per_round=5, batch_size=32)
      >>> result.precision_history.shape, bool(result.prior_precision > 0)
      ((3,), True)
    """
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
        raise ValueError(f"num_rounds must be a positive int, got {num_rounds!r}")
    x, y = jnp.asarray(train[0]), jnp.asarray(train[1])
    num_data = x.shape[0]
    curvature_data = batches(x, y, min(curvature_batch_size, num_data))
    delta = jnp.asarray(init_prior_precision, jnp.result_type(float))
    precisions, evidences, la = [], [], None
    for round_index in range(num_rounds):
        strength = jnp.mean(delta) / num_data  # δ in the mean-loss convention
        trained = fit(
            apply,
            params,
            optimizer,
            (x, y),
            key=jax.random.fold_in(key, round_index),
            num_epochs=epochs_per_round,
            batch_size=batch_size,
            penalty=l2,
            penalty_strength=strength,
        )
        params = trained.params
        la = fit_laplace(apply, params, curvature_data, structure=structure, wrt=wrt)
        delta = optimize_prior_precision(
            la,
            init=delta,
            per_group=per_group,
            num_steps=hyper_steps,
            learning_rate=hyper_learning_rate,
        )
        precisions.append(delta)
        evidences.append(log_marginal_likelihood(la, delta))
    return OnlineMarglikResult(params, delta, la, jnp.stack(precisions), jnp.stack(evidences))
