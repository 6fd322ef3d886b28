"""The distillation stage: Seq-KD (Eq. 2.10) and E2E-KD (Eq. 2.9) of a Layer-Decomp student."""

from .config import ALGORITHMS, LOSSES, PLANS, SEQ_UNITS, DistillConfig
from .distil import CHECKPOINT_FILE, distil
from .distributed import Context, setup, teardown
from .units import Unit, find_units

__all__ = ["ALGORITHMS", "CHECKPOINT_FILE", "LOSSES", "PLANS", "SEQ_UNITS", "Context", "DistillConfig", "Unit",
           "distil", "find_units", "setup", "teardown"]
