"""Tensorial formats: one module per family, one registry.

    svd  cp  tk  tt  tr          the kernel factorised as it is (the dissertation's NN- baselines)
    mcp  mtk  mtt  mtr           the kernel reshaped to T1..Tm x S1..Sm x kh x kw first (TNN-m)
"""

from . import cp, svd, tr, tt, tucker  # noqa: F401  (registers the formats)
from .base import FORMATS, Format, KernelShape, Ranks, get_format, list_formats
from .layer import TensorizedConv2d, TensorizedLayer, TensorizedLinear, planned
from .tensorize import Tensorization, balanced_factors, interleave, tensorize

__all__ = ["FORMATS", "Format", "KernelShape", "Ranks", "TensorizedConv2d", "TensorizedLayer", "TensorizedLinear",
           "Tensorization",
           "balanced_factors", "get_format", "interleave", "list_formats", "planned", "tensorize"]
