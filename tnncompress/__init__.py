"""tnncompress: compress pretrained CNNs into tensorial neural networks."""

__version__ = "0.1.0"

from .einsum import contract_expression, conv_einsum  # noqa: E402
from .export import load  # noqa: E402

__all__ = ["__version__", "compress", "contract_expression", "conv_einsum", "load"]

# tnncompress.compress(model, ...) is the in-memory run; calling the compress package calls it (compress/)
from . import compress  # noqa: E402
