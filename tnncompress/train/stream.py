"""The training batches of a distillation phase, reproducible from (seed, phase, step) alone.

Epoch e of phase p visits the training set in a permutation seeded by (seed, p, e), and the
augmentation of step s is seeded by (seed, p, s), so a resumed run draws exactly the batches the
interrupted one would have drawn, without saving any random state.
"""

from __future__ import annotations

import zlib

import torch
from torch.utils.data import DataLoader

from ..data import ClassificationData, TensorImageDataset, augment_batch, worker_errors
from .distributed import Context

AUGMENT_PADDING = 2


def _seed(*parts: int) -> int:
    value = 0x9E3779B97F4A7C15
    for p in parts:
        value = (value * 1_000_003 + int(p) + 1) % (1 << 62)
    return value


class CachedStream:
    """Batches of a cached Seq-KD unit: (the unit's input, the teacher's output) over the calibration pool,
    in a permutation seeded by (seed, unit, epoch), never augmented (input and target must stay paired).
    Seeded by the unit, not by its place in the sequence: with the teacher's inputs, units trained in any
    order come out the same."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int, ctx: Context,
                 unit: str = ""):
        self.inputs, self.targets, self.batch_size, self.ctx = inputs, targets, batch_size, ctx
        self.seed = _seed(seed, zlib.crc32(unit.encode()))
        self.samples = inputs.shape[0]
        self.steps_per_epoch = max(1, -(-self.samples // batch_size))

    def batch(self, phase: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        order = torch.randperm(self.samples, generator=torch.Generator().manual_seed(_seed(self.seed, epoch)))
        idx = self.ctx.shard(order[i * self.batch_size:(i + 1) * self.batch_size])
        device = self.ctx.device
        return self.inputs[idx].float().to(device), self.targets[idx].float().to(device)


class BatchStream:
    def __init__(self, data: ClassificationData, batch_size: int, seed: int, ctx: Context,
                 augment: bool = True, workers: int = 0):
        self.data, self.batch_size, self.seed, self.ctx = data, batch_size, seed, ctx
        self.augment = augment and isinstance(data.dataset, TensorImageDataset)
        self.workers = workers
        self.samples = len(data)
        self.steps_per_epoch = max(1, -(-self.samples // batch_size))
        self._order_key: tuple[int, int] | None = None
        self._order: torch.Tensor | None = None
        self._loader = None  # (phase, next step, iterator) for datasets read through a DataLoader
        self.last_indices: torch.Tensor | None = None  # this process's sample indices of the last batch

    def indices(self, phase: int, step: int) -> torch.Tensor:
        """The global batch of `step` of `phase` (before sharding)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._order_key != (phase, epoch):
            g = torch.Generator().manual_seed(_seed(self.seed, phase, epoch))
            self._order, self._order_key = torch.randperm(self.samples, generator=g), (phase, epoch)
        return self._order[i * self.batch_size:(i + 1) * self.batch_size]

    def batch(self, phase: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of the batch, normalised, on the device."""
        ds = self.data.dataset
        pin = self.ctx.device.startswith("cuda")
        if isinstance(ds, TensorImageDataset):
            idx = self.indices(phase, step)
            images = ds.images[idx]
            if self.augment:  # the whole global batch, then the shard: the same crops as one process
                g = torch.Generator().manual_seed(_seed(self.seed, phase, step, 1))
                images = augment_batch(images, AUGMENT_PADDING, True, g)
            x, y = ds.normalise(self.ctx.shard(images)), ds.labels[self.ctx.shard(idx)]
            self.last_indices = None if self.augment else self.ctx.shard(idx)
        else:
            x, y = self._from_loader(phase, step)
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.ctx.device, non_blocking=True), y.to(self.ctx.device, non_blocking=True)

    def _from_loader(self, phase: int, step: int):
        """Folder datasets: one DataLoader (with workers) per rest of an epoch, read in order."""
        if self._loader is None or self._loader[:2] != (phase, step):
            epoch, first = divmod(step, self.steps_per_epoch)
            batches = [self.ctx.shard(self.indices(phase, epoch * self.steps_per_epoch + i)).tolist()
                       for i in range(first, self.steps_per_epoch)]
            loader = DataLoader(self.data.dataset, batch_sampler=batches, num_workers=self.workers,
                                pin_memory=self.ctx.device.startswith("cuda"))
            self._loader = (phase, step, iter(loader))
        with worker_errors():
            x, y = next(self._loader[2])
        end_of_epoch = (step + 1) % self.steps_per_epoch == 0
        self._loader = None if end_of_epoch else (phase, step + 1, self._loader[2])
        return x, y
