"""conv_einsum: einsum with convolution modes, an optimal sequencer and checkpointing (chapter 3)."""

from .bound import BoundExpression
from .contract import ConvEinsumExpression, contract_expression, conv_einsum
from .parser import ExpressionError, parse

__all__ = ["BoundExpression", "ConvEinsumExpression", "ExpressionError", "contract_expression", "conv_einsum", "parse"]
