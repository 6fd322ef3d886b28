"""The decompose stage: select layers, choose ranks, and apply Layer-Decomp."""

from .apply import LayerResult, compress_model
from .ranks import RATE_BY, LayerPlan, plan_layer
from .select import LayerChoice, select_layers

__all__ = ["RATE_BY", "LayerChoice", "LayerPlan", "LayerResult", "compress_model", "plan_layer", "select_layers"]
