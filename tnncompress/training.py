"""Supervised training of reference classifiers (the teachers every compression result starts from).

SGD with Nesterov momentum and a one-cycle learning rate, batched on-tensor augmentation (random crop
with zero padding and horizontal flip), seeded end to end so that a run can be repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import ClassificationData, TensorImageDataset, augment_batch
from .evaluate import evaluate


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


def train_classifier(model: nn.Module, train: ClassificationData, test: ClassificationData | None,
                     config: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train `model` in place; return the history and final test metrics."""
    if not isinstance(train.dataset, TensorImageDataset):
        raise TypeError("train_classifier needs an in-memory dataset")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    ds = train.dataset
    steps_per_epoch = -(-len(ds) // config.batch_size)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=config.lr, momentum=config.momentum, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, pct_start=0.15,
                                                   total_steps=config.epochs * steps_per_epoch)
    history = []
    start = time.time()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(ds), generator=generator)
        total_loss, seen = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            images = augment_batch(ds.images[idx], config.crop_padding, config.flip, generator)
            x = ds.normalise(images).to(device).contiguous(memory_format=memory_format)
            y = ds.labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        entry = {"epoch": epoch, "train_loss": total_loss / seen, "seconds": time.time() - start}
        if test is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            entry["test"] = asdict(evaluate(model, test, device=device))
        history.append(entry)
        msg = f"epoch {epoch}/{config.epochs} loss {entry['train_loss']:.4f} {entry['seconds']:.0f}s"
        if "test" in entry:
            msg += f" test top1 {entry['test']['top1']:.4f} nll {entry['test']['nll']:.4f}"
        log(msg)
    model.to(memory_format=torch.contiguous_format)
    return {"config": asdict(config), "history": history, "seconds": time.time() - start,
            "test": history[-1].get("test")}
