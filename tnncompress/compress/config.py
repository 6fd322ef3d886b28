"""What the compression stage is told: which layers, which format, and how many parameters (or FLOPs)."""

from ..decompose import DECOMPOSERS
from ..errors import UsageError, opt
from ..formats import list_formats
from ..options import Section, option
from .ranks import RATE_BY


class CompressConfig(Section, name="compress", title="Compression"):
    format: str = option("mcp", "Tensorial format of the compressed layers.", short="-f", choices=tuple(list_formats()))
    rate: float | None = option(None, "Kept share of each layer's parameters.", short="-r", above=0, maximum=1)
    rate_by: str = option("params", "What the rate bounds.", choices=RATE_BY)
    rank_multiple: int = option(1, "Round each rank the rate chooses down to a multiple of this (smaller ranks are "
                                   "kept), then spend what the budget has left in steps of it: CPU convolution "
                                   "kernels are fastest on channel counts that fill their vector block (8 or 16).",
                                minimum=1)
    modes: int = option(3, "m, the number of channel modes of the reshaped formats.", minimum=1)
    ranks: str | None = option(None, "Ranks file (YAML, JSON, or a report.json): formats and ranks per layer.")
    decomposer: str = option("native", "Layer-Decomp by ours, or by TensorLy's.", choices=tuple(DECOMPOSERS))
    init: str = option("auto", "Fit each layer's kernel (weights) or its output on the calibration pool (data; auto: "
                               "data when there is data).", choices=("auto", "weights", "data"))
    init_inputs: str = option("student", "Data-aware fit: each layer sees the student's own upstream, or the "
                                         "teacher's.", choices=("student", "teacher"))
    allocate: str = option("uniform", "Ranks: the rate for every layer, or one global budget (needs data).",
                           choices=("uniform", "global"))
    include: list[str] = option([], "Compress only layers matching these globs (or re:REGEX).")
    exclude: list[str] = option([], "Leave layers matching these globs (or re:REGEX) dense.")

    def needs_rate(self) -> None:
        """Factorising needs a rate or ranks (checked by the recipe: --spectral orthogonal needs neither)."""
        if self.rate is None and self.ranks is None:
            raise UsageError(f"give {opt('rate')} (e.g. 0.05) or a {opt('ranks')} file")
