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
from tnncompress.evaluate.robust import robust_accuracy
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
    load_model_or_output,
    log,
    out,
    start,
)

EXAMPLES = """Examples:

  tnncompress eval resnet32.safetensors --data fashion-mnist

  tnncompress eval model.pt --arch torchvision:resnet18 --data imagefolder:/data/imagenet?size=224 --json

  tnncompress eval model.pt --data synthetic   # smoke test without data: not an accuracy

  tnncompress eval resnet32-tk/ --data fashion-mnist --noise 0.1,0.2 --fgsm 0.01,0.03   # a run's output

--noise S adds Gaussian noise of standard deviation S, --fgsm E one fast-gradient-sign step of size E;
both in pixel units (images in [0, 1], the result clipped to [0, 1]) when the dataset's normalisation is
known, else in the model's input units (the output says which).
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
    noise: Annotated[list[str] | None, typer.Option(help="Also the top-1 under Gaussian input noise of these "
                                                    "standard deviations (repeat, or 0.1,0.2).")] = None,
    fgsm: Annotated[list[str] | None, typer.Option(help="Also the top-1 under an FGSM attack of these sizes "
                                                   "(repeat, or 0.01,0.03).")] = None,
) -> None:
    """Evaluate a checkpoint or a run's output directory: top-1, top-5, negative log-likelihood and expected
    calibration error, and the top-1 under input noise or an FGSM attack."""
    session = start(json, quiet, verbose, debug, seed)
    spec = parse_spec(data)  # validate every option before the (slow) model load
    dev = resolve_device(device)
    OPTIONS.lookup("batch_size").check(batch_size)
    if split not in SPLITS:
        raise UsageError(f"--split {brief(split)}: use one of {', '.join(SPLITS)}")
    attacks = [(name, s) for name, given in (("noise", noise), ("fgsm", fgsm)) for s in _strengths(name, given)]
    model, size, what = load_model_or_output(checkpoint, arch, trust_checkpoint, input_size, form="fast")
    log.info("model: %s", what)
    classes = output_classes(model, size) if spec.kind == "synthetic" else None
    dataset = load_data(spec, split, input_size=size, num_classes=classes)
    log.info("data: %s, %d samples", dataset.source, len(dataset))
    metrics = run_evaluation(model, dataset, batch_size=batch_size, device=dev, limit=limit)
    robust = [robust_accuracy(model, dataset, name, s, batch_size=batch_size, device=dev, limit=limit, seed=seed)
              for name, s in attacks]
    payload = {"model": what, "data": dataset.describe(), "split": split, "metrics": metrics, "robustness": robust}

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
        if robust:
            perturbed = Table(title=f"top-1 under perturbations (strengths in {robust[0].units} units)")
            for col in ("attack", "strength", "top-1"):
                perturbed.add_column(col, justify="right")
            for r in robust:
                perturbed.add_row(r.attack, f"{r.strength:g}", f"{100 * r.top1:.2f}%")
            out.print(perturbed)

    session.result(payload, render)


def _strengths(name: str, given: list[str] | None) -> list[float]:
    """--noise / --fgsm values: repeated or comma-separated non-negative numbers."""
    values = []
    for text in (t for item in given or [] for t in item.split(",")):
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"--{name} {brief(text)}: expected a number") from None
        if not value >= 0 or value == float("inf"):
            raise UsageError(f"--{name} must be a non-negative number, got {brief(text)}")
        values.append(value)
    return values
