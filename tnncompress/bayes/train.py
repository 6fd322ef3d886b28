"""Learning the posterior: the alternative ELBO minimised with the distillation machinery's phase loop
(the same batch stream and augmentation, Adam with a cosine schedule, the NaN/explosion guard,
checkpoints every epoch, resume, progress bars, and under torchrun each process its share of every
batch with the gradients averaged).

The posteriors (logits and scales), the softmax temperature and the activation quantisers' steps
learn; the student's other float parameters stay as distilled unless `train_float`. The categoricals'
own temperature is annealed from 1 to 1/`sharpen` (geometric in the step, so a resumed run recomputes
it): early updates move probability between levels freely, the last ones fit the bound to an almost
deterministic network, the MAP QNN that is exported. With `targets="teacher"` the bound is taken
against the teacher's softmax.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import ClassificationData
from ..distill import Context, DistillConfig
from ..distill.hooks import checkpoint_saved
from ..distill.loop import Phase, PhaseState, train_phase
from ..distill.stream import BatchStream
from ..einsum import chosen_plans, pin_plans
from ..errors import CheckpointError, opt
from ..progress import training_progress
from .config import BqnConfig
from .network import BayesianQuantizedNetwork
from .objective import elbo_loss, kl_to_uniform

CHECKPOINT_FILE = "bqn.pt"
CHECKPOINT_VERSION = 1
log = logging.getLogger(__name__)


def learn_posterior(bqn: BayesianQuantizedNetwork, teacher: nn.Module | None, train: ClassificationData,
                    config: BqnConfig, ctx: Context, seed: int = 0, workers: int = 0,
                    checkpoint_dir: Path | None = None, resume: bool = False) -> dict:
    """Train `bqn`'s posteriors in place; returns the record of the phase (steps, losses, KL, seconds)."""
    steps = config.steps if config.steps is not None else max(1, -(-len(train) // config.batch_size))
    loop = DistillConfig(algorithm="e2e", lr=config.lr, schedule="cosine", batch_size=config.batch_size)
    stream = BatchStream(train, config.batch_size, seed, ctx, loop.augment, workers)
    bqn.to(ctx.device)
    if teacher is not None:
        teacher.to(ctx.device).eval()
    params = bqn.trainable(config.train_float)
    for p in bqn.student.parameters():
        p.requires_grad_(any(p is q for q in params))
    posteriors = list(bqn.posteriors.values())

    def sharpen(step: int) -> None:
        for post in posteriors:
            post.sharpness.fill_(config.sharpen ** (step / steps))

    objective = _Objective(bqn, config.lam, len(train))
    call = objective
    if ctx.distributed:  # each process its share of the batch; DDP averages the gradients
        ctx.broadcast_module(bqn)
        ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
        call = DistributedDataParallel(objective, device_ids=ids, broadcast_buffers=False,
                                       find_unused_parameters=config.train_float)  # a float layer off the graph

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sharpen(state.step)
        targets = y
        if config.targets == "teacher":
            with torch.no_grad():
                targets = teacher(x).softmax(1)
        return call(x, targets)

    path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir is not None else None
    state = PhaseState()
    if resume and path is not None and path.is_file():
        saved = _read(path, ctx.device)
        pin_plans(saved.get("plans", {}))  # the interrupted run's plans: the same sums, bit for bit
        bqn.load_state_dict(saved["bqn"])
        state = PhaseState(**saved["state"])
        log.info("resuming the BQN posterior at step %d/%d", state.step, steps)

    def save(s: PhaseState) -> None:
        payload = {"version": CHECKPOINT_VERSION, "state": s.to_dict(), "bqn": bqn.state_dict(),
                   "plans": chosen_plans()}
        if path is not None and ctx.main:
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            torch.save(payload, tmp)
            os.replace(tmp, path)
        checkpoint_saved(payload)

    phase = Phase(0, f"BQN posterior ({config.bits} bit)", "bqn", steps, call, params, loss)
    events: list = []
    started = time.perf_counter()
    with training_progress() as progress:
        own = progress.task(phase.name, steps, config.batch_size, completed=state.step)
        state = train_phase(phase, stream, loop, ctx, state, save, own, events)
    sharpen(state.step)  # the posterior as learned: what is evaluated and exported
    with torch.no_grad():
        kl = float(kl_to_uniform(posteriors).detach())
    return {"steps": state.step, "first_loss": state.first_loss, "mean_loss": state.loss_sum / max(state.step, 1),
            "interval_losses": state.losses, "seconds": time.perf_counter() - started,
            "train_seconds": state.seconds, "kl": kl, "temperature": float(bqn.temperature.detach()),
            "guard_events": [vars(e) for e in events]}


class _Objective(nn.Module):
    """The loss as one module's forward, so that DistributedDataParallel sees every parameter it
    trains (the temperature and the prior term included) reached from its output."""

    def __init__(self, bqn: BayesianQuantizedNetwork, lam: float, dataset_size: int):
        super().__init__()
        self.bqn, self.lam, self.dataset_size = bqn, lam, dataset_size

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return elbo_loss(self.bqn.analytic(x), targets, self.bqn.temperature, list(self.bqn.posteriors.values()),
                         self.lam, self.dataset_size)


def _read(path: Path, device: str) -> dict:
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable BQN checkpoint ({first[:160]}); pass {opt('force')} to "
                              "start the run over") from None
    if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION or "bqn" not in saved:
        raise CheckpointError(f"{path}: not a tnncompress BQN checkpoint; pass {opt('force')} to start over")
    return saved
