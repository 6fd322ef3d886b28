"""Stride, padding and dilation of the effective filter, resolved per convolution mode.

The weights' filters along a convolution mode combine by full convolution into one effective filter of
length L = sum(L_i) - (n - 1); `padding="same"` pads d (L - 1) in all, the extra element on the right,
exactly as PyTorch does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .parser import Expression, ExpressionError


@dataclass(frozen=True)
class Geometry:
    stride: dict[str, int]
    pad: dict[str, tuple[int, int]]  # (before, after)
    dilation: dict[str, int]

    def describe(self) -> str:
        if not self.stride:
            return "no convolution modes"
        return ", ".join(f"{c}: stride {self.stride[c]}, padding {self.pad[c]}, dilation {self.dilation[c]}"
                         for c in self.stride)


def _per_mode(value, conv: tuple[str, ...], name: str) -> dict[str, int]:
    values = (value,) * len(conv) if isinstance(value, int) else tuple(value)
    if len(values) != len(conv):
        raise ExpressionError(f"{name} {value!r} gives {len(values)} values for {len(conv)} convolution modes")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ExpressionError(f"{name} must be integers, got {value!r}")
    return dict(zip(conv, values, strict=True))


def effective_length(expr: Expression, sizes: list[dict[str, int]], mode: str, operands) -> int:
    lengths = [sizes[i][mode] for i in operands if mode in sizes[i]]
    return sum(lengths) - len(lengths) + 1 if lengths else 1


def resolve(expr: Expression, sizes: list[dict[str, int]], stride, padding, dilation,
            weights_only: bool) -> Geometry:
    conv = expr.conv
    if weights_only:
        if (stride, padding, dilation) != (1, 0, 1):
            raise ExpressionError("stride, padding and dilation apply only when the first operand is an input")
        return Geometry({c: 1 for c in conv}, {c: (0, 0) for c in conv}, {c: 1 for c in conv})
    for c in conv:
        if c not in expr.inputs[0]:
            raise ExpressionError(f"convolution mode {c!r} must appear in the input (operand 0)")
    strides = _per_mode(stride, conv, "stride")
    dilations = _per_mode(dilation, conv, "dilation")
    if any(v < 1 for v in strides.values()) or any(v < 1 for v in dilations.values()):
        raise ExpressionError(f"stride and dilation must be positive, got stride={stride!r}, dilation={dilation!r}")
    weights = range(1, len(expr.inputs))
    total = {c: dilations[c] * (effective_length(expr, sizes, c, weights) - 1) for c in conv}
    if padding == "valid":
        pads = {c: (0, 0) for c in conv}
    elif padding == "same":
        if any(s != 1 for s in strides.values()):
            raise ExpressionError("padding='same' is not supported with a stride other than 1")
        pads = {c: (total[c] // 2, total[c] - total[c] // 2) for c in conv}
    elif isinstance(padding, str):
        raise ExpressionError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    else:
        pads = {c: (p, p) for c, p in _per_mode(padding, conv, "padding").items()}
        if any(p < 0 for p, _ in pads.values()):
            raise ExpressionError(f"padding must be non-negative, got {padding!r}")
    for c in conv:
        span = sizes[0][c] + sum(pads[c])
        if span < total[c] + 1:
            raise ExpressionError(f"convolution mode {c!r}: the padded input ({span}) is shorter than the "
                                  f"dilated effective filter ({total[c] + 1})")
    return Geometry(strides, pads, dilations)
