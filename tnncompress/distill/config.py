"""What a distillation run is told: the algorithm, its budget and schedule, and how to run it."""

import math

from ..options import Section, option

ALGORITHMS = ("none", "seq", "e2e")  # no distillation, Seq-KD (Eq. 2.10), E2E-KD (Eq. 2.9)
SEQ_UNITS = ("layer", "block")
LOSSES = ("mse", "kl")
PLANS = ("measure", "optimal")
DEFAULT_EPOCHS = 2.0  # when neither steps nor epochs are given


class DistillConfig(Section, name="distill", title="Distillation", prefix="kd_"):
    algorithm: str = option("none", "Distillation after Layer-Decomp (needs data).", flat="kd", choices=ALGORITHMS)
    seq_unit: str = option("layer", "Seq-KD unit: a layer (+ norm) or a block.", flat="seq_unit", choices=SEQ_UNITS)
    steps: int | None = option(None, "Budget of gradient updates (Seq-KD: shared by the units).", minimum=1)
    epochs: float | None = option(None, "Budget in passes over the training set (default 2).", above=0)
    finetune_steps: int = option(0, "Seq-KD: end-to-end updates on the logits after the last unit.", minimum=0)
    lr: float = option(1e-3, "Adam learning rate (the dissertation's, section 2.7.1).", above=0)
    warmup_steps: int = option(0, "Raise the learning rate linearly over a phase's first N steps.", minimum=0)
    decay_at: list[float] = option([0.5, 0.75], "Learning rate x0.1 at these fractions of a phase.", above=0, below=1)
    loss: str = option("mse", "Logit loss of E2E-KD and fine-tuning.", choices=LOSSES)
    temperature: float = option(4.0, "Temperature of the kl loss (gradients scaled by T^2).", above=0)
    ce_weight: float = option(0.0, "Weight w of cross-entropy: (1 - w) KD + w CE.", minimum=0, maximum=1)
    batch_size: int = option(128, "Training batch (global under torchrun).", minimum=1)
    augment: bool = option(True, "Random 2-pixel crop and flip of in-memory training images.")
    eval_limit: int | None = option(2000, "Test samples behind each point of the accuracy curve.", minimum=1)
    plan: str = option("measure", "conv_einsum plans while training: timed, or fewest FLOPs.", choices=PLANS)
    checkpoint_every: int | None = option(None, "Steps between checkpoints (default: an epoch).", minimum=1)
    explode_factor: float = option(10.0, "Guard: a loss above this x the first has exploded.", above=1)
    max_retries: int = option(3, "Guard: learning-rate cuts per phase before it stops.", minimum=0)

    @property
    def enabled(self) -> bool:
        return self.algorithm != "none"

    def total_steps(self, train_samples: int) -> int:
        """The budget of updates of the main phase(s), fine-tuning excluded."""
        if self.steps is not None:
            return self.steps
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        return max(1, math.ceil(epochs * train_samples / self.batch_size))

    def steps_per_epoch(self, train_samples: int) -> int:
        return max(1, math.ceil(train_samples / self.batch_size))
