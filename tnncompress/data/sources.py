"""The dataset kinds, each registered under its spec name: the MNIST family (IDX files), CIFAR (its
pickled python batches, unpickled admitting numpy arrays only), image folders and synthetic data."""

from __future__ import annotations

import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UsageError, brief
from ..limits import check
from .datasets import ClassificationData, TensorImageDataset
from .idx import IdxError, read_idx
from .specs import DataSpec, register_dataset

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
BUNDLED_FASHION_MNIST = Path(__file__).parent / "bundled" / "fashion-mnist"

# Normalisation constants: the training-set statistics each dataset is conventionally normalised with.
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# --- MNIST family --------------------------------------------------------------------------------------

_IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_idx(directory: Path, stem: str) -> Path | None:
    for sub in (directory, directory / "raw", directory / "FashionMNIST" / "raw", directory / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (sub / name).is_file():
                return sub / name
    return None


def _has_idx(directory: Path, split: str) -> bool:
    return all(_find_idx(directory, stem) for stem in _IDX_NAMES[split])


def _mnist_idx(directory: Path, split: str, stats, source: str) -> ClassificationData:
    img_path, lbl_path = (_find_idx(directory, stem) for stem in _IDX_NAMES[split])
    if img_path is None or lbl_path is None:
        raise DataError(f"{directory}: no {split} split ({' and '.join(_IDX_NAMES[split])}[.gz])")
    try:
        images, labels = read_idx(img_path), read_idx(lbl_path)
    except IdxError as exc:
        raise DataError(str(exc)) from None
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{directory}: images {images.shape} and labels {labels.shape} do not pair up")
    images_t = torch.from_numpy(images.copy()).unsqueeze(1)
    notes = []
    if stats is None:
        # Normalise with the training split's statistics when there is one, so train and test agree.
        ref = images
        if split == "test" and _has_idx(directory, "train"):
            ref = read_idx(_find_idx(directory, _IDX_NAMES["train"][0]))
        ref = ref.astype(np.float64) / 255.0
        stats = ((float(ref.mean()),), (float(ref.std()),))
        notes.append(f"normalised with mean {stats[0][0]:.4f}, std {stats[1][0]:.4f}")
    labels_t = torch.from_numpy(labels.astype(np.int64))
    _check_labels(labels_t, None, lbl_path)
    return ClassificationData(TensorImageDataset(images_t, labels_t, *stats), int(labels_t.max()) + 1,
                              (1, images.shape[1], images.shape[2]), source, notes=notes)


MAX_CLASSES = 1 << 20


def _check_labels(labels: torch.Tensor, classes: int | None, path: Path) -> None:
    """Class indices must be in 0..classes-1 (0..MAX_CLASSES-1 when the dataset does not fix the count)."""
    if not labels.numel():
        raise DataError(f"{path}: no labels")
    low, high = int(labels.min()), int(labels.max())
    bound = classes if classes is not None else MAX_CLASSES
    if low < 0 or high >= bound:
        raise DataError(f"{path}: labels range over {low}..{high}; class indices must lie in 0..{bound - 1}")


def fashion_mnist_dir(split: str = "test") -> tuple[Path, str]:
    """The directory the `fashion-mnist` spec reads for this split, and how to describe it."""
    env = os.environ.get("TNNCOMPRESS_DATA")
    candidates = []
    if env:
        candidates += [(Path(env) / "fashion-mnist", "$TNNCOMPRESS_DATA"), (Path(env), "$TNNCOMPRESS_DATA")]
    candidates += [(SYSTEM_FASHION_MNIST, "system"), (BUNDLED_FASHION_MNIST, "bundled")]
    for directory, origin in candidates:
        if directory.is_dir() and _has_idx(directory, split):
            return directory, origin
    raise DataError("Fashion-MNIST not found: set TNNCOMPRESS_DATA or apt-get install dataset-fashion-mnist")


@register_dataset("fashion-mnist", needs_dir=False,
                  description="$TNNCOMPRESS_DATA, then /usr/share/datasets/fashion-mnist, then the bundled subset")
def fashion_mnist(spec: DataSpec, split: str, input_size=None, num_classes=None) -> ClassificationData:
    directory, origin = fashion_mnist_dir(split)
    data = _mnist_idx(directory, split, FASHION_MNIST_STATS, f"fashion-mnist ({origin}: {directory})")
    if origin == "bundled" and split == "train":
        data.notes.append("bundled subset of the training set (10k of 60k images)")
    return data


# --- CIFAR ---------------------------------------------------------------------------------------------

class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles. Load them allowing only numpy arrays and plain containers,
    so a malicious file in a dataset directory cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _load_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            entry = _ArraysOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            MemoryError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {brief(str(exc), 160)})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: not a CIFAR batch (holds a {type(entry).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


@register_dataset("mnist-idx", needs_dir=True, description="MNIST-family IDX files in DIR or DIR/raw")
def mnist_idx(spec: DataSpec, split: str, input_size=None, num_classes=None) -> ClassificationData:
    return _mnist_idx(spec.path, split, stats=None, source=f"mnist-idx:{spec.path}")


@register_dataset("cifar10", needs_dir=True, description="torchvision's on-disk CIFAR-10 (cifar-10-batches-py)")
def cifar10(spec: DataSpec, split: str, input_size=None, num_classes=None) -> ClassificationData:
    return _cifar("cifar10", spec.path, split)


@register_dataset("cifar100", needs_dir=True, description="torchvision's on-disk CIFAR-100 (cifar-100-python)")
def cifar100(spec: DataSpec, split: str, input_size=None, num_classes=None) -> ClassificationData:
    return _cifar("cifar100", spec.path, split)


def _cifar(kind: str, root: Path, split: str) -> ClassificationData:
    base = "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"
    directory = root / base if (root / base).is_dir() else root
    if kind == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, classes, stats = "labels", 10, CIFAR10_STATS
    else:
        files = ["train"] if split == "train" else ["test"]
        label_key, classes, stats = "fine_labels", 100, CIFAR100_STATS
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)} (expected torchvision's {base} layout)")
    data, labels = [], []
    for f in files:
        entry = _load_cifar_batch(directory / f)
        if "data" not in entry or label_key not in entry:
            raise DataError(f"{directory / f}: no 'data'/'{label_key}' entries")
        try:
            batch = np.asarray(entry["data"], dtype=np.uint8)
            if batch.ndim != 2 or batch.shape[1] != 3 * 32 * 32:
                raise ValueError(f"data of shape {batch.shape}, expected [N, 3072]")
            batch_labels = np.asarray(entry[label_key], dtype=np.int64)
            if batch_labels.shape != (batch.shape[0],):
                raise ValueError(f"{batch.shape[0]} images but labels of shape {batch_labels.shape}")
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataError(f"{directory / f}: not a CIFAR batch ({brief(str(exc), 160)})") from None
        _check_labels(torch.from_numpy(batch_labels), classes, directory / f)
        data.append(batch.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    images = torch.from_numpy(np.concatenate(data))
    labels_t = torch.from_numpy(np.concatenate(labels))
    return ClassificationData(TensorImageDataset(images, labels_t, *stats), classes, (3, 32, 32),
                              f"{kind}:{directory}")


# --- image folders -------------------------------------------------------------------------------------

@register_dataset("imagefolder", needs_dir=True,
                  description="class-per-folder images (DIR/train, DIR/val when present), ImageNet transforms; "
                              "?size=N, else the model's input size")
def imagefolder(spec: DataSpec, split: str, input_size=None, num_classes=None) -> ClassificationData:
    size = spec.options.get("size") or (input_size[1] if input_size else 224)
    return _imagefolder(spec.path, split, size)


def _imagefolder(root: Path, split: str, size: int) -> ClassificationData:
    from torchvision import datasets, transforms

    names = ("train",) if split == "train" else ("val", "test", "validation")
    directory = next((root / n for n in names if (root / n).is_dir()), root)
    transform = transforms.Compose([
        transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(*IMAGENET_STATS)])
    try:
        dataset = datasets.ImageFolder(str(directory), transform=transform, loader=read_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{directory}: not an image folder ({exc})") from None
    return ClassificationData(dataset, len(dataset.classes), (3, size, size), f"imagefolder:{directory}",
                              notes=[f"resize {round(size / 0.875)}, center crop {size}, ImageNet normalisation"])


def read_image(path: str):
    """One RGB image of an image folder; a corrupt or oversized file is a DataError that names it.
    The pixel count is read from the header and checked before the image is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # our limit below is the one that applies
            with Image.open(path) as image:
                width, height = image.size
                check("image_pixels", width * height, f"image {path} ({width} x {height}): pixels")
                return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {brief(str(exc), 120)})") from None


# --- synthetic -----------------------------------------------------------------------------------------

@register_dataset("synthetic", needs_dir=False,
                  description="random inputs of the model's input shape (?n=N samples): not accuracies")
def synthetic(spec: DataSpec, split: str, input_size=None, num_classes=None) -> ClassificationData:
    if input_size is None or num_classes is None:
        raise UsageError("synthetic data needs the model's input size and number of classes")
    n = spec.options.get("n", 256)
    check("dataset_bytes", n * math.prod(input_size), f"synthetic?n={n} at input size {tuple(input_size)}: bytes")
    g = torch.Generator().manual_seed(0 if split == "test" else 1)
    images = torch.randint(0, 256, (n, *input_size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    ds = TensorImageDataset(images, labels, (0.5,) * input_size[0], (0.25,) * input_size[0])
    return ClassificationData(ds, num_classes, tuple(input_size), "synthetic", synthetic=True,
                              notes=["random inputs and labels: figures are not accuracies"])
