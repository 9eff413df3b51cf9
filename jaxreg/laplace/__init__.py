"""Laplace approximations and the evidence: weight decay chosen by marginal likelihood.

L2 regularization is a Gaussian prior and its strength a prior precision; the
Laplace approximation around the trained weights gives the marginal likelihood
(the evidence, MacKay 1992) as a function of that precision, so it can be
chosen from the training data alone, for every member of a sweep at once:

>>> import jax, jax.numpy as jnp
>>> from jaxreg.data import batches
>>> from jaxreg import laplace
>>> x = jax.random.normal(jax.random.key(0), (40, 3)); y = (x[:, 0] > 0).astype(int)
>>> la = laplace.fit_laplace(lambda w, x: x @ w, jnp.zeros((3, 2)), batches(x, y, 20))
>>> delta = laplace.optimize_prior_precision(la, method="mackay", num_steps=20)
>>> pred = laplace.glm_predictive(la, lambda w, x: x @ w, x[:2], prior_precision=delta)
>>> pred.mean.shape
(2, 2)
"""

from jaxreg.laplace.evidence import log_marginal_likelihood as log_marginal_likelihood
from jaxreg.laplace.evidence import optimize_prior_precision as optimize_prior_precision
from jaxreg.laplace.evidence import posterior_precision_matrix as posterior_precision_matrix
from jaxreg.laplace.evidence import posterior_scale as posterior_scale
from jaxreg.laplace.evidence import posterior_variance as posterior_variance
from jaxreg.laplace.evidence import prior_precision_vector as prior_precision_vector
from jaxreg.laplace.noise import NoiseAndPrior as NoiseAndPrior
from jaxreg.laplace.noise import optimize_noise_and_prior as optimize_noise_and_prior
from jaxreg.laplace.online import OnlineMarglikResult as OnlineMarglikResult
from jaxreg.laplace.online import online_marglik as online_marglik
from jaxreg.laplace.posterior import STRUCTURES as STRUCTURES
from jaxreg.laplace.posterior import Laplace as Laplace
from jaxreg.laplace.posterior import Structure as Structure
from jaxreg.laplace.posterior import fit_laplace as fit_laplace
from jaxreg.laplace.predictive import Predictive as Predictive
from jaxreg.laplace.predictive import glm_predictive as glm_predictive
from jaxreg.laplace.predictive import sample_predictive as sample_predictive
from jaxreg.laplace.weight_decay import CONVENTIONS as CONVENTIONS
from jaxreg.laplace.weight_decay import (
    prior_precision_from_weight_decay as prior_precision_from_weight_decay,
)
from jaxreg.laplace.weight_decay import (
    weight_decay_from_prior_precision as weight_decay_from_prior_precision,
)
