"""Every checkpoint loader path: accepted formats, refused pickles, TorchScript, broken files."""

from __future__ import annotations

import os

import pytest
import torch

from tnncompress.errors import CheckpointError, UntrustedCheckpointError, UsageError
from tnncompress.io import load_model, read_checkpoint, save_state_dict


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_state_dict_pt(ckpt_dir, small_model):
    ck = read_checkpoint(ckpt_dir / "state.pt")
    assert ck.kind == "state_dict" and _same(ck.state_dict, small_model.state_dict())
    assert len(ck.sha256) == 64


def test_safetensors(ckpt_dir, small_model):
    ck = read_checkpoint(ckpt_dir / "state.safetensors")
    assert ck.kind == "safetensors" and _same(ck.state_dict, small_model.state_dict())


def test_wrapped_and_ddp_prefix(ckpt_dir, small_model):
    wrapped = read_checkpoint(ckpt_dir / "wrapped.pth")
    assert _same(wrapped.state_dict, small_model.state_dict())
    assert any("'state_dict'" in n for n in wrapped.notes)
    ddp = read_checkpoint(ckpt_dir / "ddp.pt")
    assert _same(ddp.state_dict, small_model.state_dict())
    assert any("module." in n for n in ddp.notes)


def test_pickled_module_refused_without_trust(ckpt_dir):
    with pytest.raises(UntrustedCheckpointError, match="pass trust_checkpoint"):
        read_checkpoint(ckpt_dir / "module.pt")


def test_pickled_module_with_trust(ckpt_dir, small_model):
    loaded = load_model(ckpt_dir / "module.pt", trust=True)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded.model(x), small_model(x))
    assert loaded.arch == "pickled SmallCNN"


def test_torchscript_refused_by_name(ckpt_dir):
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_checkpoint(ckpt_dir / "scripted.pt")


@pytest.mark.parametrize("name, message", [
    ("truncated.pt", "truncated or corrupt"),
    ("truncated.safetensors", "truncated or corrupt safetensors"),
    ("empty.pt", "empty file"),
    ("notes.pt", "found a text file"),
    ("list.pt", "found list"),
])
def test_broken_files(ckpt_dir, name, message):
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(ckpt_dir / name)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UsageError, match="directory"):
        read_checkpoint(tmp_path)


def test_save_is_atomic_and_roundtrips(tmp_path, small_model):
    path = tmp_path / "m.safetensors"
    save_state_dict(small_model.state_dict(), path, metadata={"arch": "tnncompress:small_cnn"})
    ck = read_checkpoint(path)
    assert ck.metadata["arch"] == "tnncompress:small_cnn"
    assert _same(ck.state_dict, small_model.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_failed_save_keeps_old_file(tmp_path, small_model):
    path = tmp_path / "m.safetensors"
    save_state_dict(small_model.state_dict(), path)
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        save_state_dict({"x": object()}, path)  # not a tensor: fails while writing
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
