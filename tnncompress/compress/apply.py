"""Layer-Decomp applied to a model: each planned layer replaced by a tensorial layer whose factors
are initialised from its pretrained kernel (in float64), with the reconstruction error and time recorded."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..formats import TensorizedLayer
from ..progress import progress_bar
from .ranks import LayerPlan


@dataclass
class LayerResult:
    name: str
    rel_error: float
    seconds: float


def compress_model(model: nn.Module, plans: list[LayerPlan], seed: int = 0, device: str | torch.device = "cpu",
                   decomposer: str = "native") -> tuple[nn.Module, list[LayerResult]]:
    """A copy of `model` with every plan that has ranks applied; the original is left untouched.
    The decompositions run on `device` (in float64); the result comes back on the model's device."""
    home = next(model.parameters()).device
    student = copy.deepcopy(model).to(device)
    todo = [p for p in plans if p.ranks is not None]
    results = []
    with progress_bar("Layer-Decomp", total=len(todo)) as advance:
        for plan in todo:
            original = student.get_submodule(plan.name)
            start = time.perf_counter()
            layer = TensorizedLayer.from_layer(original, plan.format, plan.ranks, plan.tensorization, seed=seed,
                                               decomposer=decomposer)
            with torch.no_grad():
                kernel = original.weight.detach().double()
                kernel = kernel[:, :, None, None] if kernel.ndim == 2 else kernel
                approx = layer.format.rebuild([f.double() for f in layer.factors], layer.shape,
                                              layer.tensorization)
                error = float(torch.linalg.vector_norm(approx - kernel) / torch.linalg.vector_norm(kernel))
            layer = layer.to(original.weight.dtype)
            student.set_submodule(plan.name, layer)
            results.append(LayerResult(plan.name, error, time.perf_counter() - start))
            advance(1)
    return student.to(home), results
