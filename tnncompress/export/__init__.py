"""The export stage: the compressed model's weights and structure, its deployment forms and ONNX graph."""

from .artifacts import LOAD_FORMS, STRUCTURE, WEIGHTS, load, write_compressed
from .choose import FormDecision, deployable
from .config import ExportConfig
from .deploy import FORMS, DeployChoice, tensorized_inputs
from .onnx_graph import INPUT, OPSET, OUTPUT, OnnxCheck, operator_counts, session, to_onnx, verify

__all__ = ["FORMS", "INPUT", "LOAD_FORMS", "OPSET", "OUTPUT", "STRUCTURE", "WEIGHTS", "DeployChoice", "ExportConfig",
           "FormDecision", "OnnxCheck", "deployable", "load", "operator_counts", "session", "tensorized_inputs",
           "to_onnx", "verify", "write_compressed"]
