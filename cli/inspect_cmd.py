"""`tnncompress inspect`: the layer table of a checkpoint, with what can be compressed and why not."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tnncompress.inspect import layer_table, summarise
from tnncompress.io import load_model
from tnncompress.schema import to_data

from .common import (
    ArchOpt,
    DebugOpt,
    InputSizeOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    TrustOpt,
    VerboseOpt,
    err,
    handle_errors,
    labelled,
    log,
    out,
    start,
)

EXAMPLES = """Examples:

  tnncompress inspect resnet32.safetensors

  tnncompress inspect resnet18.pt --arch torchvision:resnet18 --input-size 3,160,160 --json
"""


def _fmt(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _hyper(r) -> str:
    if r.stride is None:
        return "-"
    def one(v) -> str:
        return v if isinstance(v, str) else (str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v)))

    return f"{one(r.stride)}/{one(r.padding)}/{one(r.dilation)}"


@handle_errors
def inspect(
    checkpoint: Annotated[str, typer.Argument(help="A .pt/.pth state dict or .safetensors.", metavar="CHECKPOINT")],
    arch: ArchOpt = None,
    input_size: InputSizeOpt = None,
    keep_first_last: Annotated[bool, typer.Option(
        "--keep-first-last/--all-layers", help="Keep the first conv and last linear layer uncompressed.")] = True,
    trust_checkpoint: TrustOpt = False,
    json: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = 0, debug: DebugOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """List the conv and linear layers: shapes, hyper-parameters, parameters, FLOPs, compressibility."""
    session = start(json, quiet, verbose, debug, seed)
    # inspect only looks at the layers, so non-finite weights are listed, not refused
    loaded = load_model(checkpoint, arch=arch, trust=trust_checkpoint, input_size=input_size, allow_nonfinite=True)
    for note in loaded.checkpoint.notes:
        if "not finite" in note:
            err.print(labelled("warning:", "bold yellow", note), highlight=False)
    log.info("architecture %s (%s); input size %s", loaded.arch, loaded.arch_how, ",".join(map(str, loaded.input_size)))
    rows = layer_table(loaded.model, loaded.input_size, keep_first_last=keep_first_last)
    totals = summarise(loaded.model, rows)
    payload = {"model": to_data(loaded.describe()), "layers": [r.to_dict() for r in rows], "totals": totals,
               "flops_note": "FLOPs per sample at the input size; one multiply-accumulate = 2 FLOPs"}

    def render() -> None:
        table = Table(title=f"{loaded.arch} at input {'x'.join(map(str, loaded.input_size))}")
        for col in ("layer", "type", "kernel", "stride/pad/dil", "groups", "params", "FLOPs", "compressible"):
            table.add_column(col, justify="right" if col in ("params", "FLOPs", "groups") else "left")
        for r in rows:
            table.add_row(r.name, r.kind, "x".join(map(str, r.kernel)), _hyper(r), str(r.groups),
                          _fmt(r.params), _fmt(r.flops),
                          Text("yes", style="green") if r.compressible
                          else Text.assemble(("no", "yellow"), f": {r.reason}"))
        out.print(table)
        out.print(f"parameters: {totals['params_total']:,} in all, {totals['params_compressible']:,} in "
                  f"{totals['layers_compressible']} compressible layers of {totals['layers']}; "
                  f"FLOPs per sample: {_fmt(totals['flops_total'])} "
                  f"({_fmt(totals['flops_compressible'])} compressible)", highlight=False)

    session.result(payload, render)
