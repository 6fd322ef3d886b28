"""The decompose stage: select layers, choose ranks, and apply Layer-Decomp."""

from .apply import LayerResult, compress_model
from .plan import plan_model, read_ranks_file
from .ranks import RATE_BY, LayerPlan, plan_layer
from .select import LayerChoice, select_layers

__all__ = ["RATE_BY", "LayerChoice", "LayerPlan", "LayerResult", "compress_model", "plan_layer", "plan_model",
           "read_ranks_file", "select_layers"]
