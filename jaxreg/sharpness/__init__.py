"""Hessian and sharpness analysis, all ``jit``/``vmap``-able: HVPs, Lanczos, trace, SLQ."""

from jaxreg.sharpness.density import SpectralDensity as SpectralDensity
from jaxreg.sharpness.density import spectral_density as spectral_density
from jaxreg.sharpness.hvp import dataset_loss as dataset_loss
from jaxreg.sharpness.hvp import gauss_newton_vp as gauss_newton_vp
from jaxreg.sharpness.hvp import hvp as hvp
from jaxreg.sharpness.lanczos import LanczosResult as LanczosResult
from jaxreg.sharpness.lanczos import PowerIterationResult as PowerIterationResult
from jaxreg.sharpness.lanczos import block_top_eigenvalues as block_top_eigenvalues
from jaxreg.sharpness.lanczos import lanczos as lanczos
from jaxreg.sharpness.lanczos import min_eigenvalue as min_eigenvalue
from jaxreg.sharpness.lanczos import power_iteration as power_iteration
from jaxreg.sharpness.lanczos import top_eigenvalues as top_eigenvalues
from jaxreg.sharpness.measures import average_sharpness as average_sharpness
from jaxreg.sharpness.measures import epsilon_sharpness as epsilon_sharpness
from jaxreg.sharpness.measures import pac_bayes_flatness as pac_bayes_flatness
from jaxreg.sharpness.measures import safe_normalize as safe_normalize
from jaxreg.sharpness.measures import sam_sharpness as sam_sharpness
from jaxreg.sharpness.trace import hessian_trace as hessian_trace
