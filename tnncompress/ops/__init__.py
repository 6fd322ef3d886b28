"""The operations of a traced model and the one walker that interprets it (walk.py), each operation
declared once with its rule for every analysis (table.py): the Lipschitz bound's gain (gains.py) and
the moments of sampling-free propagation (moments.py)."""

from .moments import Gauss
from .table import OPERATIONS, SHAPE_ATTRIBUTES, Unsupported, plain, plain_or_copied
from .walk import Call, Operation, Operations, walk

__all__ = ["OPERATIONS", "SHAPE_ATTRIBUTES", "Call", "Gauss", "Operation", "Operations", "Unsupported", "plain",
           "plain_or_copied", "walk"]
