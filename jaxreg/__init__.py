"""jaxreg: regularization research in JAX."""

from jaxreg import augment as augment
from jaxreg import averaging as averaging
from jaxreg import calling as calling
from jaxreg import compilation as compilation
from jaxreg import curvature as curvature
from jaxreg import data as data
from jaxreg import ensembles as ensembles
from jaxreg import generalization as generalization
from jaxreg import io as io
from jaxreg import jacobian as jacobian
from jaxreg import labels as labels
from jaxreg import landscape as landscape
from jaxreg import laplace as laplace
from jaxreg import losses as losses
from jaxreg import masks as masks
from jaxreg import metrics as metrics
from jaxreg import nn as nn
from jaxreg import noise as noise
from jaxreg import penalties as penalties
from jaxreg import plots as plots
from jaxreg import progress as progress
from jaxreg import prox as prox
from jaxreg import sharpness as sharpness
from jaxreg import solvers as solvers
from jaxreg import spectra as spectra
from jaxreg import stats as stats
from jaxreg import sweeps as sweeps
from jaxreg import tasks as tasks
from jaxreg import training as training
from jaxreg import transforms as transforms
from jaxreg.compilation import disable_compilation_cache as disable_compilation_cache
from jaxreg.compilation import enable_compilation_cache as enable_compilation_cache
from jaxreg.training import FitResult as FitResult
from jaxreg.training import HostOptions as HostOptions
from jaxreg.training import evaluate as evaluate
from jaxreg.training import fit as fit

__version__ = "0.1.0"
