"""Inspection: the layer inventory (shapes, parameters, FLOPs, compressibility) of a model."""

from .layers import LayerInfo, forward_probe, layer_table, summarise

__all__ = ["LayerInfo", "forward_probe", "layer_table", "summarise"]
