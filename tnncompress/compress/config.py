"""What the compression stage is told: which layers, which format, and how many parameters (or FLOPs)."""

from ..decompose import DECOMPOSERS
from ..errors import UsageError, opt
from ..formats import list_formats
from ..options import Section, option
from .ranks import RATE_BY
from .speed import TARGETS


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
    deploy_target: str = option(
        "size", "What the ranks serve: size (the ranks the rate picks: the most parameters for the budget), or "
                "the speed of one runtime (onnxruntime-cpu, pytorch-cpu): the model with the rate's ranks and "
                "with every rank rounded down to multiples of 8 and of 16 (never above the budget) is timed whole "
                "in that runtime, and a rounding is kept where its model is at least 10% faster than the rate's "
                "and the dense one (of 8 and 16, the one keeping more parameters); the report says what each "
                "layer traded.", choices=TARGETS)
    allocate: str = option("uniform", "Ranks: the rate for every layer, or one global budget (needs data).",
                           choices=("uniform", "global"))
    include: list[str] = option([], "Compress only layers matching these globs (or re:REGEX).")
    exclude: list[str] = option([], "Leave layers matching these globs (or re:REGEX) dense.")

    def validate(self) -> None:
        if self.deploy_target != "size" and (self.rate is None or self.ranks is not None
                                             or self.allocate != "uniform" or self.rank_multiple != 1):
            # Each of those already decides the ranks; measuring would silently undo it.
            raise UsageError(f"{opt('deploy_target')} {self.deploy_target} rounds the ranks {opt('rate')} picks: "
                             f"it needs {opt('rate')}, and no {opt('ranks')} file, {opt('allocate')} "
                             f"global or {opt('rank_multiple')}")

    def needs_rate(self) -> None:
        """Factorising needs a rate or ranks (checked by the recipe: --spectral orthogonal needs neither)."""
        if self.rate is None and self.ranks is None:
            raise UsageError(f"give {opt('rate')} (e.g. 0.05) or a {opt('ranks')} file")
