"""What each algorithm minimises: the unit-output distance of Seq-KD (Eq. 2.10) and the logit
distance of E2E-KD (Eq. 2.9), with the KL and cross-entropy options of the latter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the wanted activation is seen."""


@contextlib.contextmanager
def _hooked(module: nn.Module, pre: bool, store: list) -> Iterator[None]:
    def grab_input(_m, args):
        store.append(args)
        raise _Stop

    def grab_output(_m, _args, output):
        store.append(output)
        raise _Stop

    handle = module.register_forward_pre_hook(grab_input) if pre else module.register_forward_hook(grab_output)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def activation(model: nn.Module, module_name: str, x: torch.Tensor, output: bool) -> object:
    """The input arguments (output=False) or the output of `module_name` when `model` runs on `x`;
    the rest of the forward pass is skipped."""
    store: list = []
    with _hooked(model.get_submodule(module_name), not output, store):
        try:
            model(x)
        except _Stop:
            pass
    if not store:
        raise RuntimeError(f"{module_name} was not called in the forward pass")
    return store[0]


def unit_loss(student_unit: nn.Module, inputs: tuple, target: torch.Tensor) -> torch.Tensor:
    """Seq-KD: mean squared distance between the unit's output on the student's own upstream and the
    teacher's output of the same unit."""
    out = student_unit(*inputs)
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
