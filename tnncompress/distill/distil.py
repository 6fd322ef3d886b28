"""The distillation stage: Seq-KD or E2E-KD of a Layer-Decomp student from its teacher, on the training
engine (train/).

Both models stay in eval mode throughout: batch-norm statistics are the teacher's, and the affine
parameters of the norms right after compressed layers are trained with the factors. This keeps a step
independent of the batch composition, so one process and torchrun compute the same thing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..calibrate import ActivationCache, CalibrationPool, calibration_pool, held_out
from ..capture import capture
from ..data import ClassificationData
from ..evaluate import evaluate
from ..formats import planned
from ..progress import training_progress
from ..schema import from_data, to_data
from ..spectral.control import SpectralControl
from ..train import (
    BatchStream,
    CachedStream,
    Callbacks,
    Context,
    PhaseState,
    read_checkpoint,
    save_checkpoint,
    train_phase,
)
from .budget import WallClock, deadline_of, seq_until, steps_left
from .config import DistillConfig
from .phases import KdModels, PhaseSpec, build_phase, phase_specs
from .result import Budget, CurvePoint, DistillResult, PhaseRecord
from .units import Unit, find_units

CHECKPOINT_FILE = "distill.pt"
CHECKPOINT_VERSION = 2
AGREEMENT_IMAGES = 1024  # held-out training images that judge whether Seq-KD helped (--kd auto)
log = logging.getLogger(__name__)


@dataclass
class KdData:
    """What distillation learns from: the training split, the test split of the accuracy curve, the models'
    input size, and the calibration pool cached Seq-KD trains on (drawn from `train` when None)."""

    train: ClassificationData
    test: ClassificationData | None
    input_size: tuple[int, int, int]
    pool: CalibrationPool | None = None


def distil(teacher: nn.Module, student: nn.Module, data: KdData, config: DistillConfig, ctx: Context,
           start: tuple[float, int] | None = None, spectral: SpectralControl | None = None) -> DistillResult:
    """Distil `student` (in place) from `teacher` with `config.algorithm`: "seq" (Seq-KD), "e2e" (E2E-KD)
    or "auto" (Seq-KD by blocks on cached activations, then E2E-KD, sharing one budget).

    Cached Seq-KD trains each unit on (its input, the teacher's output) over the calibration pool. With
    `ctx.checkpoints`, the state is saved there after every unit and every `checkpoint_every` steps (by
    rank 0); with `ctx.resume`, a saved state is continued from; each saved state goes to the observers
    of train/hooks.py (tests interrupt a run there). `start` is the student's (top-1, samples) on the test
    split when the caller has just measured it: the curve starts there. With `spectral`, each phase's
    layers are projected every `spectral.every` steps and its loss carries the orthogonality penalty."""
    if not config.enabled:
        raise ValueError("distil() needs an algorithm: seq, e2e or auto")
    config = config.resolved()
    seq_unit = "block" if config.algorithm == "auto" else config.seq_unit
    units = find_units(student, data.input_size, seq_unit if config.algorithm in ("seq", "auto") else "layer")
    if not units:
        raise ValueError("the student has no compressed layer to distil")
    run = _Distillation(KdModels(teacher, student, units), data, config, ctx, spectral)
    with run.on_device():
        run.begin(start)
        try:
            with planned(student, config.plan), training_progress() as progress:
                run.train(progress)
        finally:
            if run.cache is not None:
                run.cache.close()
    return run.finish()


class _Distillation:
    """One distil() call's state: the phases, their clock and record, the cache and the checkpoints."""

    def __init__(self, models: KdModels, data: KdData, config: DistillConfig, ctx: Context,
                 spectral: SpectralControl | None):
        self.models, self.data, self.config, self.ctx, self.spectral = models, data, config, ctx, spectral
        self.stream = BatchStream(data.train, config.batch_size, ctx.seed, ctx, config.augment, ctx.workers)
        self.cached = config.algorithm in ("seq", "auto") and config.seq_cache
        self.pool = data.pool
        if self.cached and self.pool is None:
            self.pool = calibration_pool(data.train, 2048, ctx.seed)
        self.path = ctx.checkpoints / CHECKPOINT_FILE if ctx.checkpoints is not None else None
        self.cache: ActivationCache | None = None
        self.first, self.state = 0, PhaseState()  # where training starts: phase index, its state
        self.clock: WallClock | None = None
        self.result: DistillResult | None = None
        self.specs: list[PhaseSpec] = []
        self._held_out: list | None = None  # (images, the teacher's classes) judging Seq-KD (--kd auto)

    @contextlib.contextmanager
    def on_device(self):
        """Both models on the device (channels-last on GPUs), nothing trainable until a phase says so;
        afterwards each parameter trains as before and both are contiguous again."""
        teacher, student = self.models.teacher, self.models.student
        memory_format = torch.channels_last if self.ctx.device.startswith("cuda") else torch.preserve_format
        teacher.to(self.ctx.device, memory_format=memory_format).eval()
        student.to(self.ctx.device, memory_format=memory_format).eval()
        requires = {n: p.requires_grad for n, p in student.named_parameters()}
        for p in list(teacher.parameters()) + list(student.parameters()):
            p.requires_grad_(False)
        try:
            yield
        finally:
            for n, p in student.named_parameters():
                p.requires_grad_(requires[n])
            student.to(memory_format=torch.contiguous_format)
            teacher.to(memory_format=torch.contiguous_format)

    def begin(self, start: tuple[float, int] | None) -> None:
        """Resume the kept state, or plan the phases (timing pilots for a wall-clock budget) and measure
        the start of the curve; then the unit cache, if a cached phase is still to come."""
        if self.ctx.resume and self.path is not None and self.path.is_file():
            self._resume()
        else:
            self._plan(start)
        if self.cached and self.cache is None and self.first < len(self.specs):
            with self.clock.part("cache"):
                self.cache = self._unit_cache()
        if self.cache is not None:
            self.result.cache = self.cache.report

    def _resume(self) -> None:
        saved = read_checkpoint(self.path, self.ctx.device, "distillation", CHECKPOINT_VERSION, "result")
        self.models.student.load_state_dict(saved["student"])
        self.result = from_data(DistillResult, saved["result"], str(self.path))
        self.clock = WallClock(self.result.budget.seconds, self.result.seconds)  # what is left of the budget
        self.first, self.state = saved["phase"], PhaseState(**saved["state"])
        units = {u.name: u for u in self.models.units}
        count = len(self.result.budget.phases)
        self.specs = [PhaseSpec(i, kind, units.get(name), steps, count)
                      for i, (kind, name, steps) in enumerate(self.result.budget.phases)]
        log.info("resuming %s distillation at phase %d/%d, step %d", self.config.algorithm, self.first + 1,
                 count, self.state.step)

    def _plan(self, start: tuple[float, int] | None) -> None:
        config, train = self.config, self.data.train
        self.clock = WallClock(config.budget_seconds())
        self.ctx.broadcast_module(self.models.student)
        if self.cached:
            with self.clock.part("cache"):
                self.cache = self._unit_cache()
        with self.clock.part("pilots"):
            self.specs, pilots = phase_specs(self.models, config, len(train), self.stream,
                                             self.pool if self.cached else None, self.ctx)
        budget = sum(s.steps for s in self.specs if s.kind != "finetune" or config.algorithm == "auto")
        phases = [[s.kind, s.unit.name if s.unit else None, s.steps] for s in self.specs]
        self.result = DistillResult(config.algorithm, Budget(budget, config.finetune_steps, config.batch_size,
                                                             budget * config.batch_size / len(train),
                                                             config.budget_seconds(), phases, pilots,
                                                             seq_until(self.clock, config, phases)),
                                    train.describe(), self.ctx.world, self.ctx.device, to_data(config))
        with self.clock.part("evaluations") if start is None else contextlib.nullcontext():
            self._curve_point("start", known=start)

    def _unit_cache(self) -> ActivationCache:
        """The teacher's output of every unit (and its input, when units learn from the teacher's inputs)."""
        units = self.models.units
        inputs = [u.name for u in units] if self.config.seq_inputs == "teacher" else []
        return ActivationCache(self.models.teacher, self.pool, inputs, [u.output for u in units],
                               self.ctx.cache_memory)

    def train(self, progress) -> None:
        """Every phase from where training starts; the record, the curve and a checkpoint after each."""
        specs, batch = self.specs, self.config.batch_size
        total = sum(s.steps for s in specs)
        done = sum(s.steps for s in specs[:self.first]) + self.state.step
        # with several phases, one more bar follows the whole budget (its time left)
        overall = (progress.task(f"{self.config.algorithm} distillation", total, batch, completed=done)
                   if len(specs) > 1 else (lambda n=1, loss=0.0: None))
        before_seq = None
        for index in range(self.first, len(specs)):
            kind, following = specs[index].kind, specs[index + 1].kind if index + 1 < len(specs) else None
            if kind == "seq" and index == 0 and self.state.step == 0 and self.config.algorithm == "auto":
                with self.clock.part("evaluations"):
                    before_seq = ({k: v.detach().clone() for k, v in self.models.student.state_dict().items()},
                                  self._agreement())
            self._phase(index, progress, overall)
            if kind == "seq" and following != "seq" and before_seq is not None:
                with self.clock.part("evaluations"):
                    self._undo_seq_if_worse(*before_seq)
            self.state = PhaseState()
            self._save(index + 1, self.state)

    def _agreement(self) -> float | None:
        """How often the student's top class is the teacher's on training images held out of the pool
        (None when the training split has none to spare): judged without labels, and without the test
        data the curve reports on. The images and the teacher's classes are drawn once, before Seq-KD."""
        if self._held_out is None:
            pool_size = len(self.pool) if self.pool is not None else 0
            images = held_out(self.data.train, pool_size, AGREEMENT_IMAGES, self.ctx.seed).images
            with torch.no_grad():
                self._held_out = [(x, self.models.teacher(x.to(self.ctx.device)).argmax(1))
                                  for x in images.split(256)]
        if not self._held_out:
            return None
        with torch.no_grad(), planned(self.models.student, self.config.plan):
            same = [int((self.models.student(x.to(self.ctx.device)).argmax(1) == teacher).sum())
                    for x, teacher in self._held_out]
        return sum(same) / sum(len(x) for x, _ in self._held_out)

    def _undo_seq_if_worse(self, before: dict, agreement: float | None) -> None:
        """--kd auto: when Seq-KD left the student agreeing less with the teacher on held-out training
        images (at low rates, trained block by block on the pool it can undo the data-aware fit:
        RESULTS.md), the student from before it comes back and E2E-KD starts from there, with what is left
        of the budget. (A run resumed inside Seq-KD no longer has that student: it keeps what Seq-KD gave.)"""
        after = self._agreement() if agreement is not None else None
        if after is None or not self.ctx.all_agree(after < agreement):
            return
        self.models.student.load_state_dict(before)
        self.result.reverted = (f"Seq-KD lowered the student's agreement with the teacher on held-out training "
                                f"images from {100 * agreement:.1f}% to {100 * after:.1f}%: the student from before "
                                "it was restored and E2E-KD went on from there")
        log.warning("%s", self.result.reverted)
        start = self.result.curve[0]
        self.result.curve.append(CurvePoint("restored before Seq-KD", self.result.updates, start.top1, start.samples))

    def _phase(self, index: int, progress, overall) -> None:
        spec, config, clock, result = self.specs[index], self.config, self.clock, self.result
        phase = build_phase(spec, self.models, config, self.ctx, stream=self.stream, spectral=self.spectral)
        if spec.kind == "seq" and self.cache is not None:
            with clock.part("unit_inputs"):
                phase.stream = self._unit_stream(spec.unit)
        if self.state.step == 0 and result.budget.step_seconds:  # the phase's steps, from the time left now
            phases = result.budget.phases
            phase.steps = steps_left(index, phases, result.budget, clock, config, len(self.data.train))
            self.specs[index] = PhaseSpec(index, spec.kind, spec.unit, phase.steps, spec.count)
            phases[index][2] = phase.steps
        own = progress.task(phase.name, phase.steps, config.batch_size, completed=self.state.step)

        def advance(n: int = 1, loss: float = 0.0) -> None:
            own(n, loss)
            overall(n, loss)

        def checkpoint(s: PhaseState) -> None:
            if s.step < phase.steps:  # inside the phase; the phase end is saved by train()
                if phase.kind != "seq":
                    with clock.part("evaluations"):
                        self._curve_point(f"{phase.name} step {s.step}", result.updates + s.step)
                self._save(phase.index, s)

        started, cpu_started = time.perf_counter(), time.process_time()
        with clock.part("training"):
            state = train_phase(phase, config.loop(), self.ctx, self.state,
                                Callbacks(checkpoint, advance, result.events.append),
                                deadline=deadline_of(index, result.budget.phases, result.budget, clock))
        result.updates += state.step
        record = PhaseRecord(phase.name, spec.kind, state.step, sum(p.numel() for p in phase.params),
                             state.first_loss, state.loss_sum / max(state.step, 1), state.losses, state.seconds,
                             state.step * config.batch_size / max(state.seconds, 1e-9), state.retries,
                             time.perf_counter() - started, time.process_time() - cpu_started)
        if spec.unit is not None:
            record.unit, record.layers, record.norms = spec.unit.name, spec.unit.layers, spec.unit.norms
        if state.out_of_time:
            record.planned_steps = phase.steps
            result.budget.phases[index][2] = state.step
            log.warning("%s: the budget's deadline came at step %d of %d", phase.name, state.step, phase.steps)
        result.phases.append(record)
        log.debug("%s: %d steps, mean loss %.4g, %.0f images/s", phase.name, state.step, record.mean_loss,
                  record.images_per_s)
        # after every unit of Seq-KD (its stair-steps); cached units are fast: after the last one only
        following = self.specs[index + 1].kind if index + 1 < len(self.specs) else None
        if spec.kind != "seq" or self.cache is None or following != "seq":
            with clock.part("evaluations"):
                self._curve_point(phase.name)

    def _unit_stream(self, unit: Unit) -> CachedStream:
        """A cached unit's batches. Its inputs are the teacher's (from the cache), or the student's, computed
        now, after every unit before it has been trained (Eq. 2.10)."""
        targets = self.cache[(unit.output, "output")]
        if self.config.seq_inputs == "teacher":
            inputs = self.cache[(unit.name, "input")]
        else:
            student, images = self.models.student, self.pool.images
            device = next(student.parameters()).device
            parts = [capture(student, images[i:i + 256].to(device), inputs=(unit.name,))[(unit.name, "input")]
                     for i in range(0, len(images), 256)]
            inputs = torch.cat(parts).to("cpu", targets.dtype)
        return CachedStream(inputs, targets, self.config.batch_size, self.ctx.seed, self.ctx, unit.name)

    def _save(self, phase_index: int, state: PhaseState) -> None:
        with self.clock.part("checkpoints"):
            self.result.seconds = self.clock.breakdown()
            if self.path is not None and self.ctx.main:
                self.path.parent.mkdir(exist_ok=True)
            save_checkpoint(self.path, {"version": CHECKPOINT_VERSION, "phase": phase_index,
                                        "state": state.to_dict(), "student": self.models.student.state_dict(),
                                        "result": to_data(self.result)}, self.ctx)

    def _curve_point(self, after: str, updates: int | None = None, known: tuple[float, int] | None = None) -> None:
        result, test = self.result, self.data.test
        point = CurvePoint(after, result.updates if updates is None else updates)
        if known is not None:
            point.top1, point.samples = known
        elif test is not None and self.ctx.main:
            with planned(self.models.student, self.config.plan):
                metrics = evaluate(self.models.student, test, device=self.ctx.device, limit=self.config.eval_limit)
            point.top1, point.samples = metrics.top1, metrics.samples
            log.info("top-1 after %s: %.2f%% (%d test samples)", after, 100 * metrics.top1, metrics.samples)
        self.ctx.barrier()
        result.curve.append(point)

    def finish(self) -> DistillResult:
        """The record with the clock's breakdown and the steps as decided and taken."""
        result, config = self.result, self.config
        result.seconds = self.clock.breakdown()
        b = result.budget
        b.steps = sum(n for kind, _, n in b.phases if kind != "finetune" or config.algorithm == "auto")
        b.epochs = b.steps * b.batch_size / len(self.data.train)
        return result
