"""The compression stage: select layers, choose ranks, and apply Layer-Decomp.

Called, the package is the in-memory run: `tnncompress.compress(model, format="mcp", rate=0.1, ...)`
(pipeline/memory.py).
"""

import sys
import types

from .allocate import Candidate, global_plans, greedy_allocate
from .apply import LayerResult, compress_model
from .config import CompressConfig
from .data_aware import RefitResult, data_aware_init, refit
from .plan import plan_model, read_ranks_file
from .ranks import RATE_BY, LayerPlan, plan_layer
from .select import LayerChoice, Selection, matches_pattern, select_layers
from .speed import TARGETS, speed_ranks

__all__ = ["RATE_BY", "TARGETS", "Candidate", "CompressConfig", "LayerChoice", "LayerPlan", "LayerResult",
           "RefitResult", "Selection", "compress_model", "data_aware_init", "global_plans", "greedy_allocate",
           "matches_pattern",
           "plan_layer", "plan_model", "read_ranks_file", "refit", "select_layers", "speed_ranks"]


class _CallablePackage(types.ModuleType):
    """`tnncompress.compress(model, ...)` is the in-memory run (pipeline/memory.py), and `tnncompress.compress`
    is also this package, the stage the tool is named after: both hold, because calling the package calls
    the run. (The package cannot import the pipeline at import time: the pipeline imports the package.)"""

    def __call__(self, *args, **kwargs):
        from ..pipeline.memory import compress

        return compress(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        from ..pipeline.memory import compress

        return inspect.signature(compress)


sys.modules[__name__].__class__ = _CallablePackage
