"""Flax NNX layers and models, MC dropout, and the bridge to pure ``apply`` functions."""

from jaxreg.nn.dropout import ChannelDropout as ChannelDropout
from jaxreg.nn.dropout import DropConnect as DropConnect
from jaxreg.nn.dropout import Dropout as Dropout
from jaxreg.nn.dropout import DropoutRate as DropoutRate
from jaxreg.nn.dropout import DropPath as DropPath
from jaxreg.nn.dropout import GaussianDropout as GaussianDropout
from jaxreg.nn.functional import Apply as Apply
from jaxreg.nn.functional import functional as functional
from jaxreg.nn.functional import init_params as init_params
from jaxreg.nn.mc import MCPrediction as MCPrediction
from jaxreg.nn.mc import mc_predict as mc_predict
from jaxreg.nn.models import ACTIVATIONS as ACTIVATIONS
from jaxreg.nn.models import CNN1D as CNN1D
from jaxreg.nn.models import CNN2D as CNN2D
from jaxreg.nn.models import MLP as MLP
from jaxreg.nn.models import get_activation as get_activation
from jaxreg.nn.params import LayerCost as LayerCost
from jaxreg.nn.params import count_params as count_params
from jaxreg.nn.params import dense_vs_conv as dense_vs_conv
