"""Curvature beyond the Hessian: GGN, empirical and Monte-Carlo Fisher, their diagonals.

Matrix-free products (:func:`ggn_vp`, :func:`empirical_fisher_vp`,
:func:`mc_fisher_vp`) for any model size; dense matrices and exact diagonals
from per-example Jacobians (:func:`ggn_matrix`, :func:`ggn_diagonal`,
:func:`empirical_fisher_matrix`, :func:`empirical_fisher_diagonal`) for a last
layer or a small model; Hutchinson's diagonal for the rest; KFAC and EKFAC
factors of every dense layer (:func:`kfac_factors`, :func:`ekfac_eigenvalues`) and
KFAC and EKFAC factors of every convolution, found in the model's jaxpr
(:func:`conv_kfac_factors`, :func:`conv_ekfac_eigenvalues`). All average over a batched dataset like
:func:`jaxreg.sharpness.hvp` and run under ``jit``/``vmap``.
``apply(params, x) -> outputs`` is the model in eval mode (``Model.bind()``).
"""

from jaxreg.curvature.audit import ApproximationError as ApproximationError
from jaxreg.curvature.audit import CurvatureAudit as CurvatureAudit
from jaxreg.curvature.audit import audit_curvature as audit_curvature
from jaxreg.curvature.audit import compare_subspaces as compare_subspaces
from jaxreg.curvature.dense import empirical_fisher_diagonal as empirical_fisher_diagonal
from jaxreg.curvature.dense import empirical_fisher_matrix as empirical_fisher_matrix
from jaxreg.curvature.dense import ggn_diagonal as ggn_diagonal
from jaxreg.curvature.dense import ggn_matrix as ggn_matrix
from jaxreg.curvature.dense import per_example_jacobians as per_example_jacobians
from jaxreg.curvature.diagonal import DiagonalEstimate as DiagonalEstimate
from jaxreg.curvature.diagonal import hutchinson_diagonal as hutchinson_diagonal
from jaxreg.curvature.kfac import DenseFactors as DenseFactors
from jaxreg.curvature.kfac import DenseLayer as DenseLayer
from jaxreg.curvature.kfac import dense_layers as dense_layers
from jaxreg.curvature.kfac import ekfac_eigenvalues as ekfac_eigenvalues
from jaxreg.curvature.kfac import kfac_factors as kfac_factors
from jaxreg.curvature.kfac_conv import APPROXIMATIONS as APPROXIMATIONS
from jaxreg.curvature.kfac_conv import ConvFactors as ConvFactors
from jaxreg.curvature.kfac_conv import ConvLayer as ConvLayer
from jaxreg.curvature.kfac_conv import conv_ekfac_eigenvalues as conv_ekfac_eigenvalues
from jaxreg.curvature.kfac_conv import conv_kfac_factors as conv_kfac_factors
from jaxreg.curvature.kfac_conv import conv_layers as conv_layers
from jaxreg.curvature.likelihoods import LIKELIHOODS as LIKELIHOODS
from jaxreg.curvature.likelihoods import Likelihood as Likelihood
from jaxreg.curvature.likelihoods import as_outputs as as_outputs
from jaxreg.curvature.likelihoods import check_likelihood as check_likelihood
from jaxreg.curvature.likelihoods import hessian_root as hessian_root
from jaxreg.curvature.likelihoods import negative_log_likelihood as negative_log_likelihood
from jaxreg.curvature.likelihoods import output_gradient as output_gradient
from jaxreg.curvature.operators import empirical_fisher_vp as empirical_fisher_vp
from jaxreg.curvature.operators import ggn_vp as ggn_vp
from jaxreg.curvature.operators import mc_fisher_vp as mc_fisher_vp
from jaxreg.curvature.subset import Subset as Subset
from jaxreg.curvature.subset import subset as subset
