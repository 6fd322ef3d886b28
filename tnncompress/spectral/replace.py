"""`run --spectral orthogonal`: the selected convolutions become SC-Fac orthogonal convolutions (instead of
being factorised), fitted to each pretrained kernel's polar factor; `densify` turns them back into plain
convolutions with the kernel they compute, for evaluation, export and ONNX."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

from torch import nn

from .model import layer_inputs
from .orthogonal import OrthogonalConv2d

FIT_STEPS = 100  # Adam steps of the fit: the distance moves by < 1% beyond (measured on the teacher)


@dataclass
class Orthogonalised:
    name: str
    replaced: bool
    reason: str  # why not, or the fit's distance to the pretrained kernel's polar factor
    fit_distance: float | None = None
    seconds: float = 0.0


def why_not(module: nn.Module) -> str | None:
    """Why this layer cannot be an SC-Fac orthogonal convolution, or None."""
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} stays dense under --spectral orthogonal (convolutions only)"
    for k, s, d in zip(module.kernel_size, module.stride, module.dilation, strict=True):
        if k % s:
            return f"kernel {k} is not a multiple of its stride {s}: no orthogonal form"
        if s > 1 and d > 1:
            return "stride and dilation on one axis: no orthogonal form"
    if module.padding_mode not in ("zeros", "circular"):
        return f"padding_mode {module.padding_mode!r}: orthogonal convolutions pad with zeros or circularly"
    return None


def orthogonalise(model: nn.Module, names: list[str], input_size: tuple[int, ...], seed: int = 0,
                  steps: int = FIT_STEPS) -> tuple[nn.Module, list[Orthogonalised]]:
    """A copy of `model` whose named convolutions are OrthogonalConv2d layers (those that can be)."""
    student = copy.deepcopy(model).eval()
    sizes = layer_inputs(student, input_size)
    results = []
    for name in names:
        module = student.get_submodule(name)
        reason = why_not(module)
        if reason is not None:
            results.append(Orthogonalised(name, False, reason))
            continue
        t0 = time.perf_counter()
        layer, distance = OrthogonalConv2d.from_conv(module, sizes[name], steps=steps, seed=seed)
        student.set_submodule(name, layer.eval())
        results.append(Orthogonalised(name, True, f"SC-Fac orthogonal; kernel {distance:.3f} from the pretrained "
                                                  "kernel's polar factor", distance, time.perf_counter() - t0))
    return student, results


def densify(model: nn.Module) -> list[str]:
    """Replace every OrthogonalConv2d of `model` by the nn.Conv2d computing the same (in place)."""
    names = [n for n, m in model.named_modules() if isinstance(m, OrthogonalConv2d)]
    for name in names:
        model.set_submodule(name, dense_conv(model.get_submodule(name)))
    return names


def dense_conv(layer: OrthogonalConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, bias=layer.bias is not None, padding_mode=layer.padding_mode,
                     dtype=layer.skew_h.dtype, device=layer.skew_h.device)
    conv.weight.data.copy_(layer.weight_().detach())
    if layer.bias is not None:
        conv.bias.data.copy_(layer.bias.detach())
    return conv.train(layer.training)
