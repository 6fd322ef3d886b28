"""The export stage: the compressed model's weights and structure, its deployment form and ONNX graph."""

from .artifacts import STRUCTURE, WEIGHTS, load, write_compressed
from .deploy import DeployChoice, deployable
from .onnx_graph import operator_counts, to_onnx, verify

__all__ = ["STRUCTURE", "WEIGHTS", "DeployChoice", "deployable", "load", "operator_counts", "to_onnx", "verify",
           "write_compressed"]
