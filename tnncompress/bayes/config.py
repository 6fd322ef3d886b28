"""What the BQN stage is told: how many bits, how long to learn the posterior, and how to evaluate it."""

from __future__ import annotations

from ..errors import UsageError, opt
from ..options import Section, option
from ..train import LoopConfig, Schedule

TARGETS = ("labels", "teacher")
SCALES = ("channel", "tensor")


class BqnConfig(Section, name="bqn", title="Bayesian quantized network (BQN)", prefix="bqn_"):
    bits: int | None = option(None, "Learn a quantized posterior over the compressed layers' factors with this many "
                                    "bits per weight (1: {-1, +1} x scale; 2-8: 2^B uniform levels x scale), then "
                                    "export its MAP QNN.", flat="bqn_bits", minimum=1, maximum=8)
    scale: str = option("channel", "One learned scale per output channel (per slice of a factor's first mode), or "
                                   "one per tensor.", choices=SCALES)
    dense: bool = option(False, "Also quantise the convolutions and linear layers left dense.")
    exclude: list[str] = option([], "Leave these layers' weights float (glob patterns on layer names, repeatable); "
                                    "an operation without a moment rule is accepted where only float layers "
                                    "feed it.")
    act_bits: int = option(0, "Quantise the activations too: every ReLU becomes sign (1: the dissertation's binary "
                              "activations, {-1, +1}) or a quantised ReLU (2-4: 2^B levels x a step fitted on the "
                              "calibration pool, then learned); 0 keeps them float.", minimum=0, maximum=4)
    train_float: bool = option(False, "Also learn the parameters left float (biases, norm scales and shifts, "
                                      "unquantised layers) with the posterior, as point estimates.")
    steps: int | None = option(None, "Updates of the posterior (default: one epoch).", minimum=0)
    lr: float = option(1e-2, "Adam learning rate of the logits, scales and temperature (the dissertation's).",
                       above=0)
    lam: float = option(1e-3, "Weight lambda of the KL to the uniform prior (1: the ELBO; the reference uses "
                              "1e-3).", minimum=0)
    sharpen: float = option(100.0, "Anneal the categoricals' temperature from 1 to 1/SHARPEN over the updates "
                                   "(geometrically), so the posterior ends concentrated and the exported MAP QNN "
                                   "is the network the bound was fitted to; 1: no annealing.", minimum=1)
    recalibrate: int = option(0, "Calibration-pool images on which every concrete QNN (the exported MAP, each "
                                 "Monte Carlo sample, the PTQ baseline) gets its batch-norm statistics "
                                 "re-estimated; 0 keeps the float student's (what the posterior was fitted "
                                 "with). Helps an untrained posterior (--bqn-steps 0) at 1-2 bits.", minimum=0)
    targets: str = option("labels", "What the bound fits: the labels, or the teacher's softmax (soft targets).",
                          choices=TARGETS)
    batch_size: int = option(128, "Training batch.", minimum=1)
    samples: int = option(5, "Sampled QNNs of the Monte Carlo evaluation (S).", minimum=1)

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def loop(self) -> LoopConfig:
        """How the posterior trains: Adam at `lr` with a cosine schedule, a checkpoint every epoch, the
        distillation's guard."""
        return LoopConfig(Schedule(self.lr, "cosine"))

    def validate(self) -> None:
        if not self.enabled and (self.act_bits or self.exclude or self.train_float):
            raise UsageError(f"{opt('bqn_act_bits')}, {opt('bqn_exclude')} and {opt('bqn_train_float')} shape the BQN "
                             f"stage: they need {opt('bqn_bits')}")
