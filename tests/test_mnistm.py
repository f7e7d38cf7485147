import hashlib
import io
import logging
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA
from PIL import Image

from dann.data import mnist, mnistm
from dann.data.mnist import MnistFile
from dann.data.mnistm import blend_mnistm, build_mnistm, load_bsds500_train, load_mnistm
from dann.errors import DataError

PHOTO_H, PHOTO_W = 30, 31  # 3 x 4 possible 28x28 crops


def coded_photos() -> list[np.ndarray]:
    """Photos whose pixel (y, x) of photo p is (y, x, 100 + 50p): a pixel reveals where it came from."""
    y, x = np.mgrid[:PHOTO_H, :PHOTO_W]
    return [
        np.stack([y, x, np.full_like(y, 100 + 50 * p)], axis=-1).astype(np.uint8) for p in range(3)
    ]


def random_digits(n: int, seed: int = 0) -> np.ndarray:
    """Digits mixing 0, faint (1) and full (255) strokes; pixel (0, 0) stays background."""
    digits = np.random.default_rng(seed).choice(np.array([0, 0, 1, 37, 255], np.uint8), (n, 28, 28))
    digits[:, 0, 0] = 0
    return digits


def test_blend_is_abs_difference_of_crop_and_binarised_digit():
    photos, digits = coded_photos(), random_digits(400)
    out = blend_mnistm(digits, photos, np.random.default_rng(3))
    assert out.shape == (400, 28, 28, 3) and out.dtype == np.uint8
    used = set()
    for digit, image in zip(digits, out):
        top, left, code = (int(v) for v in image[0, 0])  # background pixel: the crop itself
        p = (code - 100) // 50
        crop = photos[p][top : top + 28, left : left + 28].astype(np.int64)
        binary = np.where(digit > 0, 255, 0)[..., None]
        np.testing.assert_array_equal(image, np.abs(crop - binary))
        used.add((p, top, left))
    # Uniform over photos and over every crop position, including the last row and column.
    assert used == {(p, t, l) for p in range(3) for t in range(3) for l in range(4)}


def test_blend_binarises_any_nonzero_pixel():
    photos = coded_photos()
    faint = np.ones((5, 28, 28), np.uint8)
    full = np.full((5, 28, 28), 255, np.uint8)
    a = blend_mnistm(faint, photos, np.random.default_rng(0))
    b = blend_mnistm(full, photos, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a[..., 2])) <= {255 - 100, 255 - 150, 255 - 200}  # all inverted


def test_blend_is_deterministic_per_seed():
    photos, digits = coded_photos(), random_digits(50)
    first = blend_mnistm(digits, photos, np.random.default_rng(7))
    again = blend_mnistm(digits, photos, np.random.default_rng(7))
    other = blend_mnistm(digits, photos, np.random.default_rng(8))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


# ---- BSDS500 photos ---------------------------------------------------------------------


def jpeg(seed: int, mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (PHOTO_H, PHOTO_W, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG")
    return buffer.getvalue()


PHOTOS = {"b.jpg": jpeg(1), "a.jpg": jpeg(2), "grey.jpg": jpeg(3, "L")}


@pytest.fixture
def photo_sums(monkeypatch) -> dict[str, str]:
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in PHOTOS.items()}
    monkeypatch.setattr(mnistm, "bsds500_train_checksums", lambda: sums)
    return sums


def write_photo_folder(data_dir: Path) -> None:
    folder = data_dir / "bsds500" / "train"
    folder.mkdir(parents=True)
    for name, data in PHOTOS.items():
        (folder / name).write_bytes(data)


def write_photo_archive(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    members = {f"BSR/BSDS500/data/images/train/{n}": d for n, d in PHOTOS.items()}
    members["BSR/BSDS500/data/images/test/other.jpg"] = jpeg(9)
    members["BSR/BSDS500/data/images/train/Thumbs.db"] = b"not a photo"
    with tarfile.open(data_dir / "BSR_bsds500.tgz", "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_photos_from_folder_are_rgb_and_sorted(tmp_path, photo_sums):
    write_photo_folder(tmp_path)
    photos = load_bsds500_train(tmp_path)
    assert [p.shape for p in photos] == [(PHOTO_H, PHOTO_W, 3)] * 3
    assert all(p.dtype == np.uint8 for p in photos)
    grey = photos[2]  # a, b, grey
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_photos_from_archive_match_folder(tmp_path, photo_sums):
    write_photo_folder(tmp_path / "folder")
    write_photo_archive(tmp_path / "archive")
    from_folder = load_bsds500_train(tmp_path / "folder")
    from_archive = load_bsds500_train(tmp_path / "archive")
    assert len(from_archive) == 3
    for a, b in zip(from_folder, from_archive):
        np.testing.assert_array_equal(a, b)


def test_unknown_photo_is_rejected_unless_verify_is_off(tmp_path, photo_sums):
    write_photo_folder(tmp_path)
    (tmp_path / "bsds500" / "train" / "extra.jpg").write_bytes(jpeg(5))
    with pytest.raises(DataError, match=r"train: 1 file\(s\) that are not BSDS500.*extra.jpg"):
        load_bsds500_train(tmp_path)
    assert len(load_bsds500_train(tmp_path, verify=False)) == 4


def test_mismatching_or_missing_photo(tmp_path, photo_sums):
    write_photo_folder(tmp_path)
    (tmp_path / "bsds500" / "train" / "a.jpg").write_bytes(jpeg(6))
    with pytest.raises(DataError, match=r"a.jpg: checksum mismatch"):
        load_bsds500_train(tmp_path)
    (tmp_path / "bsds500" / "train" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of the 3 BSDS500 training photos are missing, e.g. a.jpg"):
        load_bsds500_train(tmp_path)


def test_missing_photos_message(tmp_path):
    with pytest.raises(DataError) as info:
        load_bsds500_train(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "bsds500" / "train") + "/*.jpg" in message
    assert str(tmp_path / "BSR_bsds500.tgz") in message
    assert mnistm.BSDS500_URL in message


def test_shipped_checksums_list_200_photos():
    sums = mnistm.bsds500_train_checksums()
    assert len(sums) == 200 and all(len(d) == 64 for d in sums.values())


# ---- cache ------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def data_dir(tmp_path, monkeypatch, photo_sums) -> Path:
    """A tiny MNIST (6 train, 4 test) plus the synthetic photos, all passing verification."""
    data_dir = tmp_path / "data"
    (data_dir / "mnist").mkdir(parents=True)
    specs = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        arrays = {
            f"{prefix}-images-idx3-ubyte": random_digits(n, seed=n),
            f"{prefix}-labels-idx1-ubyte": np.arange(n, dtype=np.uint8),
        }
        for name, array in arrays.items():
            content = idx_bytes(array)
            (data_dir / "mnist" / name).write_bytes(content)
            specs[name] = MnistFile(hashlib.sha256(content).hexdigest(), array.shape)
    monkeypatch.setattr(mnist, "MNIST_FILES", specs)
    monkeypatch.setattr(mnistm, "MNIST_FILES", specs)
    write_photo_folder(data_dir)
    return data_dir


def test_build_writes_cache_not_data_dir(data_dir, tmp_path):
    before = sorted(data_dir.rglob("*"))
    path = build_mnistm(data_dir, tmp_path / "cache", seed=5)
    assert path == tmp_path / "cache" / "mnistm" / "mnistm_seed5.npz"
    assert sorted(data_dir.rglob("*")) == before
    assert [p.name for p in path.parent.iterdir()] == ["mnistm_seed5.npz"]
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(mnistm.CACHE_KEYS)
        assert npz["train_images"].shape == (6, 28, 28, 3)
        np.testing.assert_array_equal(npz["test_labels"], np.arange(4))
    images, labels = load_mnistm("test", data_dir, tmp_path / "cache", seed=5)
    assert images.shape == (4, 28, 28, 3) and labels.dtype == np.int64


def test_build_is_deterministic(data_dir, tmp_path):
    # Compare arrays, not files: the zip members carry a timestamp.
    seed1 = build_mnistm(data_dir, tmp_path / "a", seed=1)
    again = build_mnistm(data_dir, tmp_path / "b", seed=1)
    seed2 = build_mnistm(data_dir, tmp_path / "a", seed=2)
    with np.load(seed1) as one, np.load(again) as same, np.load(seed2) as two:
        for key in mnistm.CACHE_KEYS:
            assert one[key].tobytes() == same[key].tobytes()
        assert one["train_images"].tobytes() != two["train_images"].tobytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing key"])
def test_corrupt_cache_is_rebuilt(data_dir, tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    path = build_mnistm(data_dir, cache, seed=0)
    expected = load_mnistm("train", data_dir, cache)
    if damage == "garbage":
        path.write_bytes(b"definitely not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "test_labels"}
        np.savez_compressed(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="dann.data.mnistm"):
        images, labels = load_mnistm("train", data_dir, cache)
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    assert load_mnistm("test", data_dir, cache)[0].shape == (4, 28, 28, 3)


@pytest.mark.skipif(
    not (SHARED_DATA / "bsds500" / "train").is_dir(),
    reason=f"real BSDS500 photos not available at {SHARED_DATA / 'bsds500' / 'train'}",
)
def test_real_bsds500_photos():
    photos = load_bsds500_train(SHARED_DATA)
    assert len(photos) == 200
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos)
    assert {p.shape[:2] for p in photos} <= {(321, 481), (481, 321)}
