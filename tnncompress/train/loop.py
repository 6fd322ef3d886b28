"""One training phase, whatever it trains (a Seq-KD unit, E2E-KD, a fine-tune, a BQN posterior, a
reference classifier): an optimizer on the phase's parameters, the learning rate of its `Schedule` at
each step, the NaN/explosion guard, checkpoints and progress. What is learned is the phase's `loss`;
the loop knows nothing else about it.

Everything a step depends on is a function of the step (the schedule, the batch: stream.py), so a phase
resumed at step s continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .distributed import Context
from .schedule import Schedule

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 25  # steps between in-memory "last good state" snapshots for the guard


@dataclass(frozen=True)
class LoopConfig:
    """How a phase trains: its schedule, how often it checkpoints, and the guard."""

    schedule: Schedule
    checkpoint_every: int | None = None  # steps; None: once per pass over the phase's batches
    explode_factor: float = 10.0  # a loss above this x the first has exploded
    max_retries: int = 3  # learning-rate cuts before the phase stops
    mixed_precision: bool = True  # bfloat16 autocast on CUDA


@dataclass
class GuardEvent:
    phase: str
    step: int
    loss: float | str  # "nan" / "inf" as text (JSON has no such numbers)
    action: str

    def describe(self) -> str:
        return f"{self.phase}: loss {self.loss} at step {self.step}: {self.action}"


@dataclass
class PhaseState:
    """Where a phase stands; what a checkpoint holds besides the weights."""

    step: int = 0
    lr_scale: float = 1.0
    retries: int = 0
    first_loss: float | None = None
    loss_sum: float = 0.0  # over the steps since the phase started (for the record)
    losses: list[float] = field(default_factory=list)  # the mean loss of each checkpoint interval
    seconds: float = 0.0
    optimizer: dict | None = None
    out_of_time: bool = False  # the budget's deadline ended the phase early

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


def adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


@dataclass
class Phase:
    index: int
    name: str  # shown in the progress bar and the report
    kind: str  # "seq", "e2e", "finetune", "bqn", "classifier"
    steps: int
    module: nn.Module  # what is called (the unit, or the student), DDP-wrapped when distributed
    params: list[nn.Parameter]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (inputs, targets) -> scalar
    stream: object | None = None  # .batch(phase, step) and .steps_per_epoch
    project: Callable[[], object] | None = None  # the spectral constraint on the phase's layers
    project_every: int = 1  # steps between calls of `project`
    optimizer: Callable[[list[nn.Parameter], float], torch.optim.Optimizer] = adam


def _nothing(*_args, **_kwargs) -> None:
    return None


@dataclass
class Callbacks:
    """What the loop tells its caller: `checkpoint(state)` every `checkpoint_every` steps and at the end,
    `advance(steps, loss)` after each step (progress), `guard(event)` when the guard acted."""

    checkpoint: Callable[[PhaseState], None] = _nothing
    advance: Callable[[int, float], None] = _nothing
    guard: Callable[[GuardEvent], None] = _nothing


def learning_rate(schedule: Schedule, state: PhaseState, steps: int) -> float:
    """The schedule's rate at `state.step`, times the guard's cuts."""
    return schedule.lr_at(state.step, steps, state.lr_scale)


def train_phase(phase: Phase, loop: LoopConfig, ctx: Context, state: PhaseState, on: Callbacks = Callbacks(),
                deadline: float | None = None) -> PhaseState:
    """Run `phase` from `state.step` to its end, or to `deadline` (a time.perf_counter() value) when that
    comes first (the first step is always taken)."""
    optimizer = phase.optimizer(phase.params, loop.schedule.lr)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    every = loop.checkpoint_every or phase.stream.steps_per_epoch
    good = _snapshot(phase.params, optimizer)
    interval_sum, interval_n = 0.0, 0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.startswith("cuda") and loop.mixed_precision
                else torch.autocast("cpu", enabled=False))
    while state.step < phase.steps:
        started = time.perf_counter()
        # every process asks (a collective under torchrun)
        if deadline is not None and state.step > 0 and ctx.all_agree(started >= deadline):
            state.out_of_time = True
            break
        _set_schedule(optimizer, loop.schedule, state, phase.steps)
        x, y = phase.stream.batch(phase.index, state.step)
        with autocast:
            loss = phase.loss(x, y)
        value = ctx.average(float(loss.detach()))  # what is recorded and guarded: the whole batch's loss
        if state.first_loss is None:
            state.first_loss = value
        if ctx.all_agree(not math.isfinite(value) or value > loop.explode_factor * max(state.first_loss, 1e-12)):
            _restore(good, phase.params, optimizer)
            if _guard(phase, loop, state, value, on):
                break
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        if phase.project is not None and state.step % phase.project_every == 0:
            phase.project()
        state.loss_sum += value
        interval_sum, interval_n = interval_sum + value, interval_n + 1
        state.seconds += time.perf_counter() - started
        on.advance(1, value)
        if state.step % SNAPSHOT_EVERY == 0:
            good = _snapshot(phase.params, optimizer)
        if state.step % every == 0 or state.step == phase.steps:
            state.losses.append(interval_sum / max(interval_n, 1))
            interval_sum, interval_n = 0.0, 0
            state.optimizer = optimizer.state_dict()
            on.checkpoint(state)
    state.optimizer = None
    return state


def _set_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, state: PhaseState, steps: int) -> None:
    lr, momentum = learning_rate(schedule, state, steps), schedule.momentum_at(state.step, steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if momentum is not None:
            group["momentum"] = momentum


def _guard(phase: Phase, loop: LoopConfig, state: PhaseState, value: float, on: Callbacks) -> bool:
    """The loss exploded (the last good state is back): cut the learning rate tenfold, or stop the phase
    after `max_retries` cuts. Returns whether the phase stops."""
    state.retries += 1
    state.lr_scale *= 0.1
    stop = state.retries > loop.max_retries
    lr = learning_rate(loop.schedule, state, phase.steps)
    action = ("stopped at the last good state" if stop
              else f"restored the last good state, learning rate x0.1 (now {lr:.2g})")
    on.guard(GuardEvent(phase.name, state.step, value if math.isfinite(value) else str(value), action))
    log.warning("%s: loss %.4g at step %d (first %.4g): %s", phase.name, value, state.step, state.first_loss, action)
    if stop:
        state.step = phase.steps
    return stop


def _snapshot(params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> tuple:
    return [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict())


@torch.no_grad()
def _restore(snapshot: tuple, params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
    values, opt_state = snapshot
    for p, v in zip(params, values, strict=True):
        p.copy_(v)
    optimizer.load_state_dict(opt_state)
