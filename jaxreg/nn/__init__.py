"""Flax NNX layers and models, and the bridge to pure ``apply`` functions."""

from jaxreg.nn.dropout import Dropout as Dropout
from jaxreg.nn.functional import Apply as Apply
from jaxreg.nn.functional import count_params as count_params
from jaxreg.nn.functional import functional as functional
from jaxreg.nn.functional import init_params as init_params
from jaxreg.nn.models import ACTIVATIONS as ACTIVATIONS
from jaxreg.nn.models import CNN1D as CNN1D
from jaxreg.nn.models import CNN2D as CNN2D
from jaxreg.nn.models import MLP as MLP
from jaxreg.nn.models import get_activation as get_activation
