"""Training: a pure core (:class:`TrainLoop`), the host driver :func:`fit`, early stopping,
checkpoints and hyperparameter-aware batch transforms."""

from jaxreg.training import batch_transforms as batch_transforms
from jaxreg.training import checkpoints as checkpoints
from jaxreg.training import early_stopping as early_stopping
from jaxreg.training.early_stopping import EarlyStopping as EarlyStopping
from jaxreg.training.early_stopping import EarlyStoppingState as EarlyStoppingState
from jaxreg.training.fit import FitResult as FitResult
from jaxreg.training.fit import evaluate as evaluate
from jaxreg.training.fit import fit as fit
from jaxreg.training.host import HostOptions as HostOptions
from jaxreg.training.loop import LoopData as LoopData
from jaxreg.training.loop import TrainLoop as TrainLoop
from jaxreg.training.loop import TrainState as TrainState
from jaxreg.training.loop import loop_data as loop_data
from jaxreg.training.loop import optimizer_for as optimizer_for
from jaxreg.training.loop import task_metrics as task_metrics
from jaxreg.training.stepwise import run_stepwise as run_stepwise
