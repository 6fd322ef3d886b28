"""Reader for the IDX format of MNIST-family datasets (plain or gzip-compressed).

Format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian uint32
per dimension, then the data. Anything else is rejected with the reason.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..limits import check, inflate_allowance

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(ValueError):
    pass


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file. A gzip stream is inflated incrementally and never beyond what the
    header promises, and the promise itself is bounded by the `inflate_ratio` limit, so a small
    gzip bomb fails before it is expanded."""
    path = Path(path)
    raw = path.read_bytes()
    compressed = raw[:2] == b"\x1f\x8b"
    stream = zlib.decompressobj(wbits=31) if compressed else None

    def take(n: int, data: bytes) -> bytes:
        if stream is None:
            return data[:n]
        try:
            return stream.decompress(data, n)
        except zlib.error as exc:
            raise IdxError(f"{path}: corrupt gzip stream ({exc})") from None

    head = take(4, raw)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise IdxError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[head[2]]), head[3]
    rest = raw[4:] if stream is None else stream.unconsumed_tail
    dims = take(4 * ndim, rest)
    if len(dims) < 4 * ndim:
        raise IdxError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize
    if compressed:
        check("inflate_ratio", expected, f"{path}: the IDX header promises data bytes",
              allowed=inflate_allowance(len(raw)))
        body = take(expected + 1, stream.unconsumed_tail)  # one byte more reveals a longer stream
        if len(body) == expected and not stream.eof:
            body += take(1, stream.unconsumed_tail)
    else:
        body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise IdxError(f"{path}: IDX header promises {expected} data bytes, file holds "
                       f"{'more' if len(body) > expected else len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as IDX (used to build the bundled subset and test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    Path(path).write_bytes(data)
