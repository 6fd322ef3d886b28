"""What each algorithm minimises: the unit-output distance of Seq-KD (Eq. 2.10) and the logit
distance of E2E-KD (Eq. 2.9), with the KL and cross-entropy options of the latter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import capture


def activation(model: nn.Module, module_name: str, x: torch.Tensor, output: bool) -> torch.Tensor:
    """The input (output=False) or the output of `module_name` when `model` runs on `x`; the rest of the
    forward pass is skipped."""
    which = "output" if output else "input"
    return capture(model, x, **{f"{which}s": (module_name,)})[(module_name, which)]


def unit_loss(student_unit: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seq-KD: mean squared distance between the unit's output on the student's own upstream and the
    teacher's output of the same unit."""
    out = student_unit(inputs)
    return F.mse_loss(out.float(), target.float())


def logits_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None, loss: str = "mse",
                temperature: float = 4.0, ce_weight: float = 0.0) -> torch.Tensor:
    """E2E-KD on the logits: squared distance (mean over entries), or KL(teacher || student) at a
    temperature (scaled by T^2 so gradients keep their size), mixed with cross-entropy on the labels."""
    s, t = student.float(), teacher.float()
    if loss == "mse":
        kd = F.mse_loss(s, t)
    elif loss == "kl":
        kd = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1), log_target=True,
                      reduction="batchmean") * temperature ** 2
    else:
        raise ValueError(f"unknown distillation loss {loss!r}")
    if ce_weight and labels is not None:
        return (1 - ce_weight) * kd + ce_weight * F.cross_entropy(s, labels)
    return kd
