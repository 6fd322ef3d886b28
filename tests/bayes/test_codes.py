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
