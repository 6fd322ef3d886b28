"""Supervised training of reference classifiers (the teachers every compression result starts from), on
the training engine: SGD with Nesterov momentum and the one-cycle schedule (learning rate and momentum),
no weight decay on biases and norms, batched on-tensor augmentation (random crop with zero padding and
horizontal flip), seeded end to end so that a run can be repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ClassificationData, TensorImageDataset, augment_batch
from ..evaluate import evaluate
from .distributed import Context
from .loop import Callbacks, LoopConfig, Phase, PhaseState, train_phase
from .schedule import Schedule

ONECYCLE_MOMENTUM = (0.85, 0.95)  # torch's OneCycleLR defaults


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2
    flip: bool = True
    seed: int = 0
    device: str = "cpu"
    channels_last: bool = True
    eval_every: int = 5


class EpochStream:
    """Batches drawn in order from one generator: a permutation per epoch, then each batch's crops and
    flips. Sequential (not resumable at an arbitrary step), as a reference run is not resumed."""

    def __init__(self, data: ClassificationData, config: TrainConfig, memory_format):
        self.ds, self.config, self.memory_format = data.dataset, config, memory_format
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = -(-len(self.ds) // config.batch_size)
        self.order: torch.Tensor | None = None

    def batch(self, _phase: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = step % self.steps_per_epoch
        if i == 0:
            self.order = torch.randperm(len(self.ds), generator=self.generator)
        c = self.config
        idx = self.order[i * c.batch_size:(i + 1) * c.batch_size]
        images = augment_batch(self.ds.images[idx], c.crop_padding, c.flip, self.generator)
        x = self.ds.normalise(images).to(c.device).contiguous(memory_format=self.memory_format)
        return x, self.ds.labels[idx].to(c.device)


def train_classifier(model: nn.Module, train: ClassificationData, test: ClassificationData | None,
                     config: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train `model` in place; return the history and final test metrics."""
    if not isinstance(train.dataset, TensorImageDataset):
        raise TypeError("train_classifier needs an in-memory dataset")
    torch.manual_seed(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=torch.device(config.device), memory_format=memory_format)
    stream = EpochStream(train, config, memory_format)
    epoch_loss = [0.0, 0]  # sum of loss x batch size, images

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(model(x), y)
        epoch_loss[0] += float(value.detach()) * len(y)
        epoch_loss[1] += len(y)
        return value

    def optimizer(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        decay = [p for p in params if p.ndim > 1]  # no weight decay on norms and biases
        no_decay = [p for p in params if p.ndim <= 1]
        return torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}],
                               lr=lr, momentum=config.momentum, nesterov=True)

    history, start = [], time.time()

    def end_of_epoch(state: PhaseState) -> None:
        epoch = state.step // stream.steps_per_epoch
        entry = {"epoch": epoch, "train_loss": epoch_loss[0] / epoch_loss[1], "seconds": time.time() - start}
        epoch_loss[:] = [0.0, 0]
        if test is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            entry["test"] = asdict(evaluate(model, test, device=config.device))
            model.train()
        history.append(entry)
        msg = f"epoch {epoch}/{config.epochs} loss {entry['train_loss']:.4f} {entry['seconds']:.0f}s"
        if "test" in entry:
            msg += f" test top1 {entry['test']['top1']:.4f} nll {entry['test']['nll']:.4f}"
        log(msg)

    steps = config.epochs * stream.steps_per_epoch
    phase = Phase(0, "classifier", "classifier", steps, model, list(model.parameters()), loss, stream=stream,
                  optimizer=optimizer)
    loop = LoopConfig(Schedule(config.lr, "onecycle", momentum=ONECYCLE_MOMENTUM), explode_factor=float("inf"),
                      max_retries=0, mixed_precision=False)
    model.train()
    train_phase(phase, loop, Context(device=str(config.device)), PhaseState(), Callbacks(checkpoint=end_of_epoch))
    model.to(memory_format=torch.contiguous_format)
    return {"config": asdict(config), "history": history, "seconds": time.time() - start,
            "test": history[-1].get("test")}
