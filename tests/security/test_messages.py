"""Messages print user text as it is, name the file at fault, and come before the work (issue 10,
items 9 and 10)."""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from tnncompress.data import iterate_batches, load_data, write_idx
from tnncompress.errors import DataError

from .conftest import FAST, SMALL_CNN, invoke

KD = ["-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--kd", "e2e", "--kd-steps", "8", "--set", "kd_plan=optimal",
      "--eval-limit", "100", "--kd-eval-limit", "100", "--set", "kd_checkpoint_every=4"]


def test_brackets_in_paths_are_printed_not_parsed_as_markup(tmp_path):
    out = tmp_path / "o[/x]"
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", out, "--no-latency", "--deploy-form", "flops")
    assert result.exit_code == 0, result.output
    assert f"written to {out}/" in result.output and (out / "report.json").is_file()
    result = invoke("eval", tmp_path / "[bold]missing.pt")
    assert result.exit_code == 2 and "[bold]missing.pt" in result.output


def test_a_symlink_loop_is_called_a_loop(tmp_path):
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    result = invoke("eval", loop)
    assert result.exit_code == 2 and "symbolic link loop" in result.output


def test_corrupt_images_are_named(tmp_path, imagefolder_dir):
    root = tmp_path / "images"
    shutil.copytree(imagefolder_dir, root)
    broken = root / "val" / "dog" / "1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = load_data(f"imagefolder:{root}", "test", input_size=(3, 32, 32))
    for workers in (0, 1):
        with pytest.raises(DataError) as caught:
            list(iterate_batches(data, 2, num_workers=workers))
        assert str(caught.value).startswith(f"{broken}: unreadable image"), str(caught.value)
        assert "\n" not in str(caught.value)


def test_idx_labels_outside_the_classes_are_named(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), dtype=np.uint8))
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 0x09, 1, 0, 0, 0, 3]) + np.array([1, -2, 3], dtype=np.int8).tobytes())
    with pytest.raises(DataError, match=f"{labels}: labels range over -2..3"):
        load_data(f"mnist-idx:{tmp_path}", "test")


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "message"), [
    ({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}, "data of shape (4, 100)"),
    ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 10]}, "labels range over 0..10"),
    ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0]}, "2 images but labels of shape (1,)"),
    (["not", "a", "dict"], "holds a list"),
])
def test_malformed_cifar_batches_are_named(tmp_path, entry, message):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    with open(d / "test_batch", "wb") as fh:
        pickle.dump(entry, fh, protocol=2)
    with pytest.raises(DataError) as caught:
        load_data(f"cifar10:{tmp_path}", "test")
    assert str(caught.value).startswith(str(d / "test_batch")) and message in str(caught.value)


def test_a_binary_recipe_is_a_usage_error(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(bytes(range(256)))
    result = invoke("run", "--recipe", recipe)
    assert result.exit_code == 2 and "not a text file" in result.output


@pytest.mark.slow
def test_resume_accepts_the_same_output_named_another_way(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipeline = importlib.import_module("tnncompress.export.stage")
    real = pipeline.write_compressed

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "write_compressed", stop)
    result = invoke("run", SMALL_CNN, *KD, *FAST, "--out", "rel")
    assert result.exit_code == 130 and (tmp_path / ".rel.partial" / "checkpoints").is_dir()
    monkeypatch.setattr(pipeline, "write_compressed", real)
    result = invoke("run", SMALL_CNN, *KD, *FAST, "--out", tmp_path / "rel", "--resume")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rel" / "report.json").is_file()


@pytest.mark.slow
def test_a_pickled_distillation_checkpoint_is_refused_in_one_line(tmp_path):
    kept = tmp_path / ".out.partial" / "checkpoints"
    kept.mkdir(parents=True)
    torch.save({"version": 1, "student": torch.nn.Linear(2, 2)}, kept / "distill.pt")  # a pickled module inside
    result = invoke("run", SMALL_CNN, *KD, *FAST, "--out", tmp_path / "out", "--resume")
    assert result.exit_code == 1, result.output
    assert "not a readable distillation checkpoint" in result.output and "--force" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unwritable_output_is_refused_before_the_work(tmp_path):
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", "/proc/tnncompress-out", "-d",
                    "fashion-mnist", "--no-latency")
    assert result.exit_code == 2 and "cannot write next to the output directory" in result.output
    assert "architecture" not in result.output  # refused before the checkpoint was even loaded


def test_too_little_free_space_is_refused_before_the_work(tmp_path, monkeypatch):
    staging = importlib.import_module("tnncompress.pipeline.staging")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10, 10, 1 << 20))
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", tmp_path / "o", *FAST)
    assert result.exit_code == 2 and "MiB free" in result.output
    assert not list(tmp_path.iterdir())


def test_running_out_of_space_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    pipeline = importlib.import_module("tnncompress.export.stage")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "o" / "model.onnx"))

    monkeypatch.setattr(pipeline, "write_compressed", full)
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", tmp_path / "o", *FAST)
    assert result.exit_code == 1 and "No space left on device" in result.output and "unexpected" not in result.output
    assert not list(tmp_path.iterdir())
