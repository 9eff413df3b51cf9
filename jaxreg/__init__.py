"""jaxreg: regularization research in JAX."""

from jaxreg import data as data
from jaxreg import losses as losses
from jaxreg import nn as nn
from jaxreg import training as training
from jaxreg.training import fit as fit

__version__ = "0.1.0"
