"""The distillation stage: Seq-KD (Eq. 2.10) and E2E-KD (Eq. 2.9) of a Layer-Decomp student."""

from .config import ALGORITHMS, LOSSES, PLANS, SEQ_UNITS, DistillConfig
from .distil import CHECKPOINT_FILE, build_phase, distil
from .distributed import Context, setup, teardown
from .hooks import observe_checkpoints
from .result import Budget, CurvePoint, DistillResult, GuardEvent, PhaseRecord
from .units import Unit, find_units

__all__ = ["ALGORITHMS", "CHECKPOINT_FILE", "LOSSES", "PLANS", "SEQ_UNITS", "Budget", "Context", "CurvePoint",
           "DistillConfig", "DistillResult", "GuardEvent", "PhaseRecord", "Unit", "build_phase", "distil", "find_units",
           "observe_checkpoints", "setup", "teardown"]
