"""The calibration pool: a fixed sample of training images, without augmentation, that data-aware
Layer-Decomp, batch-norm recalibration, rank allocation and the Seq-KD cache all see.

The sample is a function of the seed alone (a seeded permutation of the training split), so a resumed
or repeated run calibrates on the same images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..data import ClassificationData, TensorImageDataset


@dataclass
class PoolRecord:
    """The calibration pool as the report records it."""

    samples: int
    source: str
    input_size: list[int]


@dataclass
class CalibrationPool:
    images: torch.Tensor  # normalised float32 [N, C, H, W]
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, batch_size: int = 256, device: str = "cpu") -> Iterator[torch.Tensor]:
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size].to(device)

    def head(self, samples: int) -> CalibrationPool:
        """The first `samples` images (the pool is already a random sample)."""
        if samples >= len(self):
            return self
        return CalibrationPool(self.images[:samples], self.labels[:samples], f"{samples} of the {self.source}")

    def describe(self) -> PoolRecord:
        return PoolRecord(len(self), self.source, list(self.images.shape[1:]))


def calibration_pool(train: ClassificationData, samples: int, seed: int = 0) -> CalibrationPool:
    """`samples` training images (all of them when the split is smaller), chosen by the seed."""
    n = min(samples, len(train))
    return _drawn(train, _order(train, seed)[:n], f"{n} images of {train.source}")


def held_out(train: ClassificationData, pool_samples: int, samples: int, seed: int = 0) -> CalibrationPool:
    """`samples` training images that the pool of `pool_samples` drawn with `seed` does not hold (the next
    ones of the same permutation; fewer, or none, when the split has no more)."""
    order = _order(train, seed)[pool_samples:pool_samples + samples]
    return _drawn(train, order, f"{len(order)} held-out images of {train.source}")


def _order(train: ClassificationData, seed: int) -> torch.Tensor:
    return torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 7919 + 17))


def _drawn(train: ClassificationData, order: torch.Tensor, source: str) -> CalibrationPool:
    if not len(order):
        return CalibrationPool(torch.empty(0, *train.input_size), torch.empty(0, dtype=torch.long), source)
    ds = train.dataset
    if isinstance(ds, TensorImageDataset):
        images, labels = ds.normalise(ds.images[order]), ds.labels[order]
    else:  # folder datasets: read the chosen items
        items = [ds[int(i)] for i in order]
        images = torch.stack([x for x, _ in items])
        labels = torch.tensor([int(y) for _, y in items])
    return CalibrationPool(images.float().contiguous(), labels, source)
