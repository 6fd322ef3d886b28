"""What the BQN stage reports: the posterior's setting, its training, the model size, and the accuracy,
NLL and ECE of the float student, of plain post-training quantisation (PTQ), and of the BQN's three
evaluations. It is report.json's `bqn` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evaluate.metrics import Metrics


@dataclass
class BqnReport:
    bits: int
    dense: bool
    lam: float
    targets: str
    tensors: list[str]  # the quantised parameters (factors; and dense weights with --bqn-dense)
    size: dict  # quantised / float weights, bits per weight, bytes of the MAP QNN against float32
    training: dict  # steps, losses, KL, temperature, seconds
    float_student: Metrics | None = None  # before the stage
    ptq: Metrics | None = None  # round-to-nearest on the same grid and scale (the posterior's MAP at its start)
    analytic: Metrics | None = None  # NLL: Theorem 5.2's expression (a bound only where analytic_inexact is None)
    mc: Metrics | None = None
    map: Metrics | None = None
    samples: int = 5  # S of the Monte Carlo evaluation
    sharpen: float = 1.0  # the categoricals' temperature went from 1 to 1/sharpen over the updates
    recalibrated: int = 0  # pool images each concrete QNN's batch norms were re-estimated on (0: not)
    temperature_folded_into: str | None = None  # the layer whose weights absorbed 1/temperature (None: not folded)
    activations: dict | None = None  # quantised activations: bits, nodes, fitted and learned steps (None: float)
    train_float: bool = False  # the float parameters learned with the posterior
    codes_file: str = "bqn.safetensors"
    notes: list[str] = field(default_factory=list)
    expected_nll: float | None = None  # E_w[NLL(w)] by Monte Carlo over the S draws (what the analytic NLL bounds)
    expected_nll_se: float | None = None  # its standard error
    analytic_inexact: str | None = None  # why the analytic NLL is an approximation, not a bound (None: a bound)
