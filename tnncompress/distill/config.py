"""What a distillation run is told: the algorithm, its budget and schedule, and how to run it."""

import dataclasses
import math

from ..errors import UsageError, brief, opt
from ..formats.layer import PLANS
from ..options import Section, option
from ..train import LoopConfig, Schedule

ALGORITHMS = ("none", "seq", "e2e", "auto")  # auto: cached Seq-KD by blocks, then E2E-KD, in one budget
SEQ_UNITS = ("layer", "block")
SEQ_INPUTS = ("student", "teacher")
LOSSES = ("auto", "mse", "kl")
SCHEDULES = ("auto", "step", "cosine")
# what "auto" means: the dissertation's choices for seq and e2e, the measured better ones for --kd auto
AUTO = {"loss": ("mse", "kl"), "schedule": ("step", "cosine"), "ce_weight": (0.0, 0.3), "warmup_steps": (0, 50)}
DEFAULT_EPOCHS = 2.0  # when neither steps nor epochs are given
DEFAULT_BUDGET = "10m"  # of --kd auto when no budget is given
MAX_BUDGET = 365 * 86400.0  # seconds: a budget beyond a year is a typo (and inf would overflow the step counts)


class DistillConfig(Section, name="distill", title="Distillation", prefix="kd_"):
    algorithm: str = option("none", "Distillation after Layer-Decomp (needs data).", flat="kd", choices=ALGORITHMS)
    seq_unit: str = option("layer", "Seq-KD unit: a layer (+ norm) or a block.", flat="seq_unit", choices=SEQ_UNITS)
    seq_cache: bool = option(True, "Seq-KD trains each unit on cached activations of the calibration pool.",
                             flat="seq_cache")
    seq_inputs: str = option("student", "Seq-KD unit inputs: the student's own upstream, or the teacher's.",
                             flat="seq_inputs", choices=SEQ_INPUTS)
    budget: str | None = option(None, "Wall-clock budget of distillation, everything it does counted: 90s, 20m, 1h "
                                "(auto: 10m).")
    seq_share: float = option(0.2, "auto: the share of the budget Seq-KD gets (E2E-KD the rest).", minimum=0,
                              maximum=1)
    steps: int | None = option(None, "Budget of gradient updates (Seq-KD: shared by the units).", minimum=1)
    epochs: float | None = option(None, "Budget in passes over the training set (default 2).", above=0)
    finetune_steps: int = option(0, "Seq-KD: end-to-end updates on the logits after the last unit.", minimum=0)
    lr: float = option(1e-3, "Adam learning rate (the dissertation's, section 2.7.1).", above=0)
    warmup_steps: int | None = option(None, "Raise the learning rate linearly over a phase's first N steps (0; 50 for "
                                            "--kd auto).", minimum=0)
    schedule: str = option("auto", "Learning rate over a phase: x0.1 at decay_at, or cosine (auto: cosine for "
                                   "--kd auto).", choices=SCHEDULES)
    decay_at: list[float] = option([0.5, 0.75], "Learning rate x0.1 at these fractions of a phase.", above=0, below=1)
    loss: str = option("auto", "Logit loss of E2E-KD and fine-tuning (auto: kl for --kd auto, else mse).",
                       choices=LOSSES)
    temperature: float = option(4.0, "Temperature of the kl loss (gradients scaled by T^2).", above=0)
    ce_weight: float | None = option(None, "Weight w of cross-entropy: (1 - w) KD + w CE (0; 0.3 for --kd auto).",
                                     minimum=0, maximum=1)
    feature_weight: float = option(0.0, "Weight of a feature loss: MSE of the classifier's input.", minimum=0)
    batch_size: int = option(128, "Training batch (global under torchrun).", minimum=1)
    augment: bool = option(True, "Random 2-pixel crop and flip of in-memory training images.")
    eval_limit: int | None = option(2000, "Test samples behind each point of the accuracy curve.", minimum=1)
    plan: str = option("measure", "conv_einsum plans while training and for the curve's evaluations: timed (kept "
                                  "in the plan cache), fewest FLOPs, or the dense kernel rebuilt at each step.",
                       choices=PLANS)
    checkpoint_every: int | None = option(None, "Steps between checkpoints (default: an epoch).", minimum=1)
    explode_factor: float = option(10.0, "Guard: a loss above this x the first has exploded.", above=1)
    max_retries: int = option(3, "Guard: learning-rate cuts per phase before it stops.", minimum=0)

    @property
    def enabled(self) -> bool:
        return self.algorithm != "none"

    def resolved(self) -> "DistillConfig":
        """A copy with the "auto" choices made: KL at the temperature mixed with 0.3 cross-entropy, a cosine
        schedule and a 50-step warm-up of each phase for --kd auto (RESULTS.md: without it the divergence
        guard fired on the first fine-tune step); the dissertation's squared distance, no cross-entropy,
        steps and no warm-up otherwise."""
        which = 1 if self.algorithm == "auto" else 0
        values = {name: choices[which] for name, choices in AUTO.items() if getattr(self, name) in ("auto", None)}
        return dataclasses.replace(self, **values)

    def loop(self) -> LoopConfig:
        """How each phase trains (the "auto" choices made)."""
        c = self.resolved()
        return LoopConfig(Schedule(c.lr, c.schedule, tuple(c.decay_at), c.warmup_steps), c.checkpoint_every,
                          c.explode_factor, c.max_retries)

    def budget_seconds(self) -> float | None:
        """The wall-clock budget in seconds (auto's default when none is given), or None."""
        text = self.budget or (DEFAULT_BUDGET if self.algorithm == "auto" and self.steps is None
                               and self.epochs is None else None)
        if text is None:
            return None
        units = {"s": 1, "m": 60, "h": 3600}
        try:
            return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
        except (ValueError, IndexError):
            raise UsageError(f"{opt('kd_budget')} {brief(text)}: use seconds, or 90s, 20m, 1h") from None

    def validate(self) -> None:
        seconds = self.budget_seconds()
        if seconds is not None and not 0 < seconds <= MAX_BUDGET:  # also refuses inf and nan
            raise UsageError(f"{opt('kd_budget')} must be positive and at most {MAX_BUDGET // 86400:.0f} days, got "
                             f"{brief(self.budget)}")

    def total_steps(self, train_samples: int) -> int:
        """The budget of updates of the main phase(s), fine-tuning excluded."""
        if self.steps is not None:
            return self.steps
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        return max(1, math.ceil(epochs * train_samples / self.batch_size))

    def steps_per_epoch(self, train_samples: int) -> int:
        return max(1, math.ceil(train_samples / self.batch_size))
