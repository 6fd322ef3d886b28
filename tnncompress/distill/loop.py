"""One phase of distillation (a Seq-KD unit, an E2E-KD run, a fine-tune): Adam with a step-decayed
learning rate, the NaN/explosion guard, checkpoints and progress.

The learning rate is a function of the step alone (lr x lr_scale x warm-up x 0.1^(milestones passed)),
so a phase resumed at step s continues exactly where it stopped.
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

from .config import DistillConfig
from .distributed import Context
from .result import GuardEvent
from .stream import BatchStream

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 25  # steps between in-memory "last good state" snapshots for the guard


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


@dataclass
class Phase:
    index: int
    name: str  # shown in the progress bar and the report
    kind: str  # "seq", "e2e" or "finetune"
    steps: int
    module: nn.Module  # what is called (the unit, or the student), DDP-wrapped when distributed
    params: list[nn.Parameter]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, labels) -> scalar
    stream: object | None = None  # the phase's own batches (a cached Seq-KD unit's), else the shared stream
    project: Callable[[], object] | None = None  # the spectral constraint on the phase's layers
    project_every: int = 1  # steps between calls of `project`


def learning_rate(config: DistillConfig, state: PhaseState, steps: int) -> float:
    """lr x guard scale x linear warm-up x (0.1 per decay_at milestone passed, or a cosine to 0)."""
    warm = min(1.0, (state.step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(state.step / max(steps, 1), 1.0)))
    else:
        decay = 0.1 ** sum(state.step >= math.ceil(f * steps) for f in config.decay_at if 0 < f < 1)
    return config.lr * state.lr_scale * warm * decay


def train_phase(phase: Phase, stream: BatchStream, config: DistillConfig, ctx: Context, state: PhaseState,
                checkpoint: Callable[[PhaseState], None], advance: Callable[[int, float], None],
                events: list[GuardEvent], deadline: float | None = None) -> PhaseState:
    """Run `phase` from `state.step` to its end, or to `deadline` (a time.perf_counter() value) when that
    comes first; `checkpoint(state)` is called every `checkpoint_every` steps and at the end."""
    optimizer = torch.optim.Adam(phase.params, lr=config.lr)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    every = config.checkpoint_every or (phase.stream or stream).steps_per_epoch
    good = _snapshot(phase.params, optimizer)
    interval_sum, interval_n = 0.0, 0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.startswith("cuda")
                else torch.autocast("cpu", enabled=False))
    while state.step < phase.steps:
        started = time.perf_counter()
        # every process asks (a collective under torchrun); the first step is always taken
        if deadline is not None and state.step > 0 and ctx.all_agree(started >= deadline):
            state.out_of_time = True
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, state, phase.steps)
        x, y = (phase.stream or stream).batch(phase.index, state.step)
        with autocast:
            loss = phase.loss(x, y)
        value = ctx.average(float(loss.detach()))  # what is recorded and guarded: the whole batch's loss
        if state.first_loss is None:
            state.first_loss = value
        bad = not math.isfinite(value) or value > config.explode_factor * max(state.first_loss, 1e-12)
        if ctx.all_agree(bad):
            _restore(good, phase.params, optimizer)
            state.retries += 1
            state.lr_scale *= 0.1
            stop = state.retries > config.max_retries
            lr = learning_rate(config, state, phase.steps)
            action = ("stopped at the last good state" if stop
                      else f"restored the last good state, learning rate x0.1 (now {lr:.2g})")
            events.append(GuardEvent(phase.name, state.step, value if math.isfinite(value) else str(value), action))
            log.warning("%s: loss %.4g at step %d (first %.4g): %s", phase.name, value, state.step,
                        state.first_loss, action)
            if stop:
                state.step = phase.steps
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
        advance(1, value)
        if state.step % SNAPSHOT_EVERY == 0:
            good = _snapshot(phase.params, optimizer)
        if state.step % every == 0 or state.step == phase.steps:
            state.losses.append(interval_sum / max(interval_n, 1))
            interval_sum, interval_n = 0.0, 0
            state.optimizer = optimizer.state_dict()
            checkpoint(state)
    state.optimizer = None
    return state


def _snapshot(params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> tuple:
    return [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict())


@torch.no_grad()
def _restore(snapshot: tuple, params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
    values, opt_state = snapshot
    for p, v in zip(params, values, strict=True):
        p.copy_(v)
    optimizer.load_state_dict(opt_state)
