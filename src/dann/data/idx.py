"""Reader for the idx file format used by MNIST, raw or gzipped.

The format is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the row-major payload in big-endian order.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from dann.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# idx type code -> (big-endian numpy dtype, plain-words name)
IDX_TYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "16-bit integer"),
    0x0C: (">i4", "32-bit integer"),
    0x0D: (">f4", "32-bit float"),
    0x0E: (">f8", "64-bit float"),
}


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """Return the content of an idx file, decompressed if it is gzipped (see :func:`idx_content`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from e
    return idx_content(data, path)


def idx_content(data: bytes, source: str | os.PathLike) -> bytes:
    """The idx content of a file's bytes ``data``: decompressed if gzipped, else as is.

    Gzip is detected by its magic bytes, not the suffix, so a raw file named ``*.gz`` (or a
    gzipped one without the suffix) still reads. Callers that verify checksums hash these bytes.
    ``source`` only names the file in error messages.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{source}: corrupt or truncated gzip data ({e})") from e


def parse_idx(data: bytes, source: str | os.PathLike) -> np.ndarray:
    """Parse idx content into a writable native-endian array.

    ``source`` only names the file in error messages. The payload must match the header's
    dimensions exactly, so truncated downloads and concatenated files are caught here.
    """
    if len(data) < 4:
        raise DataError(f"{source}: only {len(data)} bytes, too short to be an idx file")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        hint = ""
        if os.fspath(source).endswith(".gz"):
            hint = " (the name ends in .gz but the content is not gzip data either)"
        raise DataError(
            f"{source}: wrong magic number 0x{magic:08x}, this is not an idx file: an idx file "
            f"starts with two zero bytes, e.g. 0x00000803 for unsigned-byte images{hint}"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{code:02x} ({name})" for code, (_, name) in IDX_TYPES.items())
        raise DataError(
            f"{source}: wrong magic number 0x{magic:08x}: unknown idx data type 0x{type_code:02x}, "
            f"expected one of {known}"
        )
    if ndim == 0:
        raise DataError(f"{source}: magic number 0x{magic:08x} declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{source}: truncated header: {ndim} dimensions need a {header_len}-byte header "
            f"but the file holds only {len(data)} bytes"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype_str, _ = IDX_TYPES[type_code]
    dtype = np.dtype(dtype_str)
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    actual = len(data) - header_len
    shape_text = "x".join(map(str, dims))
    if actual < expected:
        raise DataError(
            f"{source}: truncated: the header declares {shape_text} values ({expected} bytes) "
            f"but only {actual} bytes follow"
        )
    if actual > expected:
        raise DataError(
            f"{source}: {actual - expected} unexpected trailing bytes after the {expected} bytes "
            f"declared by the header ({shape_text}); the file is corrupt or not a single idx file"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    # astype copies: native byte order and a writable array (torch.from_numpy warns otherwise).
    return flat.astype(dtype.newbyteorder("=")).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (raw or gzipped) into a numpy array, validating its structure."""
    return parse_idx(read_idx_bytes(path), path)
