"""The Bayesian reading in the study: weight decay chosen by evidence, and predictives.

Three pieces that a :class:`~experiments.study.spec.Row` plugs in, each a pure
function of one member's parameters (the runner vmaps it over a sweep):

- :func:`l2_evidence`: the KFAC Laplace log marginal likelihood of a network
  trained with the study's L2 penalty ``λ·½Σw²`` (weights only) on its mean loss.
  The penalty is the Gaussian prior ``δ = N·λ`` on the weights
  (:func:`jaxreg.laplace.prior_precision_from_weight_decay`); the unpenalized
  biases get the vague prior ``N(0, 1)`` (``δ = 1``, which moves the MAP by
  ``1/N`` of a unit penalty).
- :func:`last_layer_laplace`: the linearized (GLM, probit) predictive of a full
  Laplace over the last layer, its prior precision set by MacKay's update on the
  training data.
- :func:`mc_dropout`: the mean softmax of stochastic passes with the row's own
  dropout rate switched on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import laplace, masks
from jaxreg.data import batches
from jaxreg.nn import mc_predict

__all__ = [
    "BIAS_PRIOR_PRECISION",
    "CURVATURE_BATCH",
    "LAST_LAYER",
    "MC_SAMPLES",
    "l2_evidence",
    "last_layer_laplace",
    "mc_dropout",
]

#: Prior precision of the biases, which the study's L2 penalty leaves alone.
#:
#: Example:
#:   >>> from experiments.study.bayes import BIAS_PRIOR_PRECISION
#:   >>> BIAS_PRIOR_PRECISION
#:   1.0
BIAS_PRIOR_PRECISION = 1.0
#: Examples per curvature batch (the Laplace fits sum over all training examples).
#:
#: Example:
#:   >>> from experiments.study.bayes import CURVATURE_BATCH
#:   >>> 4000 // CURVATURE_BATCH  # batches over training + validation
#:   8
CURVATURE_BATCH = 500
#: The MLP's last layer (``masks.by_path`` pattern).
#:
#: Example:
#:   >>> import re
#:   >>> from experiments.study.bayes import LAST_LAYER
#:   >>> [bool(re.search(LAST_LAYER, path)) for path in ("layers/2/kernel", "layers/1/bias")]
#:   [True, False]
LAST_LAYER = r"layers/2/"
#: Stochastic passes of MC dropout.
#:
#: Example:
#:   >>> from experiments.study.bayes import MC_SAMPLES
#:   >>> MC_SAMPLES
#:   32
MC_SAMPLES = 32


def _training_batches(x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    return batches(x, y, min(CURVATURE_BATCH, len(y)))


def l2_evidence(
    apply, params: Any, x: jax.Array, y: jax.Array, hparams: Mapping[str, Any]
) -> jax.Array:
    """Log marginal likelihood (KFAC Laplace) of a network trained with ``l2_strength·½Σw²``.

    Args:
      apply: ``apply(params, x) -> logits`` (eval mode).
      params: the trained parameters (one member).
      x: the training inputs the network was fitted on (all of them: ``N = len(y)``).
      y: the training labels.
      hparams: holds ``"l2_strength"`` (``λ``, may be traced).

    Returns:
      A scalar: higher is better supported by the training data.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import MLP, functional
      >>> apply, params = functional(MLP((3, 4, 2), rngs=nnx.Rngs(0)))
      >>> x = jax.random.normal(jax.random.key(0), (20, 3)); y = (x[:, 0] > 0).astype(int)
      >>> weak, strong = (l2_evidence(apply, params, x, y, {"l2_strength": s})
      ...                 for s in (1e-4, 1.0))
      >>> bool(jnp.isfinite(weak)), bool(weak != strong)
      (True, True)
    """
    fitted = laplace.fit_laplace(apply, params, _training_batches(x, y), structure="kron")
    is_weight = jnp.asarray(jax.tree.leaves(masks.resolve(masks.weights_only, params)))
    decay = laplace.prior_precision_from_weight_decay(hparams["l2_strength"], len(y))
    prior = jnp.where(is_weight, decay, BIAS_PRIOR_PRECISION)
    return laplace.log_marginal_likelihood(fitted, prior)


def last_layer_laplace(
    apply,
    params: Any,
    x_train: jax.Array,
    y_train: jax.Array,
    x: jax.Array,
    *,
    key: jax.Array,
    hparams: Mapping[str, Any],
) -> jax.Array:
    """Class probabilities of the last-layer Laplace GLM predictive (probit) at ``x``.

    The prior precision (one scalar) comes from 100 of MacKay's fixed-point steps on
    the training data's evidence; nothing reads held-out data. ``key`` and ``hparams``
    are unused (the predictive is deterministic and the network is read in eval mode).

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import MLP, functional
      >>> apply, params = functional(MLP((3, 4, 4, 2), rngs=nnx.Rngs(0)))
      >>> x = jax.random.normal(jax.random.key(0), (20, 3)); y = (x[:, 0] > 0).astype(int)
      >>> probs = last_layer_laplace(apply, params, x, y, x[:5], key=jax.random.key(1),
      ...                            hparams={})
      >>> probs.shape, bool(jnp.allclose(probs.sum(-1), 1.0, atol=1e-5))
      ((5, 2), True)
    """
    del key, hparams
    fitted = laplace.fit_laplace(
        apply, params, _training_batches(x_train, y_train), wrt=masks.by_path(LAST_LAYER)
    )
    prior = laplace.optimize_prior_precision(fitted, method="mackay", num_steps=100)
    return laplace.glm_predictive(fitted, apply, x, prior_precision=prior).mean


def mc_dropout(
    apply,
    params: Any,
    x_train: jax.Array,
    y_train: jax.Array,
    x: jax.Array,
    *,
    key: jax.Array,
    hparams: Mapping[str, Any],
) -> jax.Array:
    """Mean softmax of :data:`MC_SAMPLES` passes with dropout on at ``hparams["dropout_rate"]``.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import MLP, functional
      >>> apply, params = functional(MLP((3, 8, 2), rngs=nnx.Rngs(0)))
      >>> x = jnp.ones((4, 3))
      >>> on = mc_dropout(apply, params, x, None, x, key=jax.random.key(0),
      ...                 hparams={"dropout_rate": 0.5})
      >>> off = mc_dropout(apply, params, x, None, x, key=jax.random.key(0),
      ...                  hparams={"dropout_rate": 0.0})
      >>> bool(jnp.allclose(off, jax.nn.softmax(apply(params, x)), atol=1e-6))
      True
      >>> bool(jnp.allclose(on, off, atol=1e-3))  # dropout is on: the passes differ
      False
    """
    del x_train, y_train
    rates = {"dropout_rate": hparams["dropout_rate"]}

    def stochastic(p, inputs, *, key, train):
        return apply(p, inputs, key=key, train=train, hparams=rates)

    return mc_predict(stochastic, params, x, key=key, num_samples=MC_SAMPLES).mean
