import gzip
import hashlib
import io
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA

from dann.data import mnist
from dann.data.mnist import (
    MnistFile,
    default_cache_dir,
    fetch_mnist,
    load_mnist,
    resolve_data_dir,
)
from dann.errors import ConfigError, DataError

SIZES = {"train": 12, "test": 5}


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def synthetic_files(labels_max: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    files = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        n = SIZES[split]
        files[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        files[f"{prefix}-labels-idx1-ubyte"] = rng.integers(0, labels_max + 1, n, dtype=np.uint8)
    return files


def install(data_dir: Path, files: dict[str, np.ndarray], monkeypatch, gz: bool = True) -> None:
    """Write tiny MNIST files (images gzipped, labels raw) and make them the expected ones."""
    folder = data_dir / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    specs = {}
    for name, array in files.items():
        content = idx_bytes(array)
        if gz and "images" in name:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
        specs[name] = MnistFile(hashlib.sha256(content).hexdigest(), array.shape)
    monkeypatch.setattr(mnist, "MNIST_FILES", specs)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    install(tmp_path / "data", synthetic_files(), monkeypatch)
    return tmp_path / "data"


@pytest.mark.parametrize("split,prefix", [("train", "train"), ("test", "t10k")])
def test_load_split(data_dir, split, prefix):
    files = synthetic_files()
    images, labels = load_mnist(split, data_dir)
    assert images.dtype == np.uint8 and images.shape == (SIZES[split], 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (SIZES[split],)
    np.testing.assert_array_equal(images, files[f"{prefix}-images-idx3-ubyte"])
    np.testing.assert_array_equal(labels, files[f"{prefix}-labels-idx1-ubyte"])


def test_data_dir_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("DANN_DATA", str(data_dir))
    assert load_mnist("test")[0].shape == (SIZES["test"], 28, 28)


def test_checksum_mismatch_names_file_and_digests(data_dir, monkeypatch):
    name = "t10k-labels-idx1-ubyte"
    specs = dict(mnist.MNIST_FILES)
    actual = specs[name].sha256
    specs[name] = MnistFile("0" * 64, specs[name].shape)
    monkeypatch.setattr(mnist, "MNIST_FILES", specs)
    with pytest.raises(DataError) as info:
        load_mnist("test", data_dir)
    message = str(info.value)
    assert str(data_dir / "mnist" / name) in message
    assert "checksum mismatch" in message and "0" * 64 in message and actual in message
    assert "Delete it and fetch it again" in message
    assert load_mnist("test", data_dir, verify=False)[1].shape == (SIZES["test"],)


def test_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.delenv("DANN_DATA", raising=False)
    with pytest.raises(DataError) as info:
        load_mnist("train", tmp_path)
    message = str(info.value)
    for name in mnist.MNIST_FILES:
        assert name in message
    assert str(tmp_path / "mnist") in message
    assert "--data-dir" in message and "DANN_DATA" in message
    assert "dann data fetch mnist" in message
    assert "\n" not in message


def test_missing_files_says_how_dir_was_chosen(tmp_path, monkeypatch):
    monkeypatch.setenv("DANN_DATA", str(tmp_path / "from-env"))
    with pytest.raises(DataError, match=r"from-env.*from the DANN_DATA environment variable"):
        load_mnist("test")
    monkeypatch.delenv("DANN_DATA")
    monkeypatch.setenv("DANN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"cache.*the default"):
        load_mnist("test")


def test_label_out_of_range(tmp_path, monkeypatch):
    files = synthetic_files()
    files["t10k-labels-idx1-ubyte"][2] = 10
    install(tmp_path, files, monkeypatch)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 10 is out of range 0..9"):
        load_mnist("test", tmp_path)


def test_label_image_count_mismatch(tmp_path, monkeypatch):
    files = synthetic_files()
    files["t10k-labels-idx1-ubyte"] = files["t10k-labels-idx1-ubyte"][:-1]
    install(tmp_path, files, monkeypatch)
    with pytest.raises(DataError, match=r"5 images but .* 4 labels"):
        load_mnist("test", tmp_path)


def test_wrong_item_shape_even_without_verify(data_dir):
    path = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 27), dtype=np.uint8))))
    with pytest.raises(DataError, match=r"shape \(5, 28, 27\), expected .* \(5, 28, 28\)"):
        load_mnist("test", data_dir, verify=False)


def test_unknown_split(data_dir):
    with pytest.raises(ConfigError, match="'valid'"):
        load_mnist("valid", data_dir)


def test_directory_resolution(tmp_path, monkeypatch):
    for var in ("DANN_DATA", "DANN_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "dann"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "dann"
    monkeypatch.setenv("DANN_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert resolve_data_dir() == tmp_path / "cache"
    monkeypatch.setenv("DANN_DATA", str(tmp_path / "data"))
    assert resolve_data_dir() == tmp_path / "data"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_fetch_offline_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    monkeypatch.setattr(mnist, "DOWNLOAD_TIMEOUT_S", 2)
    with pytest.raises(DataError) as info:
        fetch_mnist(tmp_path)
    message = str(info.value)
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in message
    assert "offline" in message and str(tmp_path / "mnist") in message
    assert list((tmp_path / "mnist").iterdir()) == []


def test_fetch_tries_mirrors_in_order_and_verifies(tmp_path, monkeypatch):
    source = tmp_path / "upstream"
    install(source, synthetic_files(), monkeypatch, gz=False)
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", ("http://down.invalid/", "http://up.invalid/"))
    bad = "t10k-labels-idx1-ubyte"
    requested = []

    def fake_urlopen(request, timeout):
        url = request.full_url
        requested.append(url)
        if url.startswith("http://down.invalid/"):
            raise urllib.error.URLError("no route")
        name = url.rsplit("/", 1)[1].removesuffix(".gz")
        content = (source / "mnist" / name).read_bytes()
        return io.BytesIO(gzip.compress(content + b"x" if name == bad else content))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=rf"up.invalid/{bad}.gz: downloaded content has sha256"):
        fetch_mnist(data_dir)
    assert requested[:2] == [
        "http://down.invalid/train-images-idx3-ubyte.gz",
        "http://up.invalid/train-images-idx3-ubyte.gz",
    ]
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    images, _ = load_mnist("train", data_dir)
    np.testing.assert_array_equal(images, synthetic_files()["train-images-idx3-ubyte"])


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(),
    reason=f"real MNIST not available at {SHARED_DATA / 'mnist'}",
)
def test_real_mnist_test_split():
    images, labels = load_mnist("test", SHARED_DATA)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
