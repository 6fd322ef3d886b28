"""Tensorial layers: a convolution or a linear layer whose kernel is held as a format's factors.

`TensorizedLayer` holds the factors and evaluates them with conv_einsum, planned once per input shape.
`TensorizedConv2d` carries the replaced convolution's stride, padding (padding modes included),
dilation, groups and bias exactly; `TensorizedLinear` is the 1x1 case on a 1x1 map, its input [B, S]
viewed as [B, S, 1, 1]. `TensorizedLayer.from_layer` replaces either, initialised by Layer-Decomp.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..einsum import BoundExpression, contract_expression
from ..einsum.atomic import reshaped
from .base import Format, KernelShape, Ranks, get_format
from .tensorize import Tensorization, tensorize


class TensorizedLayer(nn.Module):
    """The factors of a kernel [out_channels, in_channels / groups, kh, kw] and their evaluation."""

    def __init__(self, fmt: str | Format, shape: KernelShape, ranks: Ranks, tensorization: Tensorization | None = None,
                 bias: bool = False, optimize: str = "optimal", dtype: torch.dtype | None = None):
        super().__init__()
        self.format = get_format(fmt) if isinstance(fmt, str) else fmt
        if self.format.reshaped and tensorization is None:
            tensorization = tensorize(shape.t, shape.in_channels)
        self.shape = shape
        self.tensorization = tensorization if self.format.reshaped else None
        self.ranks = self.format.normalise_ranks(shape, self.tensorization, dict(ranks))
        self.optimize = optimize
        self.expression = self.format.expression(shape, self.tensorization)
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(s, dtype=dtype))
             for s in self.format.factor_shapes(shape, self.tensorization, self.ranks)])
        self.bias = nn.Parameter(torch.zeros(shape.out_channels, dtype=dtype)) if bias else None
        sizes = self.format.sizes(shape, self.tensorization, self.ranks)
        _, in_modes = self.format.channel_modes(self.tensorization)
        # the input's channel axis as the format's input modes, groups first: the factors see [B, C, H, W]
        # as [B, *input_view, H, W] (public: moment propagation and calibration view inputs the same way)
        self.input_view = ((shape.groups,) if shape.groups > 1 else ()) + tuple(sizes[m] for m in in_modes)
        self.bound: BoundExpression | None = None  # set by freeze()

    # geometry of the convolution the factors compute (a linear layer: 1x1, stride 1, no padding)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    padding_mode = "zeros"

    @classmethod
    def shell(cls, layer: nn.Conv2d | nn.Linear, fmt: str | Format, ranks: Ranks,
              tensorization: Tensorization | None = None) -> TensorizedLayer:
        """A TensorizedConv2d or TensorizedLinear with `layer`'s geometry, bias and dtype, its factors not
        yet initialised (on the CPU)."""
        weight = layer.weight.detach()
        if isinstance(layer, nn.Linear):
            shape = KernelShape(weight.shape[0], weight.shape[1], 1, 1)
            return TensorizedLinear(fmt, shape, ranks, tensorization, bias=layer.bias is not None, dtype=weight.dtype)
        return TensorizedConv2d(fmt, KernelShape(*weight.shape, layer.groups), ranks, tensorization,
                                stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                padding_mode=layer.padding_mode, bias=layer.bias is not None, dtype=weight.dtype)

    @classmethod
    def from_layer(cls, layer: nn.Conv2d | nn.Linear, fmt: str | Format, ranks: Ranks,
                   tensorization: Tensorization | None = None, seed: int = 0,
                   decomposer: str = "native") -> TensorizedLayer:
        """Replace `layer` by a TensorizedConv2d or TensorizedLinear, initialising the factors by
        Layer-Decomp of its kernel (in float64, by the named decomposer)."""
        module = cls.shell(layer, fmt, ranks, tensorization)
        weight, shape = layer.weight.detach(), module.shape
        if isinstance(layer, nn.Linear):
            weight = weight[:, :, None, None]
        factors = module.format.initialise(weight, shape, module.tensorization, module.ranks, seed=seed,
                                           decomposer=decomposer)
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

    def _conv_input(self, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], object]:
        """The [B, C, H, W] the factors see for an input of `input_shape`, and the padding they apply."""
        return tuple(input_shape), self.padding

    def plan_for(self, input_shape: tuple[int, ...]):
        """The conv_einsum plan this layer uses for an input of `input_shape`."""
        (batch, _, h, w), padding = self._conv_input(input_shape)
        return self.plan_for_view((batch, *self.input_view, h, w), padding)

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

    def plan_for_view(self, x_shape: tuple[int, ...], padding, backward: bool | None = None):
        """The conv_einsum plan for an input already viewed as [B, *input_view, H, W] (`x_shape`) and
        padded by `padding` (0 when the layer pads explicitly first); planned for a backward pass when
        `backward`, or (None) when training with gradients on."""
        if backward is None:
            backward = self.training and torch.is_grad_enabled()
        return contract_expression(self.expression, x_shape, *(tuple(p.shape) for p in self.factors),
                                   stride=self.stride, padding=padding, dilation=self.dilation,
                                   optimize=self.optimize, backward=backward,
                                   device=self.factors[0].device, dtype=self.factors[0].dtype)

    def _apply_factors(self, x: torch.Tensor, padding) -> torch.Tensor:
        """[B, C, H, W] -> [B, out_channels, H', W'], bias included."""
        if self.bound is not None:  # the deployment form: sizes fixed but the batch
            in_hw, out_hw = self._frozen_hw
            if tuple(x.shape[-2:]) != in_hw:
                raise ValueError(f"this layer is a factor chain planned for {in_hw[0]}x{in_hw[1]} inputs, got "
                                 f"{x.shape[-2]}x{x.shape[-1]}; tnncompress.load(DIR, form='factors') (or "
                                 "form='dense') runs at any size")
            y = self.bound(reshaped(x, (-1, *self.input_view, *in_hw)))
            y = reshaped(y, (-1, self.shape.out_channels, *out_hw))
        else:
            batch, _, h, w = x.shape
            xt = x.reshape(batch, *self.input_view, h, w)
            # plan for the backward pass whenever one will follow (also in eval mode, as in distillation)
            backward = torch.is_grad_enabled() and (xt.requires_grad or any(p.requires_grad for p in self.factors))
            y = self.plan_for_view(tuple(xt.shape), padding, backward)(xt, *self.factors)
            y = y.reshape(batch, self.shape.out_channels, y.shape[-2], y.shape[-1])
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    def extra_repr(self) -> str:
        tz = self.tensorization
        tz = f", tensorization={tz.out_modes}x{tz.in_modes}" if tz else ""
        return (f"format={self.format.name}, shape={tuple(vars(self.shape).values())}, ranks={self.ranks}{tz}, "
                f"bias={self.bias is not None}")


class TensorizedConv2d(TensorizedLayer):
    def __init__(self, fmt: str | Format, shape: KernelShape, ranks: Ranks, tensorization: Tensorization | None = None,
                 stride=(1, 1), padding=(0, 0), dilation=(1, 1), padding_mode: str = "zeros", bias: bool = False,
                 optimize: str = "optimal", dtype: torch.dtype | None = None):
        super().__init__(fmt, shape, ranks, tensorization, bias=bias, optimize=optimize, dtype=dtype)
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        self.padding_mode = padding_mode

    def explicit_pads(self) -> list[tuple[int, int]]:
        """(before, after) padding of the rows and of the columns, as nn.Conv2d applies it."""
        if isinstance(self.padding, str):  # "same" with a padding mode: pad as conv would, then valid
            totals = [d * (k - 1) for d, k in zip(self.dilation, (self.shape.kh, self.shape.kw), strict=True)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in self.padding]

    def pads_explicitly(self) -> bool:
        """Non-zero padding modes pad explicitly, as nn.Conv2d does; zero padding goes to conv_einsum."""
        return self.padding_mode != "zeros" and self.padding not in ((0, 0), "valid")

    def _conv_input(self, input_shape):
        if not self.pads_explicitly():
            return tuple(input_shape), self.padding
        batch, c, h, w = input_shape
        pads = self.explicit_pads()
        return (batch, c, h + sum(pads[0]), w + sum(pads[1])), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.pads_explicitly():
            x = F.pad(x, [v for lo_hi in reversed(self.explicit_pads()) for v in lo_hi], mode=self.padding_mode)
            padding = 0
        return self._apply_factors(x, padding)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
                + (f", padding_mode={self.padding_mode}" if self.padding_mode != "zeros" else ""))


class TensorizedLinear(TensorizedLayer):
    """A linear layer [..., S] -> [..., T]: the factors applied as a 1x1 convolution to [N, S, 1, 1]."""

    def _conv_input(self, input_shape):
        return (math.prod(input_shape[:-1]), input_shape[-1], 1, 1), (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._apply_factors(x.reshape(-1, x.shape[-1], 1, 1), (0, 0))
        return y.reshape(-1, self.shape.out_channels) if len(lead) == 1 else y.reshape(*lead, self.shape.out_channels)


# What a run may plan its layers with: timed (and cached), fewest FLOPs, or the dense kernel rebuilt from the
# factors and one convolution (no timing, the same sums on every machine, fast wherever kernels are small)
PLANS = ("measure", "optimal", "rebuild")


@contextlib.contextmanager
def planned(model: nn.Module, optimize: str) -> Iterator[None]:
    """Every tensorial layer of `model` plans with `optimize` ("measure": timed candidates, which
    include rebuilding the dense kernel) inside the block, and as before after it."""
    layers = [m for m in model.modules() if isinstance(m, TensorizedLayer)]
    before = [m.optimize for m in layers]
    for m in layers:
        m.optimize = optimize
    try:
        yield
    finally:
        for m, o in zip(layers, before, strict=True):
            m.optimize = o
