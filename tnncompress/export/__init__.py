"""The export stage: the compressed model's weights and structure (and, later, ONNX)."""

from .artifacts import STRUCTURE, WEIGHTS, load, write_compressed

__all__ = ["STRUCTURE", "WEIGHTS", "load", "write_compressed"]
