import gzip
import struct

import numpy as np
import pytest

from dann.data.idx import read_idx
from dann.errors import DataError


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)


def test_reads_raw_file(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, images)
    assert out.flags.writeable


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "gzipped-without-suffix"])
def test_reads_gzip_by_magic_bytes(tmp_path, images, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(path), images)


def test_raw_file_named_gz_still_reads(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(images))
    np.testing.assert_array_equal(read_idx(path), images)


def test_reads_big_endian_int32_as_native(tmp_path):
    values = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(values, type_code=0x0C))
    out = read_idx(path)
    assert out.dtype == np.dtype(np.int32) and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_truncated_payload(tmp_path, images):
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:-7])
    with pytest.raises(DataError, match=r"short-idx3-ubyte: truncated.*3x4x5.*60 bytes.*only 53"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "header-only"
    path.write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x03")
    with pytest.raises(DataError, match=r"header-only: truncated header"):
        read_idx(path)


def test_trailing_bytes(tmp_path, images):
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(idx_bytes(images) + b"\x00\x01")
    with pytest.raises(DataError, match=r"long-idx3-ubyte: 2 unexpected trailing bytes"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "photo.gz"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(20))
    with pytest.raises(DataError, match=r"photo.gz: wrong magic number 0xffd8ffe0.*not gzip"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "odd-type"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match=r"odd-type: wrong magic number 0x00000701.*unknown idx data type"):
        read_idx(path)


def test_corrupt_gzip(tmp_path, images):
    data = bytearray(gzip.compress(idx_bytes(images)))
    data[12:20] = b"\xff" * 8
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"corrupt.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_truncated_gzip(tmp_path, images):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-10])
    with pytest.raises(DataError, match=r"cut.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing-here: cannot read"):
        read_idx(tmp_path / "nothing-here")
