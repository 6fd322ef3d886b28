"""conv_einsum: einsum with convolution modes, an optimal sequencer and checkpointing (chapter 3)."""

from .bound import BoundExpression
from .contract import ConvEinsumExpression, chosen_plans, contract_expression, conv_einsum, forget_plans, pin_plans
from .parser import ExpressionError, parse

__all__ = ["BoundExpression", "ConvEinsumExpression", "ExpressionError", "chosen_plans", "contract_expression",
           "conv_einsum", "forget_plans", "parse", "pin_plans"]
