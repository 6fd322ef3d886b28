"""Files we present as safe must not run code (issue 10, items 1 and 2)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tnncompress
from tnncompress.errors import CheckpointError, UntrustedCheckpointError

from .conftest import SMALL_CNN, invoke, tampered


@pytest.mark.slow
def test_load_refuses_a_structure_that_names_code(output_dir, tmp_path, marker_module):
    copy = tampered(output_dir, tmp_path, arch="tnn_marker:make", arch_kwargs={"command": "touch PWNED"})
    with pytest.raises(UntrustedCheckpointError, match="trust_code=True"):
        tnncompress.load(copy)
    assert not marker_module.exists()
    # the user may allow it explicitly (a run with their own --arch records module:factory)
    copy = tampered(output_dir, tmp_path / "b", arch="tnn_marker:make", arch_kwargs={})
    model = tnncompress.load(copy, trust_code=True)
    assert marker_module.exists() and isinstance(model, torch.nn.Module)


def test_load_refuses_constructor_arguments_a_registry_model_does_not_take(output_dir, tmp_path):
    copy = tampered(output_dir, tmp_path, arch_kwargs={"num_classes": 10, "weights": "DEFAULT"})
    with pytest.raises(CheckpointError, match="arch_kwargs may only set"):
        tnncompress.load(copy)


def test_load_refuses_weights_behind_a_symlink_out_of_the_directory(output_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    outside = tmp_path / "elsewhere.safetensors"
    (copy / "model.safetensors").rename(outside)
    (copy / "model.safetensors").symlink_to(outside)
    with pytest.raises(UntrustedCheckpointError, match="outside"):
        tnncompress.load(copy)


def test_load_checks_layer_records_against_the_weights_before_allocating(output_dir, tmp_path):
    structure = json.loads((output_dir / "structure.json").read_text())
    layers = structure["layers"]
    layers[0]["ranks"] = {"r": 30000}  # 30000 x (S + kh + kw + T) parameters, none of them in the file
    copy = tampered(output_dir, tmp_path, layers=layers)
    with pytest.raises(CheckpointError, match="does not fit"):
        tnncompress.load(copy)
    layers[0]["optimize"] = "os.system"
    copy = tampered(output_dir, tmp_path / "b", layers=layers)
    with pytest.raises(CheckpointError, match="is invalid"):
        tnncompress.load(copy)


@pytest.mark.parametrize("command", ["inspect", "eval", "run"])
def test_checkpoint_metadata_may_only_name_registry_architectures(tmp_path, marker_module, command):
    state = load_file(SMALL_CNN)
    hostile = tmp_path / "hostile.safetensors"
    save_file(state, str(hostile), metadata={"arch": "tnn_marker:make", "input_size": "1,28,28"})
    extra = {"inspect": [], "eval": ["--limit", "10"], "run": ["-f", "cp", "-r", "0.2", "--out", tmp_path / "o"]}
    result = invoke(command, hostile, *extra[command])
    assert result.exit_code == 2, result.output
    assert "its metadata names the architecture 'tnn_marker:make'" in result.output
    assert "--trust-checkpoint" in result.output and "--arch" in result.output
    assert not marker_module.exists()
    # --arch overrides the file, and --trust-checkpoint allows it
    assert invoke("inspect", hostile, "--arch", "tnncompress:small_cnn").exit_code == 0
    assert not marker_module.exists()
    assert invoke("inspect", hostile, "--trust-checkpoint").exit_code == 0
    assert marker_module.exists()
