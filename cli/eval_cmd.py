"""`tnncompress eval`: accuracy, NLL and calibration of a checkpoint on a dataset."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tnncompress.data import SPLITS, load_data, parse_spec
from tnncompress.env import resolve_device
from tnncompress.errors import UsageError, brief
from tnncompress.evaluate import evaluate as run_evaluation
from tnncompress.evaluate import output_classes
from tnncompress.io import load_model
from tnncompress.pipeline import OPTIONS

from .common import (
    ArchOpt,
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    InputSizeOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    TrustOpt,
    VerboseOpt,
    handle_errors,
    log,
    out,
    start,
)

EXAMPLES = """Examples:

  tnncompress eval resnet32.safetensors --data fashion-mnist

  tnncompress eval model.pt --arch torchvision:resnet18 --data imagefolder:/data/imagenet?size=224 --json

  tnncompress eval model.pt --data synthetic   # smoke test without data: not an accuracy
"""

DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset spec: fashion-mnist, mnist-idx:DIR, cifar10:DIR, "
                                      "cifar100:DIR, imagefolder:DIR[?size=N], synthetic[?n=N].")]


@handle_errors
def evaluate(
    checkpoint: Annotated[str, typer.Argument(help="A .pt/.pth state dict or .safetensors.", metavar="CHECKPOINT")],
    data: DataOpt = "fashion-mnist",
    split: Annotated[str, typer.Option(help="Which split to evaluate: test or train.")] = "test",
    batch_size: BatchSizeOpt = 256,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate on the first N samples only.")] = None,
    device: DeviceOpt = "auto",
    arch: ArchOpt = None,
    input_size: InputSizeOpt = None,
    trust_checkpoint: TrustOpt = False,
    json: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = 0, debug: DebugOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Evaluate a checkpoint: top-1, top-5, negative log-likelihood and expected calibration error."""
    session = start(json, quiet, verbose, debug, seed)
    spec = parse_spec(data)  # validate every option before the (slow) model load
    dev = resolve_device(device)
    OPTIONS.lookup("batch_size").check(batch_size)
    if split not in SPLITS:
        raise UsageError(f"--split {brief(split)}: use one of {', '.join(SPLITS)}")
    loaded = load_model(checkpoint, arch=arch, trust=trust_checkpoint, input_size=input_size)
    log.info("architecture %s (%s)", loaded.arch, loaded.arch_how)
    classes = output_classes(loaded.model, loaded.input_size) if spec.kind == "synthetic" else None
    dataset = load_data(spec, split, input_size=loaded.input_size, num_classes=classes)
    log.info("data: %s, %d samples", dataset.source, len(dataset))
    metrics = run_evaluation(loaded.model, dataset, batch_size=batch_size, device=dev, limit=limit)
    payload = {"model": loaded.describe(), "data": dataset.describe(), "split": split, "metrics": metrics}

    def render() -> None:
        title = Text("evaluation")
        if dataset.synthetic:
            title.append(" (synthetic data: not accuracies)", style="bold red")
        table = Table(title=title)
        for col in ("samples", "top-1", "top-5", "NLL", "ECE"):
            table.add_column(col, justify="right")
        table.add_row(str(metrics.samples), f"{100 * metrics.top1:.2f}%", f"{100 * metrics.top5:.2f}%",
                      f"{metrics.nll:.4f}", f"{metrics.ece:.4f}")
        out.print(table)

    session.result(payload, render)

