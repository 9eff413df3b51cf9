"""Flax NNX layers and models, MC dropout, and the bridges from NNX, Linen and Equinox to pure
functions (:class:`Model`)."""

from jaxreg.nn.bridges import from_equinox as from_equinox
from jaxreg.nn.bridges import from_linen as from_linen
from jaxreg.nn.bridges import from_nnx as from_nnx
from jaxreg.nn.bridges import functional as functional
from jaxreg.nn.bridges import init_model as init_model
from jaxreg.nn.bridges import init_params as init_params
from jaxreg.nn.conv import patch_conv as patch_conv
from jaxreg.nn.dropout import ChannelDropout as ChannelDropout
from jaxreg.nn.dropout import DropConnect as DropConnect
from jaxreg.nn.dropout import Dropout as Dropout
from jaxreg.nn.dropout import DropoutRate as DropoutRate
from jaxreg.nn.dropout import DropPath as DropPath
from jaxreg.nn.dropout import GaussianDropout as GaussianDropout
from jaxreg.nn.mc import MCPrediction as MCPrediction
from jaxreg.nn.mc import mc_predict as mc_predict
from jaxreg.nn.model import Apply as Apply
from jaxreg.nn.model import Model as Model
from jaxreg.nn.model import StatefulApply as StatefulApply
from jaxreg.nn.model import as_model as as_model
from jaxreg.nn.models import ACTIVATIONS as ACTIVATIONS
from jaxreg.nn.models import CNN1D as CNN1D
from jaxreg.nn.models import CNN2D as CNN2D
from jaxreg.nn.models import MLP as MLP
from jaxreg.nn.models import SpectralNormalized as SpectralNormalized
from jaxreg.nn.models import get_activation as get_activation
from jaxreg.nn.params import LayerCost as LayerCost
from jaxreg.nn.params import count_params as count_params
from jaxreg.nn.params import dense_vs_conv as dense_vs_conv
from jaxreg.nn.resnet import BasicBlock as BasicBlock
from jaxreg.nn.resnet import ResNet1D as ResNet1D
from jaxreg.nn.resnet import ResNet20 as ResNet20
