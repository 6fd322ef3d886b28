"""What a distillation run is told: the algorithm, its budget and schedule, and how to run it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ALGORITHMS = ("seq", "e2e")
SEQ_UNITS = ("layer", "block")
LOSSES = ("mse", "kl")
PLANS = ("measure", "optimal")
DEFAULT_EPOCHS = 2.0  # when neither steps nor epochs are given


@dataclass
class DistillConfig:
    algorithm: str = "seq"  # seq: Seq-KD (Eq. 2.10), e2e: E2E-KD (Eq. 2.9)
    seq_unit: str = "layer"  # Seq-KD distils one compressed layer (+ its norm) or one residual block at a time
    steps: int | None = None  # the budget of gradient updates (Seq-KD: shared evenly by the units)
    epochs: float | None = None  # ... or given as passes over the training set
    finetune_steps: int = 0  # Seq-KD only: end-to-end updates on the logits after the last unit
    lr: float = 1e-3  # Adam, as in the dissertation (section 2.7.1)
    warmup_steps: int = 0  # linear warm-up of each phase (Adam's first steps are sign steps of size lr)
    decay_at: list[float] = field(default_factory=lambda: [0.5, 0.75])  # x0.1 at these fractions of a phase
    loss: str = "mse"  # on the logits (E2E-KD and fine-tuning): squared distance, or KL at a temperature
    temperature: float = 4.0
    ce_weight: float = 0.0  # mix in cross-entropy on the labels: (1 - w) * distillation + w * CE
    batch_size: int = 128  # global: shared by the processes under torchrun
    augment: bool = True  # random crop and flip of in-memory images, as the teachers were trained
    eval_limit: int | None = 2000  # test samples behind each point of the accuracy curve (None: all)
    workers: int = 2  # DataLoader workers for folder datasets
    seed: int = 0
    explode_factor: float = 10.0  # a loss above this multiple of the phase's first loss has exploded
    max_retries: int = 3  # lr reductions per phase before the phase ends at its last good state
    plan: str = "measure"  # conv_einsum plans while training: "measure" (timed, fwd+bwd) or "optimal" (FLOPs)
    checkpoint_every: int | None = None  # steps between checkpoints inside a phase (None: one epoch)

    def total_steps(self, train_samples: int) -> int:
        """The budget of updates of the main phase(s), fine-tuning excluded."""
        if self.steps is not None:
            return self.steps
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        return max(1, math.ceil(epochs * train_samples / self.batch_size))

    def steps_per_epoch(self, train_samples: int) -> int:
        return max(1, math.ceil(train_samples / self.batch_size))
