"""The phases of a distillation: which there are and how many steps each gets (`phase_specs`), and one
phase built for the training engine (`build_phase`): its trained parameters and its loss."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..calibrate import CalibrationPool
from ..capture import capture
from ..formats import planned
from ..inspect import last_layer
from ..spectral.control import SpectralControl
from ..timing import median_seconds
from ..train import BatchStream, Context, Phase
from .budget import seq_share, steps_that_fit
from .config import DistillConfig
from .objectives import activation, logits_loss, unit_loss
from .units import Unit, unit_module


@dataclass
class KdModels:
    teacher: nn.Module
    student: nn.Module
    units: list[Unit]  # the student's units, in the order Seq-KD trains them


@dataclass(frozen=True)
class PhaseSpec:
    index: int
    kind: str  # "seq" (a Seq-KD unit), "e2e" or "finetune"
    unit: Unit | None
    steps: int
    count: int  # phases in all


def phase_specs(models: KdModels, config: DistillConfig, train_samples: int, stream: BatchStream,
                pool: CalibrationPool | None, ctx: Context) -> tuple[list[PhaseSpec], list[float]]:
    """Each phase, and the seconds of a step of each phase timed for a wall-clock budget (else none).

    A step budget (steps, or epochs) is shared evenly by the Seq-KD units (earlier units take the
    remainder); fine-tuning comes after. A wall-clock budget is turned into steps by timing a few steps
    of each phase first (on a copy of the student): "auto" gives `seq_share` of it to Seq-KD, split
    evenly in time between the units, and the rest to E2E-KD; "seq" gives it all to the units and "e2e"
    to E2E-KD. The steps chosen are recorded, so a resumed run takes the same ones."""
    seconds = config.budget_seconds()
    seq = config.algorithm in ("seq", "auto")
    units = models.units
    specs, pilots = [], []
    if seconds is None:
        budget = config.total_steps(train_samples)
        if not seq:
            specs = [("e2e", None, budget)]
        else:
            base, extra = divmod(budget, len(units))
            shares = [("seq", u, base + (i < extra)) for i, u in enumerate(units)]
            specs = [s for s in shares if s[2] > 0]
            finetune = config.finetune_steps or (budget if config.algorithm == "auto" else 0)
            specs += [("finetune", None, finetune)] if finetune else []
    else:
        share = seq_share(config)
        if seq and share > 0:
            for u in units:
                pilots.append(_step_seconds(PhaseSpec(0, "seq", u, 3, 1), models, config, ctx, stream, pool))
                specs.append(("seq", u, steps_that_fit(seconds * share / len(units), pilots[-1])))
        if share < 1:
            kind = "e2e" if config.algorithm == "e2e" else "finetune"
            pilots.append(_step_seconds(PhaseSpec(0, kind, None, 3, 1), models, config, ctx, stream, None))
            specs.append((kind, None, steps_that_fit(seconds * (1 - share), pilots[-1])))
    return [PhaseSpec(i, kind, unit, steps, len(specs)) for i, (kind, unit, steps) in enumerate(specs)], pilots


def _step_seconds(spec: PhaseSpec, models: KdModels, config: DistillConfig, ctx: Context, stream: BatchStream,
                  pool: CalibrationPool | None) -> float:
    """Median seconds of a training step of this phase, timed on a copy of the student (without the
    spectral projection: every N steps it costs little next to the steps themselves)."""
    copied = KdModels(models.teacher, copy.deepcopy(models.student), models.units)
    with planned(copied.student, config.plan):
        phase = build_phase(spec, copied, config, ctx, stream=stream)
        if spec.kind == "seq" and pool is not None:
            images, unit = pool.images[:config.batch_size].to(ctx.device), spec.unit
            x = capture(copied.student, images, inputs=(unit.name,))[(unit.name, "input")]
            y = capture(models.teacher, images, outputs=(unit.output,))[(unit.output, "output")]
            batch = (x, y)
        else:
            batch = stream.batch(0, 0)
        optimizer = torch.optim.Adam(phase.params, lr=0.0)

        def step():
            optimizer.zero_grad(set_to_none=True)
            phase.loss(*batch).backward()
            optimizer.step()

        return median_seconds(step, min_time=0.05, max_reps=5)


def build_phase(spec: PhaseSpec, models: KdModels, config: DistillConfig, ctx: Context,
                stream: BatchStream | None = None, spectral: SpectralControl | None = None) -> Phase:
    """One phase: a Seq-KD unit ("seq"), E2E-KD ("e2e") or the fine-tune ("finetune"), with its trained
    parameters switched on (and the others off) and its loss. A cached Seq-KD phase's batches are
    (unit input, teacher output) pairs (its stream is set by the caller); the others' are images and
    labels from `stream`."""
    config = config.resolved()  # the "auto" loss and schedule, for callers other than distil() too
    teacher, student, unit = models.teacher, models.student, spec.unit
    if spec.kind == "seq":
        names = unit.trained()
        module = unit_module(student, unit)
        name = f"Seq-KD {spec.index + 1}/{spec.count} {unit.name}"
    else:
        names = [n for u in models.units for n in u.trained()]
        module = student
        name = "E2E-KD" if spec.kind == "e2e" else "fine-tune"
    params = [p for n in names for p in student.get_submodule(n).parameters()]
    for p in params:
        p.requires_grad_(True)
    for p in student.parameters():  # only this phase's parameters train
        if not any(p is q for q in params):
            p.requires_grad_(False)
    call = module
    if ctx.distributed:
        ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
        call = DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    if spec.kind == "seq" and config.seq_cache:
        def loss(inputs, target):
            return unit_loss(call, inputs, target)
    elif spec.kind == "seq":
        def loss(x, _y):
            target = activation(teacher, unit.output, x, output=True)
            inputs = activation(student, unit.name, x, output=False)
            return unit_loss(call, inputs, target)
    else:
        loss = _logits_objective(teacher, student, call, config, stream)
    phase = Phase(spec.index, name, spec.kind, spec.steps, call, params, loss, stream=stream)
    if spectral is not None:
        _constrained(phase, spectral, names)
    return phase
def _constrained(phase: Phase, spectral: SpectralControl, names: list[str]) -> None:
    """The phase's loss plus the orthogonality penalty of its layers, and their projection."""
    if spectral.config.orthogonality:
        objective = phase.loss

        def loss(x, y):
            penalty = spectral.penalty(names)
            return objective(x, y) if penalty is None else objective(x, y) + penalty
        phase.loss = loss
    if spectral.projects:
        phase.project, phase.project_every = (lambda: spectral.project(names)), spectral.every


def _logits_objective(teacher: nn.Module, student: nn.Module, call: nn.Module, config: DistillConfig,
                      stream: BatchStream | None):
    """E2E-KD's loss on the logits, with the feature loss (the classifier's input) when asked for. Without
    augmentation a training image always gives the teacher the same input: its outputs are kept per
    image and reused from the second epoch on."""
    classifier = last_layer(student)
    kept: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logits, and the classifier's input when the feature loss needs it."""
        if not config.feature_weight:
            return model(x), None
        seen: dict[str, torch.Tensor] = {}
        handle = (student if model is call else model).get_submodule(classifier).register_forward_pre_hook(
            lambda _m, args: seen.__setitem__("x", args[0]))
        try:
            return model(x), seen.get("x")
        finally:
            handle.remove()

    def teacher_outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            return run(teacher, x)

    def loss(x, y):
        indices = stream.last_indices if stream is not None else None
        if indices is not None and all(int(i) in kept for i in indices):
            logits = torch.stack([kept[int(i)][0] for i in indices]).to(x.device)
            feats = (torch.stack([kept[int(i)][1] for i in indices]).to(x.device) if config.feature_weight
                     else None)
        else:
            logits, feats = teacher_outputs(x)
            if indices is not None:
                for k, i in enumerate(indices):
                    kept[int(i)] = (logits[k].cpu(), feats[k].cpu() if feats is not None else None)
        out, own = run(call, x)
        total = logits_loss(out, logits, y, config.loss, config.temperature, config.ce_weight)
        if config.feature_weight:
            total = total + config.feature_weight * F.mse_loss(own.float(), feats.float())
        return total
    return loss
