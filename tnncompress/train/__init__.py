"""The training engine every stage that learns runs on (distillation, the BQN posterior, reference
classifiers): one process or torchrun (distributed.py), reproducible batch streams (stream.py), the
phase loop with its schedule and guard (loop.py, schedule.py), checkpoints and resume (checkpoint.py),
and the observers tests interrupt runs with (hooks.py). A stage passes in what it learns, as a loss."""

from .checkpoint import read_checkpoint, save_checkpoint
from .classifier import TrainConfig, train_classifier
from .distributed import Context, launched_by_torchrun, setup, teardown
from .hooks import observe_checkpoints
from .loop import Callbacks, GuardEvent, LoopConfig, Phase, PhaseState, learning_rate, train_phase
from .schedule import Schedule
from .stream import BatchStream, CachedStream

__all__ = ["BatchStream", "CachedStream", "Callbacks", "Context", "GuardEvent", "LoopConfig", "Phase", "PhaseState",
           "Schedule", "TrainConfig", "learning_rate", "launched_by_torchrun", "observe_checkpoints",
           "read_checkpoint", "save_checkpoint", "setup", "teardown", "train_classifier", "train_phase"]
