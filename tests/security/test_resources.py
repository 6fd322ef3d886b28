"""Inputs that would exhaust memory are refused before anything is allocated (issue 10, items 7 and 8)."""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib

import pytest
import torch
import yaml

from tnncompress.data import read_idx
from tnncompress.errors import LimitError
from tnncompress.io import read_checkpoint

from .conftest import FAST, SMALL_CNN, invoke

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("where", ["recipe", "ranks", "set"])
def test_a_yaml_alias_bomb_is_refused_at_once_in_a_short_message(tmp_path, where):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 400
    args = {"recipe": ["--recipe", bomb], "ranks": [SMALL_CNN, "-r", "0.2", "--ranks", bomb],
            "set": [SMALL_CNN, "-r", "0.2", "--set", "include=" + "&a [x, *a]"]}[where]
    started = time.perf_counter()
    result = invoke("run", *args, "--out", tmp_path / "o", *FAST)
    assert time.perf_counter() - started < 1.0
    assert result.exit_code == 2 and "aliases" in result.output, result.output
    assert len(result.output) < 400 and not (tmp_path / "o").exists()


def test_messages_quote_a_bounded_part_of_bad_values(tmp_path):
    recipe = tmp_path / "long.yaml"
    recipe.write_text(yaml.safe_dump({"rate": "x" * 100_000, "checkpoint": str(SMALL_CNN)}))
    result = invoke("run", "--recipe", recipe, *FAST)
    assert result.exit_code == 2 and "expected float" in result.output and len(result.output) < 400
    recipe.write_text(yaml.safe_dump({f"key{i}": 1 for i in range(10_000)}))
    result = invoke("run", "--recipe", recipe, *FAST)
    assert result.exit_code == 2 and "and 9995 more" in result.output and len(result.output) < 1200


@pytest.mark.slow
def test_an_oversized_input_size_is_refused_before_allocating(tmp_path):
    """3 x 100000 x 100000 floats is 120 GB; the refusal must come before any of it is touched."""
    # The child reports its own peak (VmHWM of the image it exec'd). ru_maxrss from wait4 is no use here:
    # Linux carries the high-water mark of the pre-exec (vforked) memory, i.e. of this pytest process, into it.
    peak = tmp_path / "peak"
    code = ("import atexit, sys\n"
            "peak = sys.argv.pop(1)\n"
            "def report():\n"
            "    status = open('/proc/self/status').read()\n"
            "    open(peak, 'w').write(status.split('VmHWM:')[1].split()[0])\n"
            "atexit.register(report)\n"
            "from tnncompress.cli.app import app\n"
            "sys.argv = ['tnncompress'] + sys.argv[1:]\n"
            "app()\n")
    process = subprocess.run([sys.executable, "-c", code, str(peak), "inspect", str(SMALL_CNN), "--input-size",
                              "3,100000,100000"], stderr=subprocess.PIPE, text=True, check=False)
    assert process.returncode == 2, process.stderr
    assert "30,000,000,000 exceeds the limit" in process.stderr
    assert "TNNCOMPRESS_MAX_INPUT_ELEMENTS" in process.stderr
    peak_mib = int(peak.read_text()) / 1024
    assert peak_mib < 2048  # the interpreter with torch is a few hundred MiB; the input would be 114,000


def test_the_input_size_in_checkpoint_metadata_is_bounded_too(tmp_path):
    from safetensors.torch import load_file, save_file

    hostile = tmp_path / "big.safetensors"
    save_file(load_file(SMALL_CNN), str(hostile), metadata={"arch": "tnncompress:small_cnn",
                                                             "input_size": "1,100000,100000"})
    result = invoke("inspect", hostile)
    assert result.exit_code == 2 and "its metadata input_size" in result.output and "exceeds the limit" in result.output


def test_a_huge_rank_in_a_ranks_file_is_refused_with_the_numbers(tmp_path):
    ranks = tmp_path / "ranks.yaml"
    ranks.write_text(yaml.safe_dump({"layers": {"conv2": {"format": "cp", "ranks": {"r": 30000}}}}))
    result = invoke("run", SMALL_CNN, "--ranks", ranks, "--out", tmp_path / "o", *FAST)
    assert result.exit_code == 2, result.output
    assert "layer conv2 (cp, r=30000): factor parameters: 1,620,000 exceeds the limit of 18,432" in result.output
    assert "TNNCOMPRESS_MAX_FACTOR_RATIO" in result.output


def test_a_deflate_bomb_checkpoint_is_refused_before_torch_load(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info.filename))
        out.writestr("archive/data/1", bytes(300 << 20))  # 300 MiB of zeros in a few hundred KiB
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(LimitError, match="the archive expands to"):
        read_checkpoint(bomb)


def _gzip_bomb(path, promised_bytes: int, actual_bytes: int) -> None:
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", promised_bytes)
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [stream.compress(header)]
    chunk = bytes(1 << 20)
    for _ in range(actual_bytes >> 20):
        chunks.append(stream.compress(chunk))
    chunks.append(stream.flush())
    path.write_bytes(b"".join(chunks))


@pytest.mark.slow
def test_an_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    honest = tmp_path / "honest-idx1-ubyte.gz"  # the header promises what the stream holds: 512 MiB
    _gzip_bomb(honest, 512 << 20, 512 << 20)
    lying = tmp_path / "lying-idx1-ubyte.gz"  # the header promises 10 bytes; the stream holds 512 MiB
    _gzip_bomb(lying, 10, 512 << 20)
    assert honest.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="the IDX header promises"):
            read_idx(honest)
        with pytest.raises(ValueError, match="file holds more"):
            read_idx(lying)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    # an honest file of the same format still reads
    fine = tmp_path / "fine-idx1-ubyte.gz"
    fine.write_bytes(gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([1, 2, 3])))
    assert read_idx(fine).tolist() == [1, 2, 3]


def _png_header_only(path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00"))
                     + chunk(b"IEND", b""))


def test_a_900_megapixel_image_is_refused_from_its_header(tmp_path, imagefolder_dir):
    from tnncompress.data import read_image

    huge = tmp_path / "huge.png"
    _png_header_only(huge, 30000, 30000)
    with pytest.raises(LimitError, match=f"image {huge} \\(30000 x 30000\\)"):
        read_image(str(huge))
