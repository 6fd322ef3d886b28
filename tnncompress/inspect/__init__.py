"""Inspection: the layer inventory (shapes, parameters, FLOPs, compressibility) of a model."""

from .graph import NORMS, call_order, last_layer, norm_after
from .layers import LayerInfo, forward_probe, layer_table, summarise

__all__ = ["NORMS", "LayerInfo", "call_order", "forward_probe", "last_layer", "layer_table", "norm_after", "summarise"]
