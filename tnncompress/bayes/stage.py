"""The BQN stage: learn a quantized posterior over the student (every process under torchrun), then, on
rank 0, evaluate it three ways next to the float student and plain PTQ, and leave the student holding
its MAP QNN with the integer codes to export. Told by its own options section (`BqnConfig`) and the run
context (seed, device, process group, checkpoints); returns its report section."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..calibrate import CalibrationPool, recalibrate_bn
from ..compress.select import LayerChoice, Selection, check_patterns, matches_pattern
from ..data import ClassificationData
from ..errors import UsageError, opt
from ..evaluate import evaluate
from ..evaluate.config import EvaluateConfig
from ..train import Context
from .activations import fit_steps, quantize_activations, quantizers
from .config import BqnConfig
from .evaluate import evaluate_bqn
from .export import apply_map, fold_temperature
from .network import BayesianQuantizedNetwork
from .propagate import Propagator
from .result import ActivationReport, BqnReport, PosteriorTraining
from .train import learn_posterior

log = logging.getLogger(__name__)


def check(config: BqnConfig, teacher: nn.Module, choices: list[LayerChoice]) -> None:
    """Refuse, before any work, a model whose operations moment propagation has no rule for (named),
    taking as quantised every layer the stage may quantise among the selection's `choices`, and
    activation quantisation without a ReLU."""
    candidates = ({c.info.name for c in choices} if config.dense else
                  {c.info.name for c in choices if c.status == Selection.COMPRESS})
    if config.exclude:
        check_patterns(config.exclude, sorted(candidates), opt("bqn_exclude"), "layer the BQN stage quantises")
    quantised = {f"{name}.{p}" for name in candidates if not any(matches_pattern(q, name) for q in config.exclude)
                 for p, _ in teacher.get_submodule(name).named_parameters()}
    Propagator(teacher, quantised)
    if config.act_bits:
        try:
            quantize_activations(teacher, config.act_bits)
        except ValueError as exc:
            raise UsageError(f"{opt('bqn_act_bits')}: {exc}") from None


@dataclass
class Learned:
    """The stage between learning (every process) and evaluation and export (rank 0)."""

    network: BayesianQuantizedNetwork
    student: nn.Module  # the network's student: a new module when activations are quantised
    float_student: nn.Module  # copies taken before learning, evaluated afterwards
    ptq: nn.Module
    norms: CalibrationPool | None  # what concrete QNNs have their batch norms re-estimated on
    activations: ActivationReport | None
    training: PosteriorTraining


def learn(config: BqnConfig, teacher: nn.Module, student: nn.Module, train: ClassificationData,
          pool: CalibrationPool | None, ctx: Context) -> Learned:
    """Learn the quantized posterior over the student's factors (and, with quantised activations, over
    a student whose ReLUs are quantisers). Each process its share of every batch under torchrun; the
    float student and plain PTQ on the same grid are kept to be evaluated by `finish`."""
    float_student, activations = copy.deepcopy(student).cpu(), None
    if config.act_bits:
        student, activations = quantised_activations(student, config.act_bits, pool, ctx.device)
    network = BayesianQuantizedNetwork(student, config.bits, config.dense, config.scale == "channel",
                                       exclude=config.exclude)
    log.info("BQN: %d tensors, %d weights at %d bits%s", len(network.names), network.quantised_count(), config.bits,
             f", {len(activations.nodes)} activations at {config.act_bits} bits" if activations else "")
    norms = pool.head(config.recalibrate) if pool is not None and config.recalibrate else None
    with torch.no_grad():
        ptq = network.qnn(network.weights("map"), norms).cpu()
    if ctx.main and ctx.checkpoints is not None:
        ctx.checkpoints.mkdir(exist_ok=True)
    ctx.barrier()
    training = learn_posterior(network, teacher if config.targets == "teacher" else None, train, config, ctx)
    if activations:
        activations.learned_steps = {n: float(m.step.detach()) for n, m in quantizers(student).items() if m.bits > 1}
    return Learned(network, student, float_student, ptq, norms, activations, training)


def finish(config: BqnConfig, learned: Learned, test: ClassificationData | None, e: EvaluateConfig, ctx: Context
           ) -> tuple[BqnReport, dict, nn.Module]:
    """Evaluate the learned posterior three ways (and the float student and PTQ), then leave the student
    holding its MAP QNN. Returns the report section, the integer codes to export and the student."""
    network = learned.network
    float_student = ptq = metrics = None
    if test is not None:
        float_student, ptq = (evaluate(model, test, batch_size=e.batch_size, device=ctx.device, limit=e.limit,
                                       description=f"evaluating ({name})")
                              for name, model in (("float student", learned.float_student),
                                                  ("post-training quantisation", learned.ptq)))
        metrics = evaluate_bqn(network, test, config.samples, e.batch_size, e.limit, ctx.device, ctx.seed,
                               learned.norms)
    report = BqnReport(config.bits, config.dense, config.lam, config.targets, list(network.names), network.size(),
                       learned.training, float_student, ptq, metrics.analytic if metrics else None,
                       metrics.mc if metrics else None, metrics.map if metrics else None, config.samples,
                       config.sharpen, len(learned.norms) if learned.norms is not None else 0,
                       activations=learned.activations, train_float=config.train_float)
    if metrics is not None:
        report.expected_nll, report.expected_nll_se = metrics.expected_nll, metrics.expected_nll_se
        report.analytic_inexact = metrics.analytic_inexact
    report.temperature_folded_into = fold_temperature(network)
    codes = apply_map(network, learned.norms)
    network.cpu()
    if metrics is not None:
        log.info("BQN %d bit: analytic %.2f%%, MC(S=%d) %.2f%%, MAP %.2f%% (float %.2f%%, PTQ %.2f%%)", config.bits,
                 100 * metrics.analytic.top1, config.samples, 100 * metrics.mc.top1, 100 * metrics.map.top1,
                 100 * float_student.top1, 100 * ptq.top1)
    return report, codes, learned.student


def quantised_activations(student: nn.Module, bits: int, pool: CalibrationPool | None, device: str
                          ) -> tuple[nn.Module, ActivationReport]:
    """The student with its ReLUs quantised: steps fitted to the float ReLUs' outputs on the pool, then
    its batch norms re-estimated under the quantised activations (sign changes every statistic after it)."""
    student = quantize_activations(student, bits).to(device)
    steps = {}
    if pool is not None:
        steps = fit_steps(student, pool.batches(256, device))
        recalibrate_bn(student, pool)
    nodes = sorted(quantizers(student))
    log.info("activations: %d ReLUs quantised to %d bits%s", len(nodes), bits,
             " (steps fitted on the pool, norms re-estimated)" if pool is not None else "")
    return student, ActivationReport(bits, nodes, steps, len(pool) if pool else 0)
