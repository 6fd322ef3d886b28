"""Batch-norm recalibration: the student's activations are not the teacher's, so its norms' running
statistics are re-estimated on the calibration pool: an exact mean and (biased) variance over every
position of every image, norm by norm in forward order, so that each sees its input as the norms before
it, already recalibrated, make it."""

from __future__ import annotations

import torch
from torch import nn

from ..capture import capture
from ..inspect import call_order
from .pool import CalibrationPool

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, pool: CalibrationPool, batch_size: int = 256,
                   only: set[str] | None = None, preserve: set[str] = frozenset()) -> list[str]:
    """Re-estimate the running mean and variance of the batch norms of `model` (those named in `only`,
    when given) on `pool`, in the order they are called, each from its input under the norms before it
    already recalibrated; returns their names. The norms in `preserve` (whose scale and shift a
    data-aware fit has set) keep the function they compute: their weight and bias absorb the change of
    statistics. Every other parameter and buffer is left as it was."""
    norms = {n: m for n, m in model.named_modules() if isinstance(m, NORMS) and m.track_running_stats
             and (only is None or n in only)}
    if not norms:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = [n for n in call_order(model, tuple(pool.images.shape[1:]))[0] if n in norms]
    try:
        for name in order:
            m = norms[name]
            total, squares, count = 0.0, 0.0, 0
            for batch in pool.batches(batch_size, device):
                x = capture(model, batch, inputs=(name,))[(name, "input")].double()
                dims = [d for d in range(x.ndim) if d != 1]
                total, squares = total + x.sum(dims), squares + (x * x).sum(dims)
                count += x.numel() // x.shape[1]
            mean = total / count
            var = (squares / count - mean * mean).clamp_min(0)
            if name in preserve and m.affine:  # the same scale w / sqrt(v + eps) and shift b - mu s after
                scale = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
                shift = m.bias.double() - m.running_mean.double() * scale
                m.weight.copy_((scale * torch.sqrt(var + m.eps)).to(m.weight.dtype))
                m.bias.copy_((shift + mean * scale).to(m.bias.dtype))
            m.running_mean.copy_(mean.to(m.running_mean.dtype))
            m.running_var.copy_(var.to(m.running_var.dtype))
    finally:
        model.train(was_training)
    return order

