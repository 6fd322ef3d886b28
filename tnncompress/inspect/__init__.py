"""Inspection: the layer inventory (shapes, parameters, FLOPs, compressibility) of a model."""

from .layers import LayerInfo, layer_table, summarise

__all__ = ["LayerInfo", "layer_table", "summarise"]
