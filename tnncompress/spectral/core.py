"""The core of a factorised layer: the small convolution whose singular values are the layer's.

Senderovich et al. 2022 (Theorem 1): if a layer is A_out . C . A_in^T, with A_in and A_out 1x1 maps
(matrices over the channels) whose columns are orthonormal, its nonzero singular values are those of the
core convolution C, at every stride. Any frame can be made orthonormal without changing the layer:
A = Q R (QR), and R moves into the core. So for every format whose channel modes sit in *frames* (a
factor with exactly one channel mode and one rank mode: `svd`'s output factor, `tk`'s and `tt`'s outer
cores, `cp`'s S and T factors, `mtk`'s per-mode factors) the layer's spectrum is that of a core
convolution prod(frame ranks) x prod(frame ranks) x kh x kw, instead of T x S x kh x kw.

Nothing here knows a format: frames are found from `Format.terms`, and the core is the einsum of the
remaining factors with each frame replaced by its R. A rank shared by a frame and other factors (CP's
one rank) needs no special case: the einsum sums it once over all of them. Formats without a frame on
either side (mcp, mtt, tr, mtr) have no core; `layers.py` then uses the rebuilt kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats.base import Format, KernelShape


@dataclass(frozen=True)
class Frame:
    factor: int  # index into the format's terms
    channel: str  # the channel mode it maps (an "s" mode on the input side, a "t" mode on the output)
    rank: str


def frames(fmt: Format, tz) -> list[Frame]:
    """The factors of `fmt` that are frames: one channel mode and one rank mode, nothing else."""
    out_modes, in_modes = fmt.channel_modes(tz)
    channels = set(out_modes) | set(in_modes)
    found = []
    for i, term in enumerate(fmt.terms(tz)):
        if len(term) != 2:
            continue
        chan = [m for m in term if m in channels]
        rest = [m for m in term if m not in channels and m not in ("h", "w")]
        if len(chan) == 1 and len(rest) == 1:
            found.append(Frame(i, chan[0], rest[0]))
    return found


def has_core(fmt: Format, tz) -> bool:
    return bool(frames(fmt, tz))


@dataclass
class CoreSplit:
    """A factorised layer (one group) as orthonormal frames around a core: the layer's kernel is
    einsum(spec, *operands) with each frame operand R replaced by Q R. `operands` are the factors with
    every frame replaced by its R [min(channel, rank), rank]; `qs` maps a frame's factor index to its Q
    [channel, min(channel, rank)]; `sizes` are the core einsum's output sizes before the reshape to
    [k_out, k_in, kh, kw]."""

    spec: str
    operands: list[torch.Tensor]
    qs: dict[int, torch.Tensor]
    channel_first: dict[int, bool]  # per frame: is its channel mode the factor's first mode
    sizes: tuple[int, ...]
    kernel_shape: tuple[int, int, int, int]

    def core(self, operands: list[torch.Tensor] | None = None) -> torch.Tensor:
        return torch.einsum(self.spec, *(operands or self.operands)).reshape(self.kernel_shape)


def split_core(fmt: Format, shape: KernelShape, tz, factors: list[torch.Tensor],
               out_scale: torch.Tensor | None = None) -> CoreSplit:
    """Frames orthonormalised by QR, their R moved into the core (see the module's docstring). Raises
    ValueError for a format without frames, or an output scale the frames cannot carry."""
    found = frames(fmt, tz)
    if not found:
        raise ValueError(f"format {fmt.name} has no frame factors")
    out_modes, in_modes = fmt.channel_modes(tz)
    terms = [list(t) for t in fmt.terms(tz)]
    operands = list(factors)
    if out_scale is not None:  # scale the output channels: on the output frame, or on the kernel
        out_frames = [f for f in found if f.channel in out_modes]
        if len(out_modes) != 1 or not out_frames:
            raise ValueError("an output scale needs a single output channel mode held by a frame")
        f = out_frames[0]
        t_axis = terms[f.factor].index(f.channel)
        view = [1, 1]
        view[t_axis] = -1
        operands[f.factor] = operands[f.factor] * out_scale.reshape(view)
    renamed: dict[str, str] = {}
    qs: dict[int, torch.Tensor] = {}
    channel_first: dict[int, bool] = {}
    for f in found:
        term = terms[f.factor]
        channel_first[f.factor] = term.index(f.channel) == 0
        matrix = operands[f.factor].permute(term.index(f.channel), term.index(f.rank))  # [channel, rank]
        q, r = torch.linalg.qr(matrix, mode="reduced")  # A = Q R; R [min(channel, rank), rank]
        kappa = f"k_{f.channel}"
        renamed[f.channel] = kappa
        terms[f.factor] = [kappa, f.rank]
        operands[f.factor] = r
        qs[f.factor] = q
    out = [renamed.get(m, m) for m in out_modes] + [renamed.get(m, m) for m in in_modes] + ["h", "w"]
    letters: dict[str, str] = {}
    for m in [m for t in terms for m in t] + out:
        letters.setdefault(m, chr(ord("a") + len(letters)) if len(letters) < 26 else chr(ord("A") + len(letters) - 26))
    spec = ",".join("".join(letters[m] for m in t) for t in terms) + "->" + "".join(letters[m] for m in out)
    size = {letters[m]: n for t, op in zip(terms, operands, strict=True) for m, n in zip(t, op.shape, strict=True)}
    sizes = tuple(size[letters[m]] for m in out)
    n_out = 1
    for m in out_modes:
        n_out *= size[letters[renamed.get(m, m)]]
    return CoreSplit(spec, operands, qs, channel_first, sizes, (n_out, -1, shape.kh, shape.kw))


def core_kernel(fmt: Format, shape: KernelShape, tz, factors: list[torch.Tensor],
                out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The core convolution kernel [k_out, k_in, kh, kw] of one group's factors (no group mode): its
    singular values are the layer's (scaled per output channel by `out_scale`, a following batch norm),
    apart from zeros. Raises ValueError for a format without frames."""
    return split_core(fmt, shape, tz, factors, out_scale).core()
