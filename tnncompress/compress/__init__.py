"""The compression stage: select layers, choose ranks, and apply Layer-Decomp."""

from .allocate import Candidate, global_plans, greedy_allocate
from .apply import LayerResult, compress_model
from .config import CompressConfig
from .data_aware import RefitResult, data_aware_init, refit
from .plan import plan_model, read_ranks_file
from .ranks import RATE_BY, LayerPlan, plan_layer
from .select import LayerChoice, matches_pattern, select_layers
from .speed import TARGETS, speed_ranks

__all__ = ["RATE_BY", "TARGETS", "Candidate", "CompressConfig", "LayerChoice", "LayerPlan", "LayerResult",
           "RefitResult", "compress_model", "data_aware_init", "global_plans", "greedy_allocate", "matches_pattern",
           "plan_layer", "plan_model", "read_ranks_file", "refit", "select_layers", "speed_ranks"]
