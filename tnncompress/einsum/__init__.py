"""conv_einsum: einsum with convolution modes, an optimal sequencer and checkpointing (chapter 3)."""

from .bound import BoundExpression
from .contract import ConvEinsumExpression, chosen_plans, contract_expression, conv_einsum, forget_plans, pin_plans
from .parser import ExpressionError, parse
from .paths import PATH_STRATEGIES

__all__ = ["PATH_STRATEGIES", "BoundExpression", "ConvEinsumExpression", "ExpressionError", "chosen_plans",
           "contract_expression",
           "conv_einsum", "forget_plans", "parse", "pin_plans"]
