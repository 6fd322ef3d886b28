"""The deployment form of a compressed model: per tensorial layer, the rebuilt dense kernel or the
factorised chain, whichever is faster at the deployment batch size.

"auto" times both forms of each layer on the CPU (round-robin medians, in PyTorch, whose oneDNN kernels
are the ones onnxruntime's CPU provider also uses), because FLOPs alone mislead on small layers, where a
chain of k convolutions pays k launches and k intermediates. "flops" is the FLOP cost model alone: the
chain is chosen when its plan needs less than `CHAIN_MARGIN` of the dense layer's FLOPs. "dense" and
"factors" force one form. The counts (and times) behind every choice are recorded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..formats import TensorizedLayer, TensorizedLinear
from ..timing import interleaved_medians

CHAIN_MARGIN = 0.8  # the chain is used when its FLOPs are below this fraction of the dense layer's
FORMS = ("auto", "flops", "dense", "factors")


@dataclass
class DeployChoice:
    name: str
    form: str  # "dense" or "factors"
    flops_dense: int  # at the deployment batch size
    flops_factors: int
    ms_dense: float | None = None  # measured ("auto" only)
    ms_factors: float | None = None


def tensorized_inputs(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1) -> dict[str, tuple]:
    """The input shape each tensorial layer of `model` sees for a batch of `batch` samples."""
    shapes: dict[str, tuple] = {}

    def record(name: str):
        def hook(module, args) -> None:  # returns None: a pre-hook's return value replaces the arguments
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules()
             if isinstance(m, TensorizedLayer)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(batch, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def dense_module(layer: TensorizedLayer) -> nn.Module:
    """The nn.Conv2d (or nn.Linear) with the kernel the factors represent, rebuilt in float64."""
    with torch.no_grad():
        kernel = layer.format.rebuild([f.double() for f in layer.factors], layer.shape, layer.tensorization)
        kernel = kernel.to(layer.factors[0].dtype)
        s = layer.shape
        if isinstance(layer, TensorizedLinear):
            dense = nn.Linear(s.in_channels, s.out_channels, bias=layer.bias is not None)
            dense.weight.copy_(kernel[:, :, 0, 0])
        else:
            dense = nn.Conv2d(s.in_channels * s.groups, s.out_channels, (s.kh, s.kw), stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=s.groups,
                              bias=layer.bias is not None, padding_mode=layer.padding_mode)
            dense.weight.copy_(kernel)
        if layer.bias is not None:
            dense.bias.copy_(layer.bias)
    return dense.to(device=kernel.device, dtype=kernel.dtype)


def _dense_flops(layer: TensorizedLayer, input_shape: tuple) -> int:
    s = layer.shape
    if isinstance(layer, TensorizedLinear):
        return 2 * (torch.Size(input_shape[:-1]).numel()) * s.in_channels * s.out_channels
    with torch.no_grad():  # the output size, from the geometry alone
        out = nn.functional.conv2d(torch.zeros(1, 1, *input_shape[-2:]), torch.zeros(1, 1, s.kh, s.kw),
                                   stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    return 2 * input_shape[0] * s.out_channels * out.shape[-2] * out.shape[-1] * s.in_channels * s.kh * s.kw


@torch.inference_mode()
def _time_forms(dense: nn.Module, frozen: TensorizedLayer, shape: tuple) -> dict[str, float]:
    device = next(dense.parameters()).device
    x = torch.randn(shape, device=device)
    return interleaved_medians({"dense": lambda: dense(x), "factors": lambda: frozen(x)}, min_time=0.05,
                               max_rounds=15, min_rounds=3)


def deployable(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1, form: str = "auto"
               ) -> tuple[nn.Module, list[DeployChoice]]:
    """A copy of `model` in eval mode with each tensorial layer in its deployment form."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    deployed = copy.deepcopy(model).eval()
    inputs = tensorized_inputs(deployed, input_size, batch)
    choices = []
    for name, shape in inputs.items():
        layer = deployed.get_submodule(name)
        choice = DeployChoice(name, form, _dense_flops(layer, shape), layer.plan_for(shape).flops)
        dense = dense_module(layer)
        layer.freeze(shape)
        if form == "flops":
            choice.form = "factors" if choice.flops_factors < CHAIN_MARGIN * choice.flops_dense else "dense"
        elif form == "auto":
            times = _time_forms(dense, layer, shape)
            choice.ms_dense, choice.ms_factors = 1e3 * times["dense"], 1e3 * times["factors"]
            choice.form = "factors" if times["factors"] < times["dense"] else "dense"
        if choice.form == "dense":
            deployed.set_submodule(name, dense)
        choices.append(choice)
    return deployed, choices
