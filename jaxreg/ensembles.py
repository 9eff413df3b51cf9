"""Ensembles: stacked members, bagging and random subspaces, prediction, error decompositions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_interval
from jaxreg.nn.bridges import init_params as stack_members
from jaxreg.nn.model import Model

__all__ = [
    "Ambiguity",
    "Decomposition",
    "ambiguity",
    "bootstrap_weights",
    "decompose",
    "predict",
    "stack_members",
    "subspace_masks",
]


def bootstrap_weights(
    key: jax.Array,
    num_members: int,
    n: int,
    method: Literal["multinomial", "poisson"] = "multinomial",
) -> jax.Array:
    """Per-example weights for bagging: member ``j`` sees example ``i`` ``w[j, i]`` times.

    ``"multinomial"``: a bootstrap resample of size ``n`` (counts sum to ``n``);
    ``"poisson"``: independent ``Poisson(1)`` counts (the online bootstrap).
    Train member ``j`` with these as the batch ``"weight"`` (no data copying).

    Example:
      >>> w = bootstrap_weights(jax.random.key(0), 3, 100)
      >>> w.shape, w.sum(axis=1).tolist()
      ((3, 100), [100.0, 100.0, 100.0])
    """
    if method == "multinomial":
        draws = jax.random.randint(key, (num_members, n), 0, n)
        return jax.vmap(lambda d: jnp.bincount(d, length=n))(draws).astype(jnp.result_type(float))
    if method == "poisson":
        return jax.random.poisson(key, 1.0, (num_members, n)).astype(jnp.result_type(float))
    raise ValueError(f"method must be 'multinomial' or 'poisson', got {method!r}")


def subspace_masks(
    key: jax.Array, num_members: int, num_features: int, fraction: float = 0.5
) -> jax.Array:
    """Random subspaces (Ho, 1998): each member sees ``round(fraction·F)`` random features.

    Returns a bool mask ``(num_members, num_features)``; multiply inputs by it.

    Example:
      >>> masks = subspace_masks(jax.random.key(0), 3, 10, fraction=0.4)
      >>> masks.shape, masks.sum(axis=1).tolist()  # each member sees 4 of the 10 features
      ((3, 10), [4, 4, 4])
    """
    check_interval(fraction, "fraction", 0.0, 1.0, closed_high=True)
    keep = max(1, round(fraction * num_features))
    scores = jax.random.uniform(key, (num_members, num_features))
    ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    return ranks < keep


def predict(
    apply: Callable[..., jax.Array] | Model,
    stacked_params: chex.ArrayTree,
    x: ArrayLike,
    method: Literal["mean", "vote"] = "mean",
    *,
    stacked_state: chex.ArrayTree | None = None,
) -> jax.Array:
    """Ensemble prediction ``(n, K)``: mean of member softmax probabilities, or vote shares.

    Members are the leading axis of ``stacked_params`` (from :func:`stack_members`
    or :func:`jaxreg.nn.init_model`). With a :class:`~jaxreg.nn.Model` that has
    state (BatchNorm), each member runs in eval mode with its *own* statistics
    (``stacked_state``, leading member axis; default ``apply.state``): states
    are never averaged across members.

    Example:
      >>> apply = lambda params, x: x @ params
      >>> members = jnp.stack([jnp.eye(2), -jnp.eye(2)])  # two members that disagree
      >>> predict(apply, members, jnp.array([[1.0, 0.0]])).tolist()  # mean of softmaxes
      [[0.5, 0.5]]
      >>> predict(apply, members, jnp.array([[1.0, 0.0]]), method="vote").tolist()
      [[0.5, 0.5]]
    """
    if isinstance(apply, Model):
        model = apply
        states = model.state if stacked_state is None else stacked_state
        logits = jax.vmap(lambda p, s: model.apply(p, s, x, train=False)[0])(stacked_params, states)
    elif stacked_state is not None:
        raise ValueError("stacked_state needs a jaxreg.nn.Model as apply")
    else:
        logits = jax.vmap(lambda p: apply(p, x))(stacked_params)  # (k, n, K)
    if method == "mean":
        return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
    if method == "vote":
        votes = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1])
        return jnp.mean(votes, axis=0)
    raise ValueError(f"method must be 'mean' or 'vote', got {method!r}")


class Decomposition(NamedTuple):
    """Bias–variance–covariance decomposition of an ensemble's squared error (all scalars).

    Example:
      >>> preds = jnp.array([[[1.0, 0.0], [3.0, 2.0]], [[3.0, 2.0], [1.0, 0.0]]])  # (R=2, k=2, n=2)
      >>> d = decompose(preds, jnp.array([2.0, 1.0]))
      >>> [float(v) for v in d]  # ensemble_mse, bias2, variance, covariance, avg_member_mse
      [0.0, 0.0, 1.0, -1.0, 1.0]
    """

    ensemble_mse: jax.Array
    bias2: jax.Array
    variance: jax.Array
    covariance: jax.Array
    avg_member_mse: jax.Array


def decompose(preds: ArrayLike, targets: ArrayLike) -> Decomposition:
    """Ueda & Nakano (1996): ``ensemble_mse = bias2 + variance/k + (1 − 1/k)·covariance``.

    ``preds`` is ``(R, k, n)``: R independent replicates (each trained on its
    own data draw or bootstrap) of an ensemble of k members, predicting n test
    targets. Expectations are over replicates, averaged over test points:

    * ``bias2`` — ``(mean_j E[f_j] − y)²``, the squared bias of the average member;
    * ``variance`` — ``mean_j Var[f_j]``, the average member variance;
    * ``covariance`` — the average ``Cov[f_j, f_l]`` over pairs ``j ≠ l``;
    * ``ensemble_mse`` — ``E[(f̄ − y)²]``, ``f̄`` the ensemble mean.

    The identity holds exactly (population moments over replicates). Note that
    the often-quoted ``V/k + (k−1)/k·C`` is the ensemble's *variance* only: it
    omits the bias term. With a single replicate, variance and covariance
    cannot be told apart (deviations around that ensemble's own mean sum to
    zero), so ``R = 1`` is refused — use :func:`ambiguity` for one ensemble.

    Example:
      >>> preds = jax.random.normal(jax.random.key(0), (50, 4, 10))
      >>> d = decompose(preds, jnp.zeros(10))
      >>> k = 4
      >>> bool(jnp.allclose(d.ensemble_mse, d.bias2 + d.variance / k + (1 - 1 / k) * d.covariance))
      True
    """
    preds = jnp.asarray(preds)
    targets = jnp.asarray(targets)
    if preds.ndim != 3:
        raise ValueError(f"preds must be shaped (replicates, members, n), got {preds.shape}")
    replicates, k, n = preds.shape
    if replicates < 2:
        raise ValueError(
            "decompose needs >= 2 replicates: with one, variance and covariance are not "
            "identifiable; use ensembles.ambiguity for a single ensemble"
        )
    if k < 2:
        raise ValueError(f"decompose needs >= 2 members per ensemble, got {k}")
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {targets.shape}")
    member_mean = jnp.mean(preds, axis=0)  # E_r[f_j], (k, n)
    deviation = preds - member_mean  # (R, k, n)
    cov = jnp.einsum("rjn,rln->jln", deviation, deviation) / replicates  # (k, k, n)
    diag = jnp.diagonal(cov, axis1=0, axis2=1).T  # (k, n)
    variance = jnp.mean(diag)
    off_diagonal = (jnp.sum(cov, axis=(0, 1)) - jnp.sum(diag, axis=0)) / (k * (k - 1))
    ensemble = jnp.mean(preds, axis=1)  # (R, n)
    return Decomposition(
        ensemble_mse=jnp.mean((ensemble - targets) ** 2),
        bias2=jnp.mean((jnp.mean(member_mean, axis=0) - targets) ** 2),
        variance=variance,
        covariance=jnp.mean(off_diagonal),
        avg_member_mse=jnp.mean((preds - targets) ** 2),
    )


class Ambiguity(NamedTuple):
    """Krogh & Vedelsby (1995): ``ensemble_error = avg_member_error − ambiguity``.

    Example:
      >>> members = jax.random.normal(jax.random.key(0), (5, 100))
      >>> a = ambiguity(members, jnp.zeros(100))
      >>> bool(jnp.isclose(a.ensemble_error, a.avg_member_error - a.ambiguity))
      True
    """

    ensemble_error: jax.Array
    avg_member_error: jax.Array
    ambiguity: jax.Array


def ambiguity(member_preds: ArrayLike, targets: ArrayLike) -> Ambiguity:
    """Ambiguity decomposition of one ensemble, ``member_preds`` shaped ``(k, n)``.

    The ambiguity ``mean_j mean_x (f_j − f̄)²`` is the members' spread around the
    ensemble mean; the identity holds exactly for squared error.

    Example:
      >>> a = ambiguity(jnp.array([[0.0, 2.0], [2.0, 2.0]]), jnp.array([1.0, 2.0]))
      >>> [float(v) for v in a]  # ensemble_error = avg_member_error - ambiguity
      [0.0, 0.5, 0.5]
    """
    preds = jnp.asarray(member_preds)
    if preds.ndim != 2:
        raise ValueError(f"member_preds must be shaped (members, n), got {preds.shape}")
    ensemble = jnp.mean(preds, axis=0)
    return Ambiguity(
        ensemble_error=jnp.mean((ensemble - jnp.asarray(targets)) ** 2),
        avg_member_error=jnp.mean((preds - jnp.asarray(targets)) ** 2),
        ambiguity=jnp.mean((preds - ensemble) ** 2),
    )
