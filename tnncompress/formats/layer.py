"""TensorizedConv2d: a convolution (or linear) layer whose kernel is held as a format's factors.

It carries the replaced layer's stride, padding (including padding modes), dilation, groups and bias
exactly, and evaluates the factors with conv_einsum (planned once per input shape). A linear layer is the
1x1 case: its input [B, S] is viewed as [B, S, 1, 1].
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..einsum import contract_expression
from ..einsum.bound import BoundExpression
from .base import Format, KernelShape, Ranks, get_format
from .tensorize import Tensorization, tensorize


class TensorizedConv2d(nn.Module):
    def __init__(self, fmt: str | Format, shape: KernelShape, ranks: Ranks, tensorization: Tensorization | None = None,
                 stride=(1, 1), padding=(0, 0), dilation=(1, 1), padding_mode: str = "zeros", bias: bool = False,
                 linear: bool = False, optimize: str = "optimal", dtype: torch.dtype | None = None):
        super().__init__()
        self.format = get_format(fmt) if isinstance(fmt, str) else fmt
        if self.format.reshaped and tensorization is None:
            tensorization = tensorize(shape.t, shape.in_channels)
        self.shape = shape
        self.tensorization = tensorization if self.format.reshaped else None
        self.ranks = self.format.normalise_ranks(shape, self.tensorization, dict(ranks))
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        self.padding_mode = padding_mode
        self.linear = linear
        self.optimize = optimize
        self.expression = self.format.expression(shape, self.tensorization)
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(s, dtype=dtype))
             for s in self.format.factor_shapes(shape, self.tensorization, self.ranks)])
        self.bias = nn.Parameter(torch.zeros(shape.out_channels, dtype=dtype)) if bias else None
        sizes = self.format.sizes(shape, self.tensorization, self.ranks)
        _, in_modes = self.format.channel_modes(self.tensorization)
        self._in_view = ((shape.groups,) if shape.groups > 1 else ()) + tuple(sizes[m] for m in in_modes)
        self.bound: BoundExpression | None = None  # set by freeze()

    @classmethod
    def from_layer(cls, layer: nn.Conv2d | nn.Linear, fmt: str | Format, ranks: Ranks,
                   tensorization: Tensorization | None = None, seed: int = 0) -> TensorizedConv2d:
        """Replace `layer`, initialising the factors by Layer-Decomp of its kernel (in float64)."""
        linear = isinstance(layer, nn.Linear)
        weight = layer.weight.detach()
        if linear:
            weight = weight[:, :, None, None]
            geometry = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), padding_mode="zeros")
            groups = 1
        else:
            geometry = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                            padding_mode=layer.padding_mode)
            groups = layer.groups
        shape = KernelShape(weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3], groups)
        module = cls(fmt, shape, ranks, tensorization, bias=layer.bias is not None, linear=linear,
                     dtype=weight.dtype, **geometry)
        factors = module.format.initialise(weight, shape, module.tensorization, module.ranks, seed=seed)
        with torch.no_grad():
            for p, f in zip(module.factors, factors, strict=True):
                p.copy_(f.to(p.dtype))
            if layer.bias is not None:
                module.bias.copy_(layer.bias.detach())
        return module.to(weight.device)

    def dense_kernel(self) -> torch.Tensor:
        return self.format.rebuild(list(self.factors), self.shape, self.tensorization)

    def params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def plan_for(self, input_shape: tuple[int, ...]):
        """The conv_einsum plan this layer uses for an input of `input_shape` ([B, C, H, W] or [B, F])."""
        if self.linear:
            input_shape = (math.prod(input_shape[:-1]), input_shape[-1], 1, 1)
        batch, _, h, w = input_shape
        padding = self.padding
        if self.padding_mode != "zeros" and self.padding not in ((0, 0), "valid"):
            pads = self._explicit_pads()
            h, w, padding = h + sum(pads[0]), w + sum(pads[1]), 0
        return self._plan((batch, *self._in_view, h, w), padding)

    def freeze(self, input_shape: tuple[int, ...]) -> None:
        """The deployment form: the plan for `input_shape` with the weight-only steps done once (see
        BoundExpression); the factors are dropped, so the layer can no longer be trained or saved."""
        was_training = self.training
        self.eval()
        plan = self.plan_for(input_shape)
        bound = BoundExpression(plan, list(self.factors))
        self.train(was_training)
        self.bound = bound
        # Static spatial sizes (the plan is for them) keep shapes known to a tracer such as the ONNX exporter.
        self._frozen_hw = (tuple(plan.shapes[0][-2:]), tuple(plan.output_shape[-2:]))
        self.factors = nn.ParameterList()

    def _plan(self, x_shape: tuple[int, ...], padding, backward: bool | None = None):
        if backward is None:
            backward = self.training and torch.is_grad_enabled()
        return contract_expression(self.expression, x_shape, *(tuple(p.shape) for p in self.factors),
                                   stride=self.stride, padding=padding, dilation=self.dilation,
                                   optimize=self.optimize, backward=backward,
                                   device=self.factors[0].device, dtype=self.factors[0].dtype)

    def _padded(self, x: torch.Tensor):
        """Non-zero padding modes pad explicitly, as nn.Conv2d does; zero padding goes to conv_einsum."""
        if self.padding_mode == "zeros" or self.padding == (0, 0) or self.padding == "valid":
            return x, self.padding
        flat = [v for lo_hi in reversed(self._explicit_pads()) for v in lo_hi]
        return F.pad(x, flat, mode=self.padding_mode), 0

    def _explicit_pads(self) -> list[tuple[int, int]]:
        if isinstance(self.padding, str):  # "same" with a padding mode: pad as conv would, then valid
            totals = [d * (k - 1) for d, k in zip(self.dilation, (self.shape.kh, self.shape.kw), strict=True)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in self.padding]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            lead = x.shape[:-1]
            x = x.reshape(-1, x.shape[-1], 1, 1)
        x, padding = self._padded(x)
        if self.bound is not None:  # the deployment form: sizes fixed but the batch
            in_hw, out_hw = self._frozen_hw
            y = self.bound(x.reshape(-1, *self._in_view, *in_hw)).reshape(-1, self.shape.out_channels, *out_hw)
        else:
            batch, _, h, w = x.shape
            xt = x.reshape(batch, *self._in_view, h, w)
            # plan for the backward pass whenever one will follow (also in eval mode, as in distillation)
            backward = torch.is_grad_enabled() and (xt.requires_grad or any(p.requires_grad for p in self.factors))
            y = self._plan(tuple(xt.shape), padding, backward)(xt, *self.factors)
            y = y.reshape(batch, self.shape.out_channels, y.shape[-2], y.shape[-1])
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        if self.linear:
            y = y.reshape(-1, self.shape.out_channels) if len(lead) == 1 else y.reshape(*lead, self.shape.out_channels)
        return y

    def extra_repr(self) -> str:
        tz = self.tensorization
        tz = f", tensorization={tz.out_modes}x{tz.in_modes}" if tz else ""
        return (f"format={self.format.name}, shape={tuple(vars(self.shape).values())}, ranks={self.ranks}{tz}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}, linear={self.linear}")


@contextlib.contextmanager
def planned(model: nn.Module, optimize: str) -> Iterator[None]:
    """Every TensorizedConv2d of `model` plans with `optimize` ("measure": timed candidates, which
    include rebuilding the dense kernel) inside the block, and as before after it."""
    layers = [m for m in model.modules() if isinstance(m, TensorizedConv2d)]
    before = [m.optimize for m in layers]
    for m in layers:
        m.optimize = optimize
    try:
        yield
    finally:
        for m, o in zip(layers, before, strict=True):
            m.optimize = o
