"""The distillation stage: Seq-KD (Eq. 2.10) and E2E-KD (Eq. 2.9) of a Layer-Decomp student, on the
training engine (train/)."""

from ..train import Context, GuardEvent, observe_checkpoints, setup, teardown
from .config import ALGORITHMS, LOSSES, PLANS, SEQ_UNITS, DistillConfig
from .distil import CHECKPOINT_FILE, KdData, distil
from .phases import KdModels, PhaseSpec, build_phase
from .result import Budget, CurvePoint, DistillResult, PhaseRecord
from .units import Unit, find_units

__all__ = ["ALGORITHMS", "CHECKPOINT_FILE", "LOSSES", "PLANS", "SEQ_UNITS", "Budget", "Context", "CurvePoint",
           "DistillConfig", "DistillResult", "GuardEvent", "KdData", "KdModels", "PhaseRecord", "PhaseSpec", "Unit",
           "build_phase", "distil", "find_units", "observe_checkpoints", "setup", "teardown"]
