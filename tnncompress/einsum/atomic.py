"""Pairwise steps compiled to PyTorch primitives (dissertation section 3.4.1).

Every step is compiled once, at planning time, into a permutation, a reshape and one call:
  * a step that holds the input and has convolution modes -> one F.conv1d/2d/3d (cross-correlation):
    input-only letters become the batch, weight-only letters the output channels, shared kept letters
    the groups, shared summed letters the input channels; a convolution mode the weight lacks is a
    kernel of length 1. Padding is applied at the first weight along a mode, the stride at the last;
  * two weight intermediates sharing convolution modes -> one F.convNd on the padded, flipped
    operands: their full convolution;
  * anything else -> torch.einsum.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from operator import mul

import torch
import torch.nn.functional as F

from .network import Network, Subset

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _prod(values) -> int:
    return reduce(mul, values, 1)


def reshaped(t: torch.Tensor, shape) -> torch.Tensor:
    """`t.reshape(shape)`, or `t` itself when it has that shape already: a traced graph then holds no
    Reshape to the same shape, which would sit between a Conv and what onnxruntime fuses into it."""
    if t.dim() == len(shape) and all(s in (-1, d) for s, d in zip(shape, t.shape, strict=True)):
        return t
    return t.reshape(shape)


def _permutation(current: tuple[str, ...], wanted: list[str]) -> list[int] | None:
    perm = [current.index(m) for m in wanted]
    return None if perm == list(range(len(perm))) else perm


@dataclass
class CompiledStep:
    kind: str  # "conv", "full-conv" or "einsum"
    modes: tuple[str, ...]  # mode order of the result
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    label: str  # human-readable form, e.g. "b(s1)hw,r(s1)->bhwr|hw"


def _term(modes) -> str:
    return "".join(m if len(m) == 1 else f"({m})" for m in modes)


def compile_step(net: Network, a: Subset, b: Subset, modes_a: tuple[str, ...], modes_b: tuple[str, ...]
                 ) -> tuple[CompiledStep, bool]:
    """Compile merging node a (modes_a) with node b (modes_b). Returns the step and whether the
    operands were swapped (the step then expects (b, a))."""
    shared_conv = [c for c in net.conv if c in modes_a and c in modes_b]
    if net.has_signal(b):
        swapped = True
    elif shared_conv and not net.has_signal(a):  # full convolution: the smaller operand is the kernel
        swapped = _prod(net.size(a, c) for c in shared_conv) < _prod(net.size(b, c) for c in shared_conv)
    else:
        swapped = False
    if swapped:
        a, b, modes_a, modes_b = b, a, modes_b, modes_a
    if net.has_signal(a) and net.conv:
        step = _signal_conv(net, a, b, modes_a, modes_b)
    elif shared_conv:
        step = _full_conv(net, a, b, modes_a, modes_b, shared_conv)
    else:
        step = _einsum(net, a, b, modes_a, modes_b)
    return step, swapped


def _classify(net: Network, merged: Subset, modes_a, modes_b, conv_a, conv_b):
    keep = net.legs(merged)
    plain_a = [m for m in modes_a if m not in conv_a]
    plain_b = [m for m in modes_b if m not in conv_b]
    groups = [m for m in plain_a if m in plain_b and m in keep]
    summed = [m for m in plain_a if m in plain_b and m not in keep]
    only_a = [m for m in plain_a if m not in plain_b]
    only_b = [m for m in plain_b if m not in plain_a]
    return only_a, groups, summed, only_b


def _conv_call(net: Network, merged: Subset, modes_a, modes_b, spatial_a: list[str], spatial_b: list[str],
               in_spatial: list[int], kernel_dims: Callable[[dict], list[int]], pads, strides, dilations, flip: bool,
               label: str, kind: str) -> CompiledStep:
    """Shared machinery: the layout of one grouped convolution between a and b."""
    only_a, groups, summed, only_b = _classify(net, merged, modes_a, modes_b, spatial_a, spatial_b)
    perm_a = _permutation(modes_a, only_a + groups + summed + spatial_a)
    perm_b = _permutation(modes_b, groups + only_b + summed + spatial_b)
    n_g = _prod(net.common[m] for m in groups)
    n_k = _prod(net.common[m] for m in summed)
    n_b = _prod(net.common[m] for m in only_b)
    # Every size is fixed by the plan but the leading one, left to reshape (-1): it holds the batch, so
    # a traced graph (ONNX export) keeps a dynamic batch axis and static sizes everywhere else.
    in_shape = [-1, n_g * n_k, *in_spatial]
    w_shape = [n_g * n_b, n_k] + kernel_dims({})
    out_modes = tuple(only_a + groups + only_b + spatial_a)
    out_plain = [net.common[m] for m in only_a + groups + only_b]
    if only_a:
        out_plain[0] = -1
    out_spatial = [net.size(merged, c) for c in spatial_a]
    conv = _CONV[len(spatial_a)]
    symmetric = all(lo == hi for lo, hi in pads)
    conv_padding = [lo for lo, _ in pads] if symmetric else 0
    explicit_pad = [] if symmetric else [p for lo_hi in reversed(pads) for p in lo_hi]
    flip_dims = list(range(2, 2 + len(spatial_a)))

    def run(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        if perm_a is not None:
            ta = ta.permute(perm_a)
        x = reshaped(ta, in_shape)
        if perm_b is not None:
            tb = tb.permute(perm_b)
        w = tb.reshape(w_shape)
        if flip:
            w = w.flip(flip_dims)
        if explicit_pad:
            x = F.pad(x, explicit_pad)
        y = conv(x, w, stride=strides, padding=conv_padding, dilation=dilations, groups=n_g)
        return reshaped(y, out_plain + out_spatial)

    return CompiledStep(kind, out_modes, run, label.format(out=_term(out_modes)))


def _signal_conv(net: Network, a: Subset, b: Subset, modes_a, modes_b) -> CompiledStep:
    merged = a | b
    spatial_a = [c for c in net.conv if c in modes_a]
    spatial_b = [c for c in net.conv if c in modes_b]
    pads, strides, dilations = [], [], []
    for c in spatial_a:
        arriving = c in spatial_b
        first = arriving and not (net.weights_with[c] & a)
        last = arriving and net.weights_with[c] <= merged
        pads.append(net.geometry.pad[c] if first else (0, 0))
        strides.append(net.geometry.stride[c] if last else 1)
        dilations.append(net.geometry.dilation[c] if arriving else 1)
    kernel = [net.size(b, c) if c in spatial_b else 1 for c in spatial_a]
    label = f"{_term(modes_a)},{_term(modes_b)}->{{out}}|{_term(spatial_a)}"
    return _conv_call(net, merged, modes_a, modes_b, spatial_a, spatial_b, [net.size(a, c) for c in spatial_a],
                      lambda _: kernel, pads, strides, dilations, flip=False, label=label, kind="conv")


def _full_conv(net: Network, a: Subset, b: Subset, modes_a, modes_b, shared: list[str]) -> CompiledStep:
    merged = a | b
    # Convolution modes held by one side only are ordinary letters of this step.
    lone = [c for c in net.conv if c not in shared]
    kernel = [net.size(b, c) for c in shared]
    pads = [(k - 1, k - 1) for k in kernel]
    label = f"{_term(modes_a)},{_term(modes_b)}->{{out}}|{_term(shared)} (full convolution)"
    return _conv_call(_LoneAsPlain(net, lone, a, b), merged, modes_a, modes_b, shared, shared,
                      [net.size(a, c) for c in shared], lambda _: kernel, pads, [1] * len(shared),
                      [1] * len(shared), flip=True, label=label, kind="full-conv")


class _LoneAsPlain:
    """A view of the network in which convolution modes held by only one side of a weight-weight step
    are plain letters with that side's length."""

    def __init__(self, net: Network, lone: list[str], a: Subset, b: Subset):
        self._net = net
        self.common = dict(net.common)
        for c in lone:
            side = a if c in net.legs(a) else b
            if c in net.legs(side):
                self.common[c] = net.size(side, c)
        self.legs = net.legs

    def size(self, subset: Subset, mode: str) -> int:
        return self._net.size(subset, mode)


def _einsum(net: Network, a: Subset, b: Subset, modes_a, modes_b) -> CompiledStep:
    keep = net.legs(a | b)
    out = tuple([m for m in modes_a if m in keep] + [m for m in modes_b if m in keep and m not in modes_a])
    letters = {m: string.ascii_letters[i] for i, m in enumerate(dict.fromkeys(modes_a + modes_b))}
    equation = ("".join(letters[m] for m in modes_a) + "," + "".join(letters[m] for m in modes_b) + "->"
                + "".join(letters[m] for m in out))

    def run(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        return torch.einsum(equation, ta, tb)

    return CompiledStep("einsum", out, run, f"{_term(modes_a)},{_term(modes_b)}->{_term(out)}")
