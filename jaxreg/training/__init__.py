"""Training loops compiled end to end, early stopping inside them, and checkpoints."""

from jaxreg.training import checkpoints as checkpoints
from jaxreg.training import early_stopping as early_stopping
from jaxreg.training.early_stopping import EarlyStopping as EarlyStopping
from jaxreg.training.early_stopping import EarlyStoppingState as EarlyStoppingState
from jaxreg.training.fit import FitResult as FitResult
from jaxreg.training.fit import evaluate as evaluate
from jaxreg.training.fit import fit as fit
