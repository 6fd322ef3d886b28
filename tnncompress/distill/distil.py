"""The distillation stage: Seq-KD or E2E-KD of a Layer-Decomp student from its teacher.

Both models stay in eval mode throughout: batch-norm statistics are the teacher's, and the affine
parameters of the norms right after compressed layers are trained with the factors. This keeps a step
independent of the batch composition, so one process and torchrun compute the same thing.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import pickle
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..calibrate import ActivationCache, CalibrationPool, calibration_pool
from ..capture import capture
from ..data import ClassificationData
from ..einsum import chosen_plans, pin_plans
from ..errors import CheckpointError, opt
from ..evaluate import evaluate
from ..formats import planned
from ..inspect import last_layer
from ..progress import training_progress
from ..schema import from_data, to_data
from ..spectral.control import SpectralControl
from ..timing import median_seconds
from .budget import WallClock, deadline_of, seq_share, seq_until, steps_left, steps_that_fit
from .config import DistillConfig
from .distributed import Context
from .hooks import checkpoint_saved
from .loop import Phase, PhaseState, train_phase
from .objectives import activation, logits_loss, unit_loss
from .result import Budget, CurvePoint, DistillResult, PhaseRecord
from .stream import BatchStream, CachedStream
from .units import Unit, find_units, unit_module

CHECKPOINT_FILE = "distill.pt"
CHECKPOINT_VERSION = 2
log = logging.getLogger(__name__)


def distil(teacher: nn.Module, student: nn.Module, train: ClassificationData, test: ClassificationData | None,
           input_size: tuple[int, int, int], config: DistillConfig, ctx: Context, seed: int = 0, workers: int = 0,
           checkpoint_dir: Path | None = None, resume: bool = False, pool: CalibrationPool | None = None,
           cache_memory: int = 1 << 30, start: tuple[float, int] | None = None,
           spectral: SpectralControl | None = None) -> DistillResult:
    """Distil `student` (in place) from `teacher` with `config.algorithm`: "seq" (Seq-KD), "e2e" (E2E-KD)
    or "auto" (Seq-KD by blocks on cached activations, then E2E-KD, sharing one budget).

    Cached Seq-KD trains each unit on (its input, the teacher's output) over the calibration `pool`
    (drawn from `train` when not given). With `checkpoint_dir`, the state is saved there after every
    unit and every `checkpoint_every` steps (by rank 0); with `resume`, a saved state is continued from;
    each saved state goes to the observers of hooks.py (tests interrupt a run there). `start` is the
    student's (top-1, samples) on `test` when the caller has just measured it: the curve starts there.
    With `spectral`, each phase's layers are projected every `spectral.every` steps and its loss carries
    the orthogonality penalty."""
    if not config.enabled:
        raise ValueError("distil() needs an algorithm: seq, e2e or auto")
    config = config.resolved()
    seq_unit = "block" if config.algorithm == "auto" else config.seq_unit
    units = find_units(student, input_size, seq_unit if config.algorithm in ("seq", "auto") else "layer")
    if not units:
        raise ValueError("the student has no compressed layer to distil")
    memory_format = torch.channels_last if ctx.device.startswith("cuda") else torch.preserve_format
    teacher.to(ctx.device, memory_format=memory_format).eval()
    student.to(ctx.device, memory_format=memory_format).eval()
    requires = {n: p.requires_grad for n, p in student.named_parameters()}
    for p in list(teacher.parameters()) + list(student.parameters()):
        p.requires_grad_(False)
    stream = BatchStream(train, config.batch_size, seed, ctx, config.augment, workers)
    cached = config.algorithm in ("seq", "auto") and config.seq_cache
    if cached and pool is None:
        pool = calibration_pool(train, 2048, seed)
    start_phase, state, saved, cache = 0, PhaseState(), None, None
    path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if resume and path is not None and path.is_file():
        saved = _read_checkpoint(path, ctx.device)
        pin_plans(saved.get("plans", {}))  # the interrupted run's plans: the same sums, bit for bit
        student.load_state_dict(saved["student"])
        result = from_data(DistillResult, saved["result"], str(path))
        clock = WallClock(result.budget.seconds, result.seconds)  # what is left of the budget
        start_phase, state = saved["phase"], PhaseState(**saved["state"])
        specs = [(kind, next((u for u in units if u.name == name), None), steps)
                 for kind, name, steps in result.budget.phases]
        log.info("resuming %s distillation at phase %d/%d, step %d", config.algorithm, start_phase + 1,
                 len(specs), state.step)
    else:
        clock = WallClock(config.budget_seconds())
        ctx.broadcast_module(student)
        if cached:
            with clock.part("cache"):
                cache = _unit_cache(teacher, pool, units, config, cache_memory)
        with clock.part("pilots"):
            specs, pilots = _phase_specs(units, config, len(train), teacher, student, stream, pool if cached else None,
                                         ctx)
        budget = sum(steps for kind, _, steps in specs if kind != "finetune" or config.algorithm == "auto")
        result = DistillResult(config.algorithm, Budget(budget, config.finetune_steps, config.batch_size,
                                                        budget * config.batch_size / len(train),
                                                        config.budget_seconds(),
                                                        [[k, u.name if u else None, n] for k, u, n in specs],
                                                        pilots, seq_until(clock, config, specs)),
                               train.describe(), ctx.world, ctx.device, to_data(config))
        with clock.part("evaluations") if start is None else contextlib.nullcontext():
            _curve_point(result, "start", student, test, config, ctx, known=start)
    if cached and cache is None and start_phase < len(specs):
        with clock.part("cache"):
            cache = _unit_cache(teacher, pool, units, config, cache_memory)
    if cache is not None:
        result.cache = cache.report

    def save(phase_index: int, phase_state: PhaseState) -> None:
        with clock.part("checkpoints"):
            result.seconds = clock.breakdown()
            payload = {"version": CHECKPOINT_VERSION, "phase": phase_index, "state": phase_state.to_dict(),
                       "student": student.state_dict(), "result": to_data(result), "plans": chosen_plans()}
            if ctx.main and path is not None:
                tmp = path.with_suffix(f".tmp-{os.getpid()}")
                torch.save(payload, tmp)
                os.replace(tmp, path)
            ctx.barrier()
        checkpoint_saved(payload)

    # training plans are timed (forward + backward): FLOPs mislead on small layers
    try:
        with planned(student, config.plan), training_progress() as progress:
            # with several phases, one more bar follows the whole budget (its time left)
            total = sum(steps for _, _, steps in specs)
            done = sum(steps for _, _, steps in specs[:start_phase]) + state.step
            overall = (progress.task(f"{config.algorithm} distillation", total, config.batch_size, completed=done)
                       if len(specs) > 1 else (lambda n=1, loss=0.0: None))
            for index in range(start_phase, len(specs)):
                kind, unit, steps = specs[index]
                phase = build_phase(index, kind, unit, steps, teacher, student, units, config, ctx, len(specs),
                                    stream=stream, spectral=spectral)
                if kind == "seq" and cache is not None:
                    with clock.part("unit_inputs"):
                        phase.stream = _unit_stream(cache, unit, student, pool, config, seed, ctx)
                if state.step == 0 and result.budget.step_seconds:  # the phase's steps, from the time left now
                    steps = phase.steps = steps_left(index, specs, result.budget, clock, config, len(train))
                    specs[index] = (kind, unit, steps)
                    result.budget.phases[index][2] = steps
                deadline = deadline_of(index, specs, result.budget, clock)
                own = progress.task(phase.name, steps, config.batch_size, completed=state.step)

                def advance(n: int = 1, loss: float = 0.0, own=own) -> None:
                    own(n, loss)
                    overall(n, loss)
                started, cpu_started = time.perf_counter(), time.process_time()

                def checkpoint(s: PhaseState, phase=phase) -> None:
                    if s.step < phase.steps:  # inside the phase; the phase end is saved below
                        if phase.kind != "seq":
                            with clock.part("evaluations"):
                                _curve_point(result, f"{phase.name} step {s.step}", student, test, config, ctx,
                                             result.updates + s.step)
                        save(phase.index, s)

                with clock.part("training"):
                    state = train_phase(phase, stream, config, ctx, state, checkpoint, advance, result.events,
                                        deadline=deadline)
                result.updates += state.step
                record = PhaseRecord(phase.name, kind, state.step, sum(p.numel() for p in phase.params),
                                     state.first_loss, state.loss_sum / max(state.step, 1), state.losses,
                                     state.seconds, state.step * config.batch_size / max(state.seconds, 1e-9),
                                     state.retries, time.perf_counter() - started,
                                     time.process_time() - cpu_started)
                if unit is not None:
                    record.unit, record.layers, record.norms = unit.name, unit.layers, unit.norms
                if state.out_of_time:
                    record.planned_steps = phase.steps
                    result.budget.phases[index][2] = state.step
                    log.warning("%s: the budget's deadline came at step %d of %d", phase.name, state.step,
                                phase.steps)
                result.phases.append(record)
                log.debug("%s: %d steps, mean loss %.4g, %.0f images/s", phase.name, state.step, record.mean_loss,
                          record.images_per_s)
                # after every unit of Seq-KD (its stair-steps); cached units are fast: after the last one only
                if kind != "seq" or cache is None or index + 1 == len(specs) or specs[index + 1][0] != "seq":
                    with clock.part("evaluations"):
                        _curve_point(result, phase.name, student, test, config, ctx)
                state = PhaseState()
                save(index + 1, state)
    finally:
        if cache is not None:
            cache.close()
    result.seconds = clock.breakdown()
    b = result.budget  # the steps as decided and taken
    b.steps = sum(n for kind, _, n in b.phases if kind != "finetune" or config.algorithm == "auto")
    b.epochs = b.steps * b.batch_size / len(train)
    b = result.budget  # the steps as decided and taken
    b.steps = sum(n for kind, _, n in b.phases if kind != "finetune" or config.algorithm == "auto")
    b.epochs = b.steps * b.batch_size / len(train)

    for n, p in student.named_parameters():
        p.requires_grad_(requires[n])
    student.to(memory_format=torch.contiguous_format)
    teacher.to(memory_format=torch.contiguous_format)
    return result


def _unit_cache(teacher: nn.Module, pool: CalibrationPool, units: list[Unit], config: DistillConfig,
                memory: int) -> ActivationCache:
    """The teacher's output of every unit (and its input, when units learn from the teacher's inputs)."""
    inputs = [u.name for u in units] if config.seq_inputs == "teacher" else []
    return ActivationCache(teacher, pool, inputs, [u.output for u in units], memory)


def _unit_stream(cache: ActivationCache, unit: Unit, student: nn.Module, pool: CalibrationPool,
                 config: DistillConfig, seed: int, ctx: Context) -> CachedStream:
    """A cached unit's batches. Its inputs are the teacher's (from the cache), or the student's, computed
    now, after every unit before it has been trained (Eq. 2.10)."""
    targets = cache[(unit.output, "output")]
    if config.seq_inputs == "teacher":
        inputs = cache[(unit.name, "input")]
    else:
        device = next(student.parameters()).device
        parts = [capture(student, pool.images[i:i + 256].to(device), inputs=(unit.name,))[(unit.name, "input")]
                 for i in range(0, len(pool), 256)]
        inputs = torch.cat(parts).to("cpu", targets.dtype)
    return CachedStream(inputs, targets, config.batch_size, seed, ctx, unit.name)


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


def _phase_specs(units: list[Unit], config: DistillConfig, train_samples: int, teacher: nn.Module,
                 student: nn.Module, stream: BatchStream, pool: CalibrationPool | None,
                 ctx: Context) -> list[tuple[str, Unit | None, int]]:
    """(kind, unit, steps) of each phase.

    A step budget (steps, or epochs) is shared evenly by the Seq-KD units (earlier units take the
    remainder); fine-tuning comes after. A wall-clock budget is turned into steps by timing a few steps
    of each phase first (on a copy of the student): "auto" gives `seq_share` of it to Seq-KD, split
    evenly in time between the units, and the rest to E2E-KD; "seq" gives it all to the units and "e2e"
    to E2E-KD. The steps chosen are recorded, so a resumed run takes the same ones."""
    seconds = config.budget_seconds()
    seq = config.algorithm in ("seq", "auto")
    if seconds is None:
        budget = config.total_steps(train_samples)
        if not seq:
            return [("e2e", None, budget)], []
        base, extra = divmod(budget, len(units))
        specs = [("seq", u, base + (i < extra)) for i, u in enumerate(units)]
        specs = [s for s in specs if s[2] > 0]
        finetune = config.finetune_steps or (budget if config.algorithm == "auto" else 0)
        return specs + ([("finetune", None, finetune)] if finetune else []), []
    share = seq_share(config)
    specs, pilots = [], []
    if seq and share > 0:
        per_unit = seconds * share / len(units)
        for u in units:
            pilots.append(_step_seconds("seq", u, teacher, student, units, config, ctx, stream, pool))
            specs.append(("seq", u, steps_that_fit(per_unit, pilots[-1])))
    if share < 1:
        kind = "e2e" if config.algorithm == "e2e" else "finetune"
        pilots.append(_step_seconds(kind, None, teacher, student, units, config, ctx, stream, None))
        specs.append((kind, None, steps_that_fit(seconds * (1 - share), pilots[-1])))
    return specs, pilots


def _step_seconds(kind: str, unit: Unit | None, teacher: nn.Module, student: nn.Module, units: list[Unit],
                  config: DistillConfig, ctx: Context, stream: BatchStream, pool: CalibrationPool | None) -> float:
    """Median seconds of a training step of this phase, timed on a copy of the student (without the
    spectral projection: every N steps it costs little next to the steps themselves)."""
    copy_ = copy.deepcopy(student)
    with planned(copy_, config.plan):
        phase = build_phase(0, kind, unit, 3, teacher, copy_, units, config, ctx, 1, stream=stream)
        if kind == "seq" and pool is not None:
            x = capture(copy_, pool.images[:config.batch_size].to(ctx.device), inputs=(unit.name,))[(unit.name,
                                                                                                      "input")]
            y = capture(teacher, pool.images[:config.batch_size].to(ctx.device), outputs=(unit.output,))[
                (unit.output, "output")]
            batch = (x, y)
        else:
            batch = stream.batch(0, 0)
        optimizer = torch.optim.Adam(phase.params, lr=0.0)

        def step():
            optimizer.zero_grad(set_to_none=True)
            phase.loss(*batch).backward()
            optimizer.step()

        return median_seconds(step, min_time=0.05, max_reps=5)


def build_phase(index: int, kind: str, unit: Unit | None, steps: int, teacher: nn.Module, student: nn.Module,
                units: list[Unit], config: DistillConfig, ctx: Context, count: int,
                stream: BatchStream | None = None, spectral: SpectralControl | None = None) -> Phase:
    """One phase: a Seq-KD unit ("seq"), E2E-KD ("e2e") or the fine-tune ("finetune"), with its trained
    parameters switched on (and the others off) and its loss. A cached Seq-KD phase's batches are
    (unit input, teacher output) pairs; the others' are images and labels."""
    config = config.resolved()  # the "auto" loss and schedule, for callers other than distil() too
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

    if kind == "seq" and config.seq_cache:
        def loss(inputs, target):
            return unit_loss(call, inputs, target)
    elif kind == "seq":
        def loss(x, _y):
            target = activation(teacher, unit.output, x, output=True)
            inputs = activation(student, unit.name, x, output=False)
            return unit_loss(call, inputs, target)
    else:
        loss = _logits_objective(teacher, student, call, config, stream)
    phase = Phase(index, name, kind, steps, call, params, loss)
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


def _curve_point(result: DistillResult, after: str, student: nn.Module, test: ClassificationData | None,
                 config: DistillConfig, ctx: Context, updates: int | None = None,
                 known: tuple[float, int] | None = None) -> None:
    point = CurvePoint(after, result.updates if updates is None else updates)
    if known is not None:
        point.top1, point.samples = known
    elif test is not None and ctx.main:
        with planned(student, config.plan):
            metrics = evaluate(student, test, device=ctx.device, limit=config.eval_limit)
        point.top1, point.samples = metrics.top1, metrics.samples
        log.info("top-1 after %s: %.2f%% (%d test samples)", after, 100 * metrics.top1, metrics.samples)
    ctx.barrier()
    result.curve.append(point)
