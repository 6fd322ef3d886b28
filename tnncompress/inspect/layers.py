"""Layer inventory: what each conv / linear layer is, what it costs, and whether it can be compressed.

FLOPs count a multiply-accumulate as 2 operations, for one sample at the given input size, and cover
the convolution and linear layers (the rest of a CNN is a rounding error next to them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import DataError

_SUPPORTED = (nn.Conv2d, nn.Linear)
_UNSUPPORTED_WEIGHTED = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                         nn.Bilinear, nn.Embedding)


@dataclass
class LayerInfo:
    name: str
    kind: str
    kernel: list[int]  # weight shape
    stride: list[int] | None
    padding: list[int] | str | None
    dilation: list[int] | None
    groups: int
    bias: bool
    params: int
    flops: int
    input: list[int] | None  # per sample, at the inspected input size
    output: list[int] | None
    compressible: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _io_shapes(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, tuple[list[int], list[int]]]:
    """Per layer, its (input, output) shape per sample, from one forward pass (first call if reused)."""
    shapes: dict[str, tuple[list[int], list[int]]] = {}
    hooks = []

    def record(name: str):
        def hook(module, inputs, output) -> None:  # must return None, or it replaces the output
            shapes.setdefault(name, (list(inputs[0].shape[1:]), list(output.shape[1:])))
        return hook

    for name, m in model.named_modules():
        if isinstance(m, _SUPPORTED + _UNSUPPORTED_WEIGHTED):
            hooks.append(m.register_forward_hook(record(name)))
    try:
        forward_probe(model, input_size)
    finally:
        for h in hooks:
            h.remove()
    return shapes


@torch.no_grad()
def forward_probe(model: nn.Module, input_size: tuple[int, int, int]) -> torch.Tensor:
    """Run one all-zeros sample through the model in eval mode; a shape error becomes a DataError."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    was_training = model.training
    model.eval()
    try:
        return model(torch.zeros(1, *input_size, device=device))
    except RuntimeError as exc:
        raise DataError(f"the model does not accept inputs of size {tuple(input_size)} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    finally:
        model.train(was_training)


def _flops(m: nn.Module, out: list[int] | None) -> int:
    if out is None:
        return 0
    n_out = 1
    for d in out:
        n_out *= d
    if isinstance(m, nn.Conv2d):
        per_output = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        return 2 * n_out * per_output
    if isinstance(m, nn.Linear):
        return 2 * n_out * m.in_features
    return 0


def _why_not(m: nn.Module, name: str, first_conv: str | None, last_linear: str | None,
             keep_first_last: bool, called: bool) -> str:
    if isinstance(m, _UNSUPPORTED_WEIGHTED):
        return f"unsupported type {type(m).__name__}"
    if not called:  # no input shape to plan for; its weights are still saved as they are
        return "not called in the forward pass"
    if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
        return "depthwise convolution (nothing to factorise)"
    if keep_first_last and name == first_conv:
        return "first convolution (kept by default)"
    if keep_first_last and name == last_linear:
        return "last linear layer (kept by default)"
    return ""


def layer_table(model: nn.Module, input_size: tuple[int, int, int], keep_first_last: bool = True
                ) -> list[LayerInfo]:
    """Every conv / linear (and unsupported weighted) layer of `model`, in definition order."""
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, _SUPPORTED + _UNSUPPORTED_WEIGHTED)]
    shapes = _io_shapes(model, input_size)
    convs = [n for n, m in modules if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in modules if isinstance(m, nn.Linear)]
    first_conv = convs[0] if convs else None
    last_linear = linears[-1] if linears else None
    rows = []
    for name, m in modules:
        reason = _why_not(m, name, first_conv, last_linear, keep_first_last, name in shapes)
        conv = isinstance(m, nn.Conv2d)
        rows.append(LayerInfo(
            name=name, kind=type(m).__name__, kernel=list(m.weight.shape),
            stride=list(m.stride) if conv else None,
            padding=(m.padding if isinstance(m.padding, str) else list(m.padding)) if conv else None,
            dilation=list(m.dilation) if conv else None, groups=m.groups if conv else 1,
            bias=getattr(m, "bias", None) is not None,
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            flops=_flops(m, shapes[name][1] if name in shapes else None),
            input=shapes[name][0] if name in shapes else None, output=shapes[name][1] if name in shapes else None,
            compressible=not reason, reason=reason))
    return rows


def summarise(model: nn.Module, rows: list[LayerInfo]) -> dict:
    total = sum(p.numel() for p in model.parameters())
    return {"params_total": total,
            "params_conv_linear": sum(r.params for r in rows),
            "params_compressible": sum(r.params for r in rows if r.compressible),
            "flops_total": sum(r.flops for r in rows),
            "flops_compressible": sum(r.flops for r in rows if r.compressible),
            "layers": len(rows), "layers_compressible": sum(r.compressible for r in rows)}
