"""`tnncompress spectrum`: every layer's singular values as an operator, and the network's Lipschitz bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from tnncompress.errors import UsageError, brief
from tnncompress.io import write_text
from tnncompress.progress import progress_bar
from tnncompress.spectral import SPECTRAL_LAYERS, model_spectrum
from tnncompress.spectral.plot import spectrum_svg

from .common import (
    ArchOpt,
    DebugOpt,
    InputSizeOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    TrustOpt,
    VerboseOpt,
    handle_errors,
    load_model_or_output,
    log,
    out,
    start,
)

EXAMPLES = """Examples:

  tnncompress spectrum tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors

  tnncompress spectrum out/ --top 10 --plot spectrum.svg      # a run's output: compressed layers by their core

  tnncompress spectrum resnet50.pt --arch torchvision:resnet50 --input-size 3,224,224 --json
"""

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@handle_errors
def spectrum(
    checkpoint: Annotated[str, typer.Argument(help="A .pt/.pth state dict, a .safetensors file, or the output "
                                                   "directory of `tnncompress run`.", metavar="CHECKPOINT|OUTPUT_DIR")],
    arch: ArchOpt = None,
    input_size: InputSizeOpt = None,
    top: Annotated[int, typer.Option(min=0, help="Singular values listed per layer (largest first; all in "
                                                 "--json with --top 0).")] = 5,
    plot: Annotated[Path | None, typer.Option(help="Write an SVG chart of every layer's spectrum to FILE.",
                                              metavar="FILE")] = None,
    dtype: Annotated[str, typer.Option(help="Precision of the SVDs: float64 (exact to ~1e-12) or float32 "
                                            "(faster, ~1e-6).")] = "float64",
    power_iters: Annotated[int, typer.Option(min=1, help="Power iterations for the lower bound of zero-padded "
                                                         "layers.")] = 50,
    network: Annotated[bool, typer.Option("--network/--no-network", help="Also bound the network's Lipschitz "
                                          "constant (upper: product over the layers; lower: measured).")] = True,
    trust_checkpoint: TrustOpt = False,
    json: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = 0, debug: DebugOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Exact singular values of every conv and linear layer as an operator on the input size.

    Circular convolutions and linear layers are exact (FFT per frequency, strides by the polyphase split);
    zero padding gets a certified upper bound (the circular operator on a grid n + 2p) and a power-iteration
    lower bound. Compressed layers with frame factors (svd, tk, tt, cp, mtk) use their small core."""
    session = start(json, quiet, verbose, debug, seed)
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {brief(dtype)}: use float64 or float32")
    if plot is not None and plot.suffix.lower() != ".svg":
        raise UsageError(f"--plot {brief(str(plot))}: the chart is SVG; name the file *.svg")
    model, size, what = load_model_or_output(checkpoint, arch, trust_checkpoint, input_size)
    log.info("input size %s", ",".join(map(str, size)))
    total = sum(isinstance(m, SPECTRAL_LAYERS) for m in model.modules())
    with progress_bar("singular values", total) as advance:
        result = model_spectrum(model, size, dtype=DTYPES[dtype], power_iters=power_iters, network=network,
                                seed=seed, progress=lambda _name: advance(1))
    if plot is not None:
        svg = spectrum_svg(result.layers, f"singular values at input {'x'.join(map(str, size))}")
        write_text(plot, svg)
    payload = {"model": what, **result.to_dict(top or None), "plot": str(plot) if plot else None}

    def render() -> None:
        table = Table(title=f"singular values at input {'x'.join(map(str, size))}")
        for col in ("layer", "path", "grid", "sigma_max", "lower", "with BN", "sigma_min", f"top {top}", "s"):
            table.add_column(col, justify="left" if col in ("layer", "path", f"top {top}") else "right")
        for s in result.layers:
            table.add_row(s.name, f"{s.path}/{s.method}", "x".join(map(str, s.grid)),
                          f"{s.sigma_max:.4g}" + ("" if s.exact else " (upper)"),
                          "exact" if s.exact else f"{s.lower:.4g}",
                          f"{result.folded[s.name]:.4g}" if s.name in result.folded else "-",
                          f"{float(s.values[-1]):.3g}", " ".join(f"{float(v):.3g}" for v in s.values[:top]),
                          f"{s.seconds:.2f}")
        out.print(table)
        net = result.network
        if net is not None:
            upper = f"{net.upper:.4g}" if net.upper is not None else f"unavailable ({net.reason})"
            out.print(f"network Lipschitz constant (L2): upper bound {upper}; measured lower bound "
                      f"{net.lower:.4g} over {net.pairs} pairs", highlight=False)
        if plot is not None:
            out.print(f"chart: {plot}", highlight=False)

    session.result(payload, render)
