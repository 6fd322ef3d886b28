"""Layer-Decomp's algorithms: decompositions of dense tensors, in torch (float64, any device).

    cp_als      CP by alternating least squares, SVD-initialised
    hooi        Tucker by higher-order orthogonal iteration, HOSVD-initialised (any subset of modes)
    tt_svd      tensor train by sequential truncated SVD
    tr_als      tensor ring by alternating least squares, TT-SVD-initialised

`get_decomposer("native" | "tensorly")` gives these, or TensorLy's, behind one interface (backends.py).
"""

from .backends import DECOMPOSERS, Decomposer, get_decomposer
from .cp import CPResult, cp_als, cp_rebuild
from .tr import TRResult, tr_als, tr_rebuild
from .tt import TTResult, max_tt_ranks, tt_rebuild, tt_svd
from .tucker import TuckerResult, hooi, tucker_rebuild

__all__ = ["DECOMPOSERS", "CPResult", "Decomposer", "TRResult", "TTResult", "TuckerResult", "cp_als", "cp_rebuild",
           "get_decomposer", "hooi", "max_tt_ranks", "tr_als", "tr_rebuild", "tt_rebuild", "tt_svd", "tucker_rebuild"]
