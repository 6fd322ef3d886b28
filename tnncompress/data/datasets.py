"""In-memory image classification data and the batch iterator every stage uses.

Small datasets (the MNIST family, CIFAR) are held as one uint8 tensor and normalised per batch, which is
far faster on a 2-core machine than a per-sample DataLoader. Folder datasets go through a DataLoader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import TnncompressError


class TensorImageDataset(Dataset):
    """uint8 images [N, C, H, W] and int64 labels [N]; items are normalised float tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape [N, C, H, W]")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        channels = images.shape[1]
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1).expand(channels, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1).expand(channels, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self.mean) / self.std

    def __getitem__(self, i: int):
        return self.normalise(self.images[i]), self.labels[i]


@dataclass
class ClassificationData:
    """One split of a dataset, with what the rest of the pipeline needs to know about it."""

    dataset: Dataset
    num_classes: int
    input_size: tuple[int, int, int]
    source: str  # where the data came from, recorded in every report
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "samples": len(self),
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "synthetic": self.synthetic,
            "notes": list(self.notes),
        }


def iterate_batches(
    data: ClassificationData,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    limit: int | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalised images, labels) batches; `limit` caps the number of samples seen."""
    ds = data.dataset
    n = len(ds) if limit is None else min(limit, len(ds))
    if isinstance(ds, TensorImageDataset):
        order = torch.randperm(len(ds), generator=generator)[:n] if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield ds.normalise(ds.images[idx]), ds.labels[idx]
        return
    if limit is not None and limit < len(ds):
        indices = torch.randperm(len(ds), generator=generator)[:n] if shuffle else torch.arange(n)
        ds = torch.utils.data.Subset(ds, indices.tolist())
        shuffle = False
    loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers)
    with worker_errors():
        yield from loader


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A DataLoader worker's error arrives re-raised as "Caught DataError in DataLoader worker
    process 0. Original Traceback ...": give it back its own one-line message (which names the file)."""
    try:
        yield
    except TnncompressError as exc:
        text = str(exc)
        if not text.startswith("Caught "):
            raise
        last = text.strip().splitlines()[-1]
        raise type(exc)(last.split(": ", 1)[1] if ": " in last else last) from None
