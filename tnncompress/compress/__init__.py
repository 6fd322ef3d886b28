"""The compression stage: select layers, choose ranks, and apply Layer-Decomp."""

from .apply import LayerResult, compress_model
from .config import CompressConfig
from .plan import plan_model, read_ranks_file
from .ranks import RATE_BY, LayerPlan, plan_layer
from .select import LayerChoice, matches_pattern, select_layers

__all__ = ["RATE_BY", "CompressConfig", "LayerChoice", "LayerPlan", "LayerResult", "compress_model",
           "matches_pattern", "plan_layer", "plan_model", "read_ranks_file", "select_layers"]
