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
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import ClassificationData
from ..progress import training_progress
from ..train import BatchStream, Callbacks, Context, Phase, PhaseState, read_checkpoint, save_checkpoint, train_phase
from .config import BqnConfig
from .network import BayesianQuantizedNetwork
from .objective import elbo_loss, kl_to_uniform
from .result import PosteriorTraining

CHECKPOINT_FILE = "bqn.pt"
CHECKPOINT_VERSION = 1
log = logging.getLogger(__name__)


def learn_posterior(bqn: BayesianQuantizedNetwork, teacher: nn.Module | None, train: ClassificationData,
                    config: BqnConfig, ctx: Context) -> PosteriorTraining:
    """Train `bqn`'s posteriors in place (checkpoints in `ctx.checkpoints`, resumed with `ctx.resume`)."""
    steps = config.steps if config.steps is not None else max(1, -(-len(train) // config.batch_size))
    stream = BatchStream(train, config.batch_size, ctx.seed, ctx, True, ctx.workers)
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

    path = ctx.checkpoints / CHECKPOINT_FILE if ctx.checkpoints is not None else None
    state = PhaseState()
    if ctx.resume and path is not None and path.is_file():
        saved = read_checkpoint(path, ctx.device, "BQN", CHECKPOINT_VERSION, "bqn")
        bqn.load_state_dict(saved["bqn"])
        state = PhaseState(**saved["state"])
        log.info("resuming the BQN posterior at step %d/%d", state.step, steps)

    def save(s: PhaseState) -> None:
        save_checkpoint(path, {"version": CHECKPOINT_VERSION, "state": s.to_dict(), "bqn": bqn.state_dict()}, ctx)

    phase = Phase(0, f"BQN posterior ({config.bits} bit)", "bqn", steps, call, params, loss, stream=stream)
    events: list = []
    started = time.perf_counter()
    with training_progress() as progress:
        own = progress.task(phase.name, steps, config.batch_size, completed=state.step)
        state = train_phase(phase, config.loop(), ctx, state, Callbacks(save, own, events.append))
    sharpen(state.step)  # the posterior as learned: what is evaluated and exported
    with torch.no_grad():
        kl = float(kl_to_uniform(posteriors).detach())
    return PosteriorTraining(state.step, state.first_loss, state.loss_sum / max(state.step, 1), state.losses,
                             time.perf_counter() - started, state.seconds, kl, float(bqn.temperature.detach()),
                             events)


class _Objective(nn.Module):
    """The loss as one module's forward, so that DistributedDataParallel sees every parameter it
    trains (the temperature and the prior term included) reached from its output."""

    def __init__(self, bqn: BayesianQuantizedNetwork, lam: float, dataset_size: int):
        super().__init__()
        self.bqn, self.lam, self.dataset_size = bqn, lam, dataset_size

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return elbo_loss(self.bqn.analytic(x), targets, self.bqn.temperature, list(self.bqn.posteriors.values()),
                         self.lam, self.dataset_size)
