"""Shared fixtures: small checkpoints in every format we accept or refuse, and dataset directories in
the on-disk formats of torchvision (CIFAR, ImageFolder) and MNIST (IDX)."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from tnncompress.data import write_idx
from tnncompress.models import create_model

# CI runs the property tests on a fixed set of examples (the same on every run, and the set verified
# before each submission); developers get fresh random examples every run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Measured plans are not carried between tests (nor into the developer's cache): each test measures, as
# the tests were written for; tests/einsum/test_plan_cache.py turns the cache on where it is the subject.
os.environ["TNNCOMPRESS_PLAN_CACHE"] = "off"

# Under pytest-xdist (`make test` runs one worker per core) each worker computes on one thread: two
# workers with a thread per core each would take turns on the cores (threads.py says why that is slow).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn").eval()


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory, small_model) -> Path:
    d = tmp_path_factory.mktemp("ckpts")
    state = small_model.state_dict()
    torch.save(state, d / "state.pt")
    torch.save({"state_dict": state, "epoch": 3}, d / "wrapped.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, d / "ddp.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "state.safetensors"))
    torch.save(small_model, d / "module.pt")
    with warnings.catch_warnings():  # TorchScript is deprecated, which is why we must refuse it clearly
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(small_model, torch.zeros(1, 1, 28, 28)), d / "scripted.pt")
    raw = (d / "state.pt").read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    st = (d / "state.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "notes.pt").write_text("these are not weights\n")
    torch.save([1, 2, 3], d / "list.pt")
    bad = dict(state)
    bad["conv2.weight"] = torch.zeros(8, 16, 3, 3)
    torch.save(bad, d / "wrong_shape.pt")
    missing = {k: v for k, v in state.items() if not k.startswith("fc2")}
    torch.save(missing, d / "missing_keys.pt")
    return d


def _write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str) -> None:
    entry = {"data": images.reshape(len(images), -1), label_key: labels, "batch_label": "fixture"}
    with open(path, "wb") as fh:
        pickle.dump(entry, fh, protocol=2)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """torchvision's cifar-10-batches-py layout, 8 images per training batch, 12 test images."""
    root = tmp_path_factory.mktemp("cifar10")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write_cifar_batch(d / f"data_batch_{i}", rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8),
                           [int(x) for x in rng.integers(0, 10, 8)], "labels")
    _write_cifar_batch(d / "test_batch", rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8),
                       [i % 10 for i in range(12)], "labels")
    return root


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    d = root / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 20), ("test", 10)):
        _write_cifar_batch(d / name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                           [int(x) for x in rng.integers(0, 100, n)], "fine_labels")
    return root


@pytest.fixture(scope="session")
def imagefolder_dir(tmp_path_factory) -> Path:
    """DIR/val/<class>/*.png with 3 classes of 2 images of different sizes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(2)
    for cls in ("cat", "dog", "fox"):
        (root / "val" / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(((40, 50), (64, 48))):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "val" / cls / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(3)
    for split, n in (("train", 30), ("t10k", 20)):
        write_idx(d / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return d
