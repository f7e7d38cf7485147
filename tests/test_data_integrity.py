"""Data and run files are verified before they are trusted, written whole, and readable by others."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dann.cli import main
from dann.data import mnist, mnistm
from dann.train.metrics_log import MetricsLog, read_metrics

PHOTOS = 3


def idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(4, dtype=np.uint8),
    }


@pytest.fixture
def upstream(tmp_path, monkeypatch) -> dict[str, bytes]:
    """Tiny MNIST files made the standard ones, served by a fake mirror that records what is asked."""
    contents = {name: idx(array) for name, array in _arrays().items()}
    specs = {name: mnist.MnistFile(hashlib.sha256(contents[name]).hexdigest(), array.shape) for name, array in _arrays().items()}
    monkeypatch.setattr(mnist, "MNIST_FILES", specs)
    monkeypatch.setattr(mnistm, "MNIST_FILES", specs)
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", ("http://mirror.invalid/",))
    requested: list[str] = []

    def fake_urlopen(request, timeout):
        name = request.full_url.rsplit("/", 1)[1].removesuffix(".gz")
        requested.append(name)
        return io.BytesIO(gzip.compress(contents[name]))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    contents["requested"] = requested  # type: ignore[assignment]
    return contents


def test_fetch_replaces_a_damaged_file_and_keeps_intact_ones(tmp_path, upstream, capsys):
    folder = tmp_path / "mnist"
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert sorted(upstream["requested"]) == sorted(mnist.MNIST_FILES)
    upstream["requested"].clear()
    # a raw copy cut short would be found before the .gz: it is replaced, not reported as success
    (folder / "train-images-idx3-ubyte").write_bytes(upstream["train-images-idx3-ubyte"][:300])
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert upstream["requested"] == ["train-images-idx3-ubyte"]
    assert not (folder / "train-images-idx3-ubyte").exists()
    np.testing.assert_array_equal(mnist.load_mnist("train", tmp_path)[0], _arrays()["train-images-idx3-ubyte"])
    upstream["requested"].clear()
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert upstream["requested"] == []


def test_downloads_and_caches_are_readable_by_others_whatever_the_umask(tmp_path, upstream, monkeypatch):
    photo_folder(tmp_path, monkeypatch)
    old = os.umask(0o077)
    try:
        mnist.fetch_mnist(tmp_path / "data")
        cache = mnistm.build_mnistm(tmp_path / "data", tmp_path / "cache", seed=3)
    finally:
        os.umask(old)
    for path in [*(tmp_path / "data" / "mnist").iterdir(), cache]:
        assert path.stat().st_mode & 0o777 == 0o644, path
    for folder in (tmp_path / "data", tmp_path / "data" / "mnist", tmp_path / "cache", cache.parent):
        assert folder.stat().st_mode & 0o777 == 0o755, folder


def photo_folder(tmp_path: Path, monkeypatch) -> None:
    """Synthetic BSDS500 training photos in DATA/bsds500/train, made the expected ones."""
    folder = tmp_path / "data" / "bsds500" / "train"
    folder.mkdir(parents=True)
    sums = {}
    for p in range(PHOTOS):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(p).integers(0, 256, (30, 31, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        (folder / f"{p}.jpg").write_bytes(buffer.getvalue())
        sums[f"{p}.jpg"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    monkeypatch.setattr(mnistm, "bsds500_train_checksums", lambda: sums)


@pytest.fixture
def mnistm_inputs(tmp_path, upstream, monkeypatch) -> Path:
    mnist.fetch_mnist(tmp_path / "data")
    photo_folder(tmp_path, monkeypatch)
    return tmp_path / "data"


def test_build_checks_an_existing_cache_and_rebuilds_a_damaged_one(mnistm_inputs, tmp_path, capsys):
    args = ["data", "build", "mnistm", "--data-dir", str(mnistm_inputs), "--cache-dir", str(tmp_path / "cache"), "--seed", "2"]
    assert main(args) == 0
    cache = tmp_path / "cache" / "mnistm" / "mnistm_seed2.npz"
    intact = cache.read_bytes()
    cache.write_bytes(intact[: len(intact) // 2])
    assert main(args) == 0
    assert cache.read_bytes() == intact  # the same seed builds the same file
    assert str(cache) in capsys.readouterr().out


def test_an_interrupted_build_leaves_no_partial_file(mnistm_inputs, tmp_path, monkeypatch):
    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half of an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(mnistm.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnistm.build_mnistm(mnistm_inputs, tmp_path / "cache", seed=0)
    assert list((tmp_path / "cache" / "mnistm").iterdir()) == []


def test_rewinding_the_metrics_log_drops_a_row_cut_by_a_kill(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 10, "loss": 1.0}) + "\n" + json.dumps({"step": 20, "loss": 0.5}) + "\n" + '{"step": 30, "lo')
    assert [row["step"] for row in read_metrics(path)] == [10, 20]
    with MetricsLog(path) as log:
        log.rewind(15)
        log.write({"step": 20, "loss": 0.4})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.4}]
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]
