"""What the BQN stage reports: the posterior's setting, its training, the model size, and the accuracy,
NLL and ECE of the float student, of plain post-training quantisation (PTQ), and of the BQN's three
evaluations. It is report.json's `bqn` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evaluate.metrics import Metrics
from ..train import GuardEvent


@dataclass
class QnnSize:
    """Bytes of the MAP QNN as exported (bits per quantised weight, packed; float32 scales and everything
    else) against the float32 student."""

    quantised_weights: int
    float_weights: int
    bits: int
    bits_per_weight: float
    bytes: int
    float32_bytes: int
    ratio: float


@dataclass
class PosteriorTraining:
    """What learning the posterior did: its steps and losses, the KL to the prior, the temperature."""

    steps: int
    first_loss: float | None
    mean_loss: float
    interval_losses: list[float]
    seconds: float  # the phase as a whole
    train_seconds: float  # in training steps
    kl: float
    temperature: float
    guard_events: list[GuardEvent] = field(default_factory=list)


@dataclass
class ActivationReport:
    """Quantised activations: every ReLU a quantiser of `bits`, with the steps fitted on the pool and as
    learned with the posterior."""

    bits: int
    nodes: list[str]
    steps: dict[str, float]  # fitted on the calibration pool (empty without one)
    recalibrated: int  # pool images the norms were re-estimated on under the quantised activations
    learned_steps: dict[str, float] = field(default_factory=dict)


@dataclass
class BqnReport:
    bits: int
    dense: bool
    lam: float
    targets: str
    tensors: list[str]  # the quantised parameters (factors; and dense weights with --bqn-dense)
    size: QnnSize
    training: PosteriorTraining
    float_student: Metrics | None = None  # before the stage
    ptq: Metrics | None = None  # round-to-nearest on the same grid and scale (the posterior's MAP at its start)
    analytic: Metrics | None = None  # NLL: Theorem 5.2's expression (a bound only where analytic_inexact is None)
    mc: Metrics | None = None
    map: Metrics | None = None
    samples: int = 5  # S of the Monte Carlo evaluation
    sharpen: float = 1.0  # the categoricals' temperature went from 1 to 1/sharpen over the updates
    recalibrated: int = 0  # pool images each concrete QNN's batch norms were re-estimated on (0: not)
    temperature_folded_into: str | None = None  # the layer whose weights absorbed 1/temperature (None: not folded)
    activations: ActivationReport | None = None  # None: float activations
    train_float: bool = False  # the float parameters learned with the posterior
    codes_file: str = "bqn.safetensors"
    notes: list[str] = field(default_factory=list)
    expected_nll: float | None = None  # E_w[NLL(w)] by Monte Carlo over the S draws (what the analytic NLL bounds)
    expected_nll_se: float | None = None  # its standard error
    analytic_inexact: str | None = None  # why the analytic NLL is an approximation, not a bound (None: a bound)
