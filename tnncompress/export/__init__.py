"""The export stage: the compressed model's weights and structure, its deployment form and ONNX graph."""

from .artifacts import STRUCTURE, WEIGHTS, load, write_compressed
from .config import ExportConfig
from .deploy import FORMS, DeployChoice, deployable, tensorized_inputs
from .onnx_graph import INPUT, OPSET, OUTPUT, OnnxCheck, operator_counts, session, to_onnx, verify

__all__ = ["FORMS", "INPUT", "OPSET", "OUTPUT", "STRUCTURE", "WEIGHTS", "DeployChoice", "ExportConfig", "OnnxCheck",
           "deployable", "load", "operator_counts", "session", "tensorized_inputs", "to_onnx", "verify",
           "write_compressed"]
