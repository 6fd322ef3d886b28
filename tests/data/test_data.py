"""Dataset specs: parsing, each loader on a fixture in its real on-disk format, and batch iteration."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tnncompress.data import iterate_batches, load_data, parse_spec
from tnncompress.data import sources as sources_mod
from tnncompress.data.idx import IdxError, read_idx, write_idx
from tnncompress.errors import DataError, UsageError


def test_parse_spec_forms(tmp_path):
    assert parse_spec("fashion-mnist").kind == "fashion-mnist"
    s = parse_spec(f"imagefolder:{tmp_path}?size=160")
    assert (s.kind, s.path, s.options) == ("imagefolder", tmp_path, {"size": 160})
    assert parse_spec("synthetic?n=16").options == {"n": 16}


@pytest.mark.parametrize("text, message", [
    ("imagenet", "data 'imagenet': unknown dataset"),
    ("cifar10", "needs a directory"),
    ("cifar10:/no/such/dir", "not found"),
    ("fashion-mnist:/tmp", "takes no directory"),
    ("synthetic?n=abc", "needs an integer"),
    ("synthetic?n=0", "must be positive"),
    ("synthetic?colour=red", "not understood"),
])
def test_parse_spec_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_spec(text)


def test_idx_roundtrip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "a", a, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a) and np.array_equal(read_idx(tmp_path / "a"), a)
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(IdxError, match="promises 24 data bytes, file holds 21"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"hello world")
    with pytest.raises(IdxError, match="bad magic"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_search_order(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("TNNCOMPRESS_DATA", str(mnist_dir))
    data = load_data("fashion-mnist", "test")
    assert "$TNNCOMPRESS_DATA" in data.source and len(data) == 20
    monkeypatch.delenv("TNNCOMPRESS_DATA")
    monkeypatch.setattr(sources_mod, "SYSTEM_FASHION_MNIST", tmp_path / "absent")
    bundled = load_data("fashion-mnist", "train")
    assert bundled.source.startswith("fashion-mnist (bundled")
    assert len(bundled) == 10_000 and any("10k of 60k" in n for n in bundled.notes)
    assert torch.bincount(bundled.dataset.labels).tolist() == [1000] * 10
    test = load_data("fashion-mnist", "test")
    assert len(test) == 10_000 and test.input_size == (1, 28, 28) and test.num_classes == 10


def test_bundled_test_set_is_the_official_one():
    # The bundled test split must be byte-identical to the official test set it was copied from.
    test = sources_mod._mnist_idx(sources_mod.BUNDLED_FASHION_MNIST, "test", sources_mod.FASHION_MNIST_STATS, "b")
    x, y = test.dataset[0]
    assert x.shape == (1, 28, 28) and int(y) == 9  # the first official test image is an ankle boot


def test_mnist_idx(mnist_dir):
    train = load_data(f"mnist-idx:{mnist_dir}", "train")
    test = load_data(f"mnist-idx:{mnist_dir}", "test")
    assert (len(train), len(test), test.num_classes) == (30, 20, 10)
    # normalised with the training split's statistics, on both splits
    ref = read_idx(mnist_dir / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    assert float(test.dataset.mean.flatten()[0]) == pytest.approx(ref.mean(), rel=1e-6)
    x, _ = next(iterate_batches(train, 30))
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5) and float(x.std()) == pytest.approx(1.0, abs=1e-2)


def test_mnist_idx_missing_split(tmp_path, mnist_dir):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="no test split"):
        load_data(f"mnist-idx:{tmp_path}", "test")


def test_cifar10(cifar10_dir):
    train = load_data(f"cifar10:{cifar10_dir}", "train")
    test = load_data(f"cifar10:{cifar10_dir}", "test")
    assert (len(train), len(test), test.num_classes, test.input_size) == (40, 12, 10, (3, 32, 32))
    raw = pickle.load(open(cifar10_dir / "cifar-10-batches-py" / "test_batch", "rb"), encoding="latin1")
    img, label = test.dataset[5]
    pixels = torch.from_numpy(raw["data"][5].reshape(3, 32, 32)).float() / 255
    expected = (pixels - test.dataset.mean) / test.dataset.std
    assert torch.allclose(img, expected) and int(label) == 5
    # the batches directory itself is accepted too
    assert len(load_data(f"cifar10:{cifar10_dir / 'cifar-10-batches-py'}", "test")) == 12


def test_cifar100(cifar100_dir):
    test = load_data(f"cifar100:{cifar100_dir}", "test")
    assert len(test) == 10 and test.num_classes == 100


def test_cifar_refuses_code_in_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    pickle.dump({"data": Evil(), "labels": [1]}, open(d / "test_batch", "wb"))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_data(f"cifar10:{tmp_path}", "test")


def test_cifar_missing_files(tmp_path):
    with pytest.raises(DataError, match="missing test_batch"):
        load_data(f"cifar10:{tmp_path}", "test")


def test_imagefolder(imagefolder_dir):
    data = load_data(f"imagefolder:{imagefolder_dir}?size=32", "test")
    assert (len(data), data.num_classes, data.input_size) == (6, 3, (3, 32, 32))
    images, labels = next(iterate_batches(data, 6))
    assert images.shape == (6, 3, 32, 32) and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    # the size follows the model's input size when the spec gives none
    assert load_data(f"imagefolder:{imagefolder_dir}", "test", input_size=(3, 48, 48)).input_size == (3, 48, 48)


def test_synthetic():
    data = load_data("synthetic?n=10", "test", input_size=(3, 8, 8), num_classes=4)
    assert data.synthetic and len(data) == 10 and data.num_classes == 4
    assert "not accuracies" in data.notes[0]
    with pytest.raises(UsageError, match="input size"):
        load_data("synthetic", "test")


def test_iterate_batches_shuffle_and_limit(mnist_dir):
    data = load_data(f"mnist-idx:{mnist_dir}", "train")
    seen = torch.cat([y for _, y in iterate_batches(data, 7, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted(data.dataset.labels.tolist())
    assert sum(len(y) for _, y in iterate_batches(data, 4, limit=10)) == 10
