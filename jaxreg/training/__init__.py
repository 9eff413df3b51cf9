"""Training loops compiled end to end."""

from jaxreg.training.fit import FitResult as FitResult
from jaxreg.training.fit import evaluate as evaluate
from jaxreg.training.fit import fit as fit
