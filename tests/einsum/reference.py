"""An independent reference for conv_einsum, by explicit loops over filter taps (no convNd at all).

1. The weights are combined into one effective filter: pairwise, each along the convolution modes by a
   full convolution written as a sum over the taps of one operand of shifted copies of the other.
2. The input is padded, then for every tap of the effective filter the strided, dilated window of the
   input is contracted with that tap by torch.einsum, and the contributions are summed.
"""

from __future__ import annotations

import itertools
import string

import torch
import torch.nn.functional as F

from tnncompress.einsum.parser import parse


def _letters(modes):
    return {m: string.ascii_letters[i] for i, m in enumerate(modes)}


def _full_conv_pair(ta, ma, tb, mb, conv):
    """Full convolution of two weights along their shared convolution modes, outer/batch elsewhere."""
    shared = [c for c in conv if c in ma and c in mb]
    out_modes = list(dict.fromkeys(list(ma) + list(mb)))
    sizes = {m: ta.shape[ma.index(m)] for m in ma}
    sizes.update({m: tb.shape[mb.index(m)] for m in mb if m not in shared})
    for c in shared:
        sizes[c] = ta.shape[ma.index(c)] + tb.shape[mb.index(c)] - 1
    out = ta.new_zeros([sizes[m] for m in out_modes])
    letters = _letters(out_modes)
    eq = "".join(letters[m] for m in ma) + "," + "".join(letters[m] for m in mb) + "->" + \
        "".join(letters[m] for m in out_modes)
    for taps in itertools.product(*(range(ta.shape[ma.index(c)]) for c in shared)):
        index_a = [slice(None)] * len(ma)
        for c, k in zip(shared, taps, strict=True):
            index_a[ma.index(c)] = slice(k, k + 1)
        part = torch.einsum(eq, ta[tuple(index_a)], tb)  # shared modes: a has length 1, b its own
        index_out = [slice(None)] * len(out_modes)
        for c, k in zip(shared, taps, strict=True):
            index_out[out_modes.index(c)] = slice(k, k + tb.shape[mb.index(c)])
        out[tuple(index_out)] += part
    return out, out_modes


def effective_filter(terms, tensors, conv):
    t, m = tensors[0], list(terms[0])
    for tb, mb in zip(tensors[1:], terms[1:], strict=True):
        t, m = _full_conv_pair(t, m, tb, list(mb), conv)
    return t, m


def reference(text, *operands, stride=1, padding=0, dilation=1, weights_only=False):
    expr = parse(text)
    conv = list(expr.conv)
    if weights_only:
        t, modes = effective_filter(expr.inputs, operands, conv)
        letters = _letters(modes)
        return torch.einsum("".join(letters[m] for m in modes) + "->" + "".join(letters[m] for m in expr.output), t)
    x, xm = operands[0], list(expr.inputs[0])
    if len(operands) > 1:
        w, wm = effective_filter(expr.inputs[1:], operands[1:], conv)
    else:
        w, wm = torch.ones((), dtype=x.dtype), []
    per = lambda v: dict(zip(conv, (v,) * len(conv) if isinstance(v, int) else v, strict=True))  # noqa: E731
    s, d = per(stride), per(dilation)
    klen = {c: (w.shape[wm.index(c)] if c in wm else 1) for c in conv}
    if padding == "same":
        pads = {c: (d[c] * (klen[c] - 1) // 2, d[c] * (klen[c] - 1) - d[c] * (klen[c] - 1) // 2) for c in conv}
    elif padding == "valid":
        pads = {c: (0, 0) for c in conv}
    else:
        pads = {c: (p, p) for c, p in per(padding).items()}
    flat = []
    for c in reversed(xm):
        flat += list(pads[c]) if c in conv else [0, 0]
    xp = F.pad(x, flat)
    out_len = {c: (xp.shape[xm.index(c)] - d[c] * (klen[c] - 1) - 1) // s[c] + 1 for c in conv}
    all_modes = list(dict.fromkeys(xm + wm + list(expr.output)))
    letters = _letters(all_modes)
    wm_plain = [m for m in wm if m not in conv]
    eq = "".join(letters[m] for m in xm) + "," + "".join(letters[m] for m in wm_plain) + "->" + \
        "".join(letters[m] for m in expr.output)
    total = None
    for taps in itertools.product(*(range(klen[c]) for c in conv)):
        index_x = [slice(None)] * len(xm)
        index_w = [slice(None)] * len(wm)
        for c, k in zip(conv, taps, strict=True):
            start = k * d[c]
            index_x[xm.index(c)] = slice(start, start + s[c] * (out_len[c] - 1) + 1, s[c])
            if c in wm:
                index_w[wm.index(c)] = k
        part = torch.einsum(eq, xp[tuple(index_x)], w[tuple(index_w)] if wm else w)
        total = part if total is None else total + part
    return total
