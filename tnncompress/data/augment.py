"""On-tensor augmentation of uint8 image batches, as the reference teachers were trained: a random crop
after zero padding, and a horizontal flip. Batched, and drawn from an explicit generator, so that a
distillation step's augmentation is a function of its seed (see distill/stream.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop (after zero padding) and horizontal flip of a uint8 batch [N, C, H, W]."""
    n, _, h, w = images.shape
    if padding:
        padded = F.pad(images, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
        images = padded[torch.arange(n)[:, None, None, None], torch.arange(images.shape[1])[None, :, None, None],
                        rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(3), images)
    return images
