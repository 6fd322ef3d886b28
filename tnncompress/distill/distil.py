"""The distillation stage: Seq-KD or E2E-KD of a Layer-Decomp student from its teacher.

Both models stay in eval mode throughout: batch-norm statistics are the teacher's, and the affine
parameters of the norms right after compressed layers are trained with the factors. This keeps a step
independent of the batch composition, so one process and torchrun compute the same thing.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import ClassificationData
from ..errors import CheckpointError, opt
from ..evaluate import evaluate
from ..formats import planned
from ..progress import training_progress
from ..schema import from_data, to_data
from .config import DistillConfig
from .distributed import Context
from .loop import Phase, PhaseState, train_phase
from .objectives import activation, logits_loss, unit_loss
from .result import Budget, CurvePoint, DistillResult, PhaseRecord
from .stream import BatchStream
from .units import Unit, find_units, unit_module

CHECKPOINT_FILE = "distill.pt"
CHECKPOINT_VERSION = 2
log = logging.getLogger(__name__)


def distil(teacher: nn.Module, student: nn.Module, train: ClassificationData, test: ClassificationData | None,
           input_size: tuple[int, int, int], config: DistillConfig, ctx: Context, seed: int = 0, workers: int = 0,
           checkpoint_dir: Path | None = None, resume: bool = False,
           on_checkpoint: Callable[[dict], None] | None = None) -> DistillResult:
    """Distil `student` (in place) from `teacher` with `config.algorithm` ("seq" or "e2e").

    With `checkpoint_dir`, the state is saved there after every unit and every `checkpoint_every`
    steps (by rank 0); with `resume`, a saved state is continued from. `on_checkpoint` is called with
    each saved state (tests use it to interrupt a run)."""
    if not config.enabled:
        raise ValueError("distil() needs an algorithm: seq or e2e")
    units = find_units(student, input_size, config.seq_unit if config.algorithm == "seq" else "layer")
    if not units:
        raise ValueError("the student has no compressed layer to distil")
    memory_format = torch.channels_last if ctx.device.startswith("cuda") else torch.preserve_format
    teacher.to(ctx.device, memory_format=memory_format).eval()
    student.to(ctx.device, memory_format=memory_format).eval()
    requires = {n: p.requires_grad for n, p in student.named_parameters()}
    for p in list(teacher.parameters()) + list(student.parameters()):
        p.requires_grad_(False)
    stream = BatchStream(train, config.batch_size, seed, ctx, config.augment, workers)
    budget = config.total_steps(len(train))
    specs = _phase_specs(units, config, budget)
    result = DistillResult(config.algorithm, Budget(budget, config.finetune_steps, config.batch_size,
                                                    budget * config.batch_size / len(train)),
                           train.describe(), ctx.world, ctx.device, to_data(config))
    start_phase, state = 0, PhaseState()
    path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if resume and path is not None and path.is_file():
        saved = _read_checkpoint(path, ctx.device)
        student.load_state_dict(saved["student"])
        result = from_data(DistillResult, saved["result"], str(path))
        start_phase, state = saved["phase"], PhaseState(**saved["state"])
        log.info("resuming %s distillation at phase %d/%d, step %d", config.algorithm, start_phase + 1,
                 len(specs), state.step)
    else:
        ctx.broadcast_module(student)
        _curve_point(result, "layer_decomp", student, test, config, ctx)

    def save(phase_index: int, phase_state: PhaseState) -> None:
        payload = {"version": CHECKPOINT_VERSION, "phase": phase_index, "state": phase_state.to_dict(),
                   "student": student.state_dict(), "result": to_data(result)}
        if ctx.main and path is not None:
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            torch.save(payload, tmp)
            os.replace(tmp, path)
        ctx.barrier()
        if on_checkpoint is not None:
            on_checkpoint(payload)

    # training plans are timed (forward + backward): FLOPs mislead on small layers
    with planned(student, config.plan), training_progress() as progress:
        for index in range(start_phase, len(specs)):
            kind, unit, steps = specs[index]
            phase = build_phase(index, kind, unit, steps, teacher, student, units, config, ctx, len(specs))
            advance = progress.task(phase.name, steps, config.batch_size, completed=state.step)
            started = time.perf_counter()

            def checkpoint(s: PhaseState, phase=phase) -> None:
                if s.step < phase.steps:  # inside the phase; the phase end is saved below
                    if phase.kind != "seq":
                        _curve_point(result, f"{phase.name} step {s.step}", student, test, config, ctx,
                                     result.updates + s.step)
                    save(phase.index, s)

            state = train_phase(phase, stream, config, ctx, state, checkpoint, advance, result.events)
            result.updates += state.step
            record = PhaseRecord(phase.name, kind, state.step, sum(p.numel() for p in phase.params),
                                 state.first_loss, state.loss_sum / max(state.step, 1), state.losses, state.seconds,
                                 state.step * config.batch_size / max(state.seconds, 1e-9), state.retries,
                                 time.perf_counter() - started)
            if unit is not None:
                record.unit, record.layers, record.norms = unit.name, unit.layers, unit.norms
            result.phases.append(record)
            log.debug("%s: %d steps, mean loss %.4g, %.0f images/s", phase.name, state.step, record.mean_loss,
                      record.images_per_s)
            _curve_point(result, phase.name, student, test, config, ctx)
            state = PhaseState()
            save(index + 1, state)

    for n, p in student.named_parameters():
        p.requires_grad_(requires[n])
    student.to(memory_format=torch.contiguous_format)
    teacher.to(memory_format=torch.contiguous_format)
    return result


def _read_checkpoint(path: Path, device: str) -> dict:
    """A kept distillation checkpoint: weights only, never unpickled code; anything else is refused in
    one line (the interrupted run is then started over with --force)."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable distillation checkpoint ({first[:160]}); "
                              f"pass {opt('force')} to start the run over") from None
    if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION or "result" not in saved:
        raise CheckpointError(f"{path}: not a tnncompress distillation checkpoint (version "
                              f"{CHECKPOINT_VERSION}); pass {opt('force')} to start the run over")
    return saved


def _phase_specs(units: list[Unit], config: DistillConfig, budget: int) -> list[tuple[str, Unit | None, int]]:
    """(kind, unit, steps) of each phase. Seq-KD shares the budget evenly (earlier units take the
    remainder); fine-tuning comes after."""
    if config.algorithm == "e2e":
        return [("e2e", None, budget)]
    base, extra = divmod(budget, len(units))
    specs = [("seq", u, base + (i < extra)) for i, u in enumerate(units)]
    specs = [s for s in specs if s[2] > 0]
    if config.finetune_steps:
        specs.append(("finetune", None, config.finetune_steps))
    return specs


def build_phase(index: int, kind: str, unit: Unit | None, steps: int, teacher: nn.Module, student: nn.Module,
                units: list[Unit], config: DistillConfig, ctx: Context, count: int) -> Phase:
    """One phase: a Seq-KD unit ("seq"), E2E-KD ("e2e") or the fine-tune ("finetune"), with its trained
    parameters switched on (and the others off) and its loss."""
    if kind == "seq":
        names = unit.trained()
        module = unit_module(student, unit)
        name = f"Seq-KD {index + 1}/{count} {unit.name}"
    else:
        names = [n for u in units for n in u.trained()]
        module = student
        name = "E2E-KD" if kind == "e2e" else "fine-tune"
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

    if kind == "seq":
        def loss(x, _y):
            target = activation(teacher, unit.output, x, output=True)
            inputs = activation(student, unit.name, x, output=False)
            return unit_loss(call, inputs, target)
    else:
        def loss(x, y):
            with torch.no_grad():
                target = teacher(x)
            return logits_loss(call(x), target, y, config.loss, config.temperature, config.ce_weight)
    return Phase(index, name, kind, steps, call, params, loss)


def _curve_point(result: DistillResult, after: str, student: nn.Module, test: ClassificationData | None,
                 config: DistillConfig, ctx: Context, updates: int | None = None) -> None:
    point = CurvePoint(after, result.updates if updates is None else updates)
    if test is not None and ctx.main:
        with planned(student, "measure"):
            metrics = evaluate(student, test, device=ctx.device, limit=config.eval_limit)
        point.top1, point.samples = metrics.top1, metrics.samples
        log.info("top-1 after %s: %.2f%% (%d test samples)", after, 100 * metrics.top1, metrics.samples)
    ctx.barrier()
    result.curve.append(point)
