"""Accuracy under input perturbations: Gaussian noise and the fast gradient sign method (FGSM).

Strengths are in pixel units (images in [0, 1]) when the dataset's normalisation is known (in-memory
datasets; folder datasets through their Normalize transform): noise sigma s adds s / std per channel in
the model's input space, FGSM eps moves each pixel by eps along the sign of the loss gradient (Goodfellow
et al. 2015), and the perturbed image is clipped to [0, 1]. Otherwise strengths are in the model's input
units and nothing is clipped. Noise is drawn from a generator seeded per batch, so results repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ClassificationData
from ..data.datasets import TensorImageDataset, iterate_batches
from ..errors import NumericalError
from ..progress import progress_bar

ATTACKS = ("noise", "fgsm")


@dataclass
class Robustness:
    attack: str  # "noise" or "fgsm"
    strength: float
    units: str  # "pixel" ([0, 1] images) or "input" (the model's input space)
    top1: float
    samples: int


def pixel_scale(data: ClassificationData) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) [C, 1, 1] of the normalisation between [0, 1] pixels and the model's input, if known."""
    ds = data.dataset
    if isinstance(ds, TensorImageDataset):
        return ds.mean, ds.std
    for t in getattr(getattr(ds, "transform", None), "transforms", []):
        if type(t).__name__ == "Normalize":
            c = data.input_size[0]
            mean = torch.as_tensor(t.mean, dtype=torch.float32).reshape(-1, 1, 1).expand(c, 1, 1)
            return mean, torch.as_tensor(t.std, dtype=torch.float32).reshape(-1, 1, 1).expand(c, 1, 1)
    return None


def robust_accuracy(model: nn.Module, data: ClassificationData, attack: str, strength: float,
                    batch_size: int = 256, device: str = "cpu", limit: int | None = None, seed: int = 0) -> Robustness:
    """Top-1 of `model` on `data` perturbed by `attack` ("noise": Gaussian of std `strength`; "fgsm":
    one signed-gradient step of size `strength`)."""
    if attack not in ATTACKS:
        raise ValueError(f"attack {attack!r}: one of {', '.join(ATTACKS)}")
    model.eval().to(device)
    scale = pixel_scale(data)
    mean, std = (s.to(device) for s in scale) if scale is not None else (None, None)
    correct = seen = 0
    total = len(data) if limit is None else min(limit, len(data))
    with progress_bar(f"{attack} {strength:g}", total=total) as advance:
        for index, (images, labels) in enumerate(iterate_batches(data, batch_size, limit=limit)):
            x, y = images.to(device), labels.to(device)
            if attack == "noise":
                g = torch.Generator().manual_seed(seed * 1_000_003 + index)
                step = strength * torch.randn(x.shape, generator=g).to(device)
            else:
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
                step = strength * grad.sign()
                x = x.detach()
            step = step / std if std is not None else step
            where = f"{attack} {strength:g} on samples {seen}-{seen + y.shape[0] - 1} of {data.source}"
            if not torch.isfinite(step).all():  # clipping would hide it; NaN logits would give argmax's pick
                raise NumericalError(f"{where}: the perturbation is not finite (NaN or infinity in {step.dtype}); "
                                     "use a smaller strength")
            x = x + step
            if std is not None:  # back to [0, 1] pixels
                x = torch.maximum(torch.minimum(x, (1 - mean) / std), -mean / std)
            with torch.no_grad():
                logits = model(x)
            if not torch.isfinite(logits).all():
                raise NumericalError(f"{where}: the model's outputs are not finite (NaN or infinity)")
            correct += int((logits.argmax(1) == y).sum())
            seen += y.shape[0]
            advance(y.shape[0])
    return Robustness(attack, strength, "pixel" if scale is not None else "input", correct / max(seen, 1), seen)
