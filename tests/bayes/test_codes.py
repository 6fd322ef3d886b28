"""Bit packing of the MAP QNN's codes in bqn.safetensors, against a bit-by-bit reference."""

from __future__ import annotations

import math

import pytest
import torch

from tnncompress.bayes import export
from tnncompress.bayes.export import pack, unpack


def _reference(codes: list[int], bits: int) -> bytes:
    """Code i occupies stream bits i*bits .. i*bits + bits - 1, least significant first; stream bit j is
    bit j % 8 of byte j // 8."""
    stream = [(c >> b) & 1 for c in codes for b in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return bytes(sum(stream[j + k] << k for k in range(8)) for j in range(0, len(stream), 8))


@pytest.mark.parametrize("bits", range(1, 9))
def test_packed_codes_are_the_bit_stream_and_unpack_back(bits):
    g = torch.Generator().manual_seed(bits)
    for n in (0, 1, 7, 8, 9, 61):
        codes = torch.randint(0, 2 ** bits, (n,), generator=g)
        packed = pack(codes, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
        assert bytes(packed.tolist()) == _reference(codes.tolist(), bits)
        assert torch.equal(unpack(packed, bits, [n]), codes)


def test_chunks_do_not_change_the_stream(monkeypatch):
    codes = torch.randint(0, 8, (4, 5, 3), generator=torch.Generator().manual_seed(0))
    whole = pack(codes, 3)
    monkeypatch.setattr(export, "CHUNK", 8)  # many chunks, the last one partial
    assert torch.equal(pack(codes, 3), whole)
    assert torch.equal(unpack(whole, 3, [4, 5, 3]), codes)


def test_codes_outside_the_width_and_a_wrong_length_are_refused():
    with pytest.raises(ValueError, match="0..3"):
        pack(torch.tensor([0, 4]), 2)
    with pytest.raises(ValueError, match="need 2 packed bytes, got 1"):
        unpack(torch.zeros(1, dtype=torch.uint8), 3, [5])


def _codes_file(tmp_path, bits: int = 3, **changes) -> tuple:
    """A valid bqn.safetensors of one 4x5 weight, then `changes` (tensor name -> tensor or None to drop,
    `metadata` -> the header's metadata)."""
    from safetensors.torch import save_file

    from tnncompress.bayes.posterior import levels

    codes = torch.randint(0, 2 ** bits, (4, 5), generator=torch.Generator().manual_seed(0))
    tensors = {"w.codes": pack(codes, bits), "w.shape": torch.tensor([4, 5]), "w.levels": levels(bits),
               "w.scale": torch.full((4, 1), 0.5)}
    metadata = changes.pop("metadata", {"format": "tnncompress-bqn", "bits": str(bits)})
    for key, value in changes.items():
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    save_file(tensors, str(tmp_path / export.CODES_FILE), metadata=metadata)
    return codes, 0.5 * levels(bits)[codes]


def test_codes_read_back_as_the_weights(tmp_path):
    codes, want = _codes_file(tmp_path)
    assert torch.equal(export.read_codes(tmp_path)["w"], want)


@pytest.mark.parametrize(("changes", "why"), [
    ({"metadata": {"bits": "300000000"}}, "bits '300000000' is not an integer in 1..8"),
    ({"metadata": {"bits": "3.5"}}, "bits '3.5'"),
    ({"w.shape": torch.tensor([4, 50000])}, "packed bytes"),
    ({"w.shape": torch.tensor([-4, -5])}, "positive int64"),
    ({"w.shape": torch.tensor([4.0, 5.0])}, "positive int64"),
    ({"w.levels": torch.tensor([0.0, float("inf")])}, "finite"),
    ({"w.levels": torch.zeros(2)}, "a code"),  # codes up to 7 index 2 levels
    ({"w.levels": torch.zeros(9)}, "1..8 values"),
    ({"w.scale": None}, "no scale"),
    ({"w.scale": torch.ones(3, 1)}, "does not broadcast"),
    ({"w.codes": torch.zeros(8, dtype=torch.int64)}, "uint8"),
    ({"w.extra": torch.zeros(1)}, "unexpected tensor 'w.extra'"),
])
def test_a_tampered_codes_file_is_refused_naming_the_file(tmp_path, changes, why):
    from tnncompress.errors import MalformedFileError

    _codes_file(tmp_path, **changes)
    with pytest.raises(MalformedFileError, match=why) as info:
        export.read_codes(tmp_path)
    assert str(tmp_path / export.CODES_FILE) in str(info.value) and info.value.exit_code == 2


def test_a_codes_file_that_is_not_safetensors_is_refused(tmp_path):
    from tnncompress.errors import MalformedFileError

    (tmp_path / export.CODES_FILE).write_bytes(b"\xff" * 64)
    with pytest.raises(MalformedFileError, match="not a readable safetensors file"):
        export.read_codes(tmp_path)
