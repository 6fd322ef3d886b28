"""Dataset specs: the strings every command's `--data` takes, and the registry of dataset kinds.

    fashion-mnist        $TNNCOMPRESS_DATA, then /usr/share/datasets/fashion-mnist, then the bundled subset
    mnist-idx:DIR        MNIST-family IDX files (train-images-idx3-ubyte[.gz], ...) in DIR or DIR/raw
    cifar10:DIR          torchvision's on-disk CIFAR-10 (cifar-10-batches-py), never downloaded
    cifar100:DIR         torchvision's on-disk CIFAR-100 (cifar-100-python)
    imagefolder:DIR      class-per-folder images; DIR/{train,val} when present. ImageNet evaluation
                         transforms; image size from `?size=N`, else the model's input size, else 224
    synthetic            random inputs of the model's input shape (`?n=N` samples): no accuracy meaning

Options follow the spec after `?`, e.g. `imagefolder:/data/imagenet?size=160`, `synthetic?n=64`.
A kind is one function registered with `register_dataset` (see sources.py), as formats and models are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError, brief, opt
from ..limits import check
from ..registry import Registry
from .datasets import ClassificationData

SPLITS = ("train", "test")
QUERY_OPTIONS = ("size", "n")

Loader = Callable[["DataSpec", str, "tuple[int, int, int] | None", "int | None"], ClassificationData]


@dataclass(frozen=True)
class DatasetKind:
    name: str
    needs_dir: bool
    load: Loader  # (spec, split, the model's input size, its number of classes) -> the split
    description: str


DATASETS: Registry[DatasetKind] = Registry("dataset kind")


def register_dataset(name: str, needs_dir: bool, description: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        DATASETS.add(name, DatasetKind(name, needs_dir, fn, description))
        return fn

    return wrap


def list_datasets() -> list[DatasetKind]:
    return DATASETS.entries()


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: Path | None = None
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        text = self.kind + (f":{self.path}" if self.path else "")
        if self.options:
            text += "?" + "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return text


def _query(text: str) -> dict[str, int]:
    options: dict[str, int] = {}
    for item in filter(None, text.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in QUERY_OPTIONS:
            raise UsageError(f"data spec option {brief(item)} not understood (known: size=N, n=N)", )
        try:
            options[key] = int(value)
        except ValueError:
            raise UsageError(f"data spec option {key} needs an integer, got {brief(value)}") from None
        if options[key] <= 0:
            raise UsageError(f"data spec option {key} must be positive, got {value}")
    if "size" in options:
        check("input_elements", 3 * options["size"] ** 2, f"data spec option size={options['size']}: 3 x size x size")
    return options


def parse_spec(text: str) -> DataSpec:
    """Parse a data spec string; raises UsageError naming what is wrong."""
    text = text.strip()
    options: dict[str, int] = {}
    if "?" in text:
        text, query = text.rsplit("?", 1)
        options = _query(query)
    name, _, path = text.partition(":")
    if name not in DATASETS:
        raise UsageError(f"{opt('data')} {brief(name)}: unknown dataset{DATASETS.suggest(name)} (known: "
                         f"{DATASETS.listed(lambda n, k: n + (':DIR' if k.needs_dir else ''))})")
    kind = DATASETS.get(name)
    if kind.needs_dir:
        if not path:
            raise UsageError(f"dataset {name} needs a directory: {name}:DIR")
        p = Path(path).expanduser()
        if not p.is_dir():
            raise UsageError(f"dataset directory not found: {p}")
        return DataSpec(name, p, options)
    if path:
        raise UsageError(f"dataset {name} takes no directory (got {brief(text)})")
    return DataSpec(name, None, options)


def load_data(spec: DataSpec | str, split: str = "test", input_size: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> ClassificationData:
    """Load one split. `input_size`/`num_classes` describe the model (needed by `synthetic`)."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {brief(split)}")
    return DATASETS.get(spec.kind).load(spec, split, input_size, num_classes)
