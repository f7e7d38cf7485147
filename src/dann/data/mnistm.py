"""MNIST-M: MNIST digits blended over random crops of BSDS500 photos (Ganin & Lempitsky, 2015).

MNIST-M is not downloaded: it is derived from MNIST and the 200 BSDS500 training photos with a
seeded generator and cached as ``<cache_dir>/mnistm/mnistm_seed<seed>.npz``. Inputs are pinned by
checksums, so a seed names one exact data set.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import tarfile
import zipfile
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, UnidentifiedImageError

from dann.data.mnist import (
    MNIST_FILES,
    SPLIT_FILES,
    _data_dir_and_origin,
    default_cache_dir,
    load_mnist,
)
from dann.errors import ConfigError, DataError
from dann.runfiles import atomic_open

logger = logging.getLogger(__name__)

BSDS500_URL = (
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
)
BSDS500_ARCHIVE = "BSR_bsds500.tgz"
BSDS500_ARCHIVE_TRAIN = "BSR/BSDS500/data/images/train/"
SIZE = 28
CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@functools.cache
def bsds500_train_checksums() -> dict[str, str]:
    """Return {file name: sha256} of the 200 BSDS500 training photos (shipped package data)."""
    text = resources.files("dann.data").joinpath("bsds500_train.sha256").read_text("ascii")
    return {name: digest for digest, name in (line.split() for line in text.splitlines() if line)}


def _read_folder(folder: Path) -> dict[str, bytes]:
    try:
        return {p.name: p.read_bytes() for p in folder.glob("*.jpg") if p.is_file()}
    except OSError as e:
        raise DataError(f"{folder}: cannot read the BSDS500 photos ({e})") from e


def _read_archive(archive: Path) -> dict[str, bytes]:
    """Read the training JPEGs from the upstream tgz in memory, streaming it once."""
    photos = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if (
                    member.isfile()
                    and name.startswith(BSDS500_ARCHIVE_TRAIN)
                    and name.endswith(".jpg")
                    and "/" not in name[len(BSDS500_ARCHIVE_TRAIN) :]
                ):
                    photos[name[len(BSDS500_ARCHIVE_TRAIN) :]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{archive}: corrupt or truncated archive ({e}); delete it and download "
            f"{BSDS500_URL} again"
        ) from e
    if not photos:
        raise DataError(f"{archive}: no {BSDS500_ARCHIVE_TRAIN}*.jpg inside; is this {BSDS500_URL}?")
    return photos


def _verify_photos(photos: dict[str, bytes], source: Path) -> None:
    expected = bsds500_train_checksums()
    unknown = sorted(set(photos) - set(expected))
    if unknown:
        raise DataError(
            f"{source}: {len(unknown)} file(s) that are not BSDS500 training photos, e.g. "
            f"{unknown[0]}; remove them so that MNIST-M stays reproducible (from Python, verify=False skips this check)"
        )
    missing = sorted(set(expected) - set(photos))
    if missing:
        raise DataError(
            f"{source}: {len(missing)} of the {len(expected)} BSDS500 training photos are missing, "
            f"e.g. {missing[0]}; copy all of them from {BSDS500_ARCHIVE_TRAIN} of {BSDS500_URL}"
        )
    for name in sorted(photos):
        actual = hashlib.sha256(photos[name]).hexdigest()
        if actual != expected[name]:
            raise DataError(
                f"{source}: {name}: checksum mismatch: sha256 {actual}, expected {expected[name]}; "
                f"replace it with the original from {BSDS500_URL}"
            )


def _decode(name: str, data: bytes, source: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{source}: {name}: cannot decode the JPEG ({e})") from e
    if rgb.shape[0] < SIZE or rgb.shape[1] < SIZE:
        raise DataError(
            f"{source}: {name}: {rgb.shape[1]}x{rgb.shape[0]} pixels is smaller than {SIZE}x{SIZE}"
        )
    return rgb


def load_bsds500_train(
    data_dir: str | os.PathLike | None = None, verify: bool = True
) -> list[np.ndarray]:
    """Load the BSDS500 training photos as RGB uint8 [H,W,3] arrays, sorted by file name.

    Reads ``<data_dir>/bsds500/train/*.jpg``, else ``<data_dir>/BSR_bsds500.tgz``. The sort order
    and the checksums (``verify``) make the photos, and hence MNIST-M, reproducible.
    """
    root, origin = _data_dir_and_origin(data_dir)
    folder = root / "bsds500" / "train"
    archive = root / BSDS500_ARCHIVE
    if folder.is_dir():
        source, raw = folder, _read_folder(folder)
        if not raw:
            raise DataError(f"{folder}: no *.jpg files; copy the 200 BSDS500 training photos there")
    elif archive.is_file():
        source, raw = archive, _read_archive(archive)
    else:
        raise DataError(
            f"BSDS500 training photos not found in {root} (data dir {origin}): MNIST-M needs them as "
            f"{folder}/*.jpg or as the upstream archive {archive} (download {BSDS500_URL}), or "
            f"point DANN_DATA / --data-dir at a directory that has them"
        )
    if verify:
        _verify_photos(raw, source)
    return [_decode(name, raw[name], source) for name in sorted(raw)]


def blend_mnistm(
    digits: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Blend digits into random photo crops: the MNIST-M recipe, as uint8 [N,28,28,3].

    Each digit is binarised to 0/255; for each sample a photo is drawn uniformly, then a uniform
    28x28 crop of it, and the output is ``|crop - digit|`` (exact, computed in int16), so the
    digit shows as the inverted background.
    """
    n = len(digits)
    photo_idx = rng.integers(len(photos), size=n)
    heights = np.array([p.shape[0] for p in photos])
    widths = np.array([p.shape[1] for p in photos])
    # Exclusive upper bounds per sample: every one of the (H-27)*(W-27) crops is possible.
    tops = rng.integers(0, heights[photo_idx] - SIZE + 1)
    lefts = rng.integers(0, widths[photo_idx] - SIZE + 1)
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    # Grouping by photo lets one gather fetch all of a photo's crops: indexing the view of all
    # its 28x28x3 windows by top-left corner copies whole blocks (much faster than per-pixel).
    for p in np.unique(photo_idx):
        sel = np.flatnonzero(photo_idx == p)
        windows = sliding_window_view(photos[p], (SIZE, SIZE, 3))
        crops = windows[tops[sel], lefts[sel], 0].astype(np.int16)
        digit = np.where(digits[sel] > 0, np.int16(255), np.int16(0))[..., None]
        out[sel] = np.abs(crops - digit).astype(np.uint8)
    return out


def _cache_path(cache_dir: str | os.PathLike | None, seed: int) -> Path:
    if seed < 0:  # the seed names the file; a negative one is a typo, not a data set
        raise ConfigError(f"MNIST-M seed must be 0 or more, got {seed}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "mnistm" / f"mnistm_seed{seed}.npz"


#: what reading a damaged or foreign cache file can raise
_CACHE_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def build_mnistm(
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Build MNIST-M (train from MNIST train, test from MNIST test) into the cache; return its path.

    An existing cache file is checked (every array's presence, type, shape and label range) and
    kept if intact, rebuilt with a warning if not; ``force`` rebuilds it regardless. The file is
    written atomically (readable by everyone), so an interrupted build leaves no partial file.
    """
    path = _cache_path(cache_dir, seed)
    if path.is_file() and not force:
        try:
            for split in SPLIT_FILES:
                _read_cache(path, split)
            return path
        except _CACHE_ERRORS as e:
            logger.warning("MNIST-M cache %s is unusable (%s); rebuilding it", path, e)
    mnist = {split: load_mnist(split, data_dir) for split in ("train", "test")}
    photos = load_bsds500_train(data_dir)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (digits, labels) in mnist.items():
        logger.info("building MNIST-M %s split (%d images, seed %d)", split, len(digits), seed)
        arrays[f"{split}_images"] = blend_mnistm(digits, photos, rng)
        arrays[f"{split}_labels"] = labels
    try:
        with atomic_open(path) as f:
            np.savez_compressed(f, **arrays)
    except OSError as e:
        raise DataError(f"{path.parent}: cannot write the MNIST-M cache ({e.strerror or e})") from e
    return path


def _read_cache(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split from the cache, raising ValueError if it is not what `build_mnistm` writes."""
    n = MNIST_FILES[SPLIT_FILES[split][1]].shape[0]
    with np.load(path, allow_pickle=False) as npz:
        missing = set(CACHE_KEYS) - set(npz.files)
        if missing:
            raise ValueError(f"missing arrays {sorted(missing)}")
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    if images.dtype != np.uint8 or images.shape != (n, SIZE, SIZE, 3):
        raise ValueError(f"{split}_images is {images.dtype} {images.shape}")
    if labels.dtype != np.int64 or labels.shape != (n,) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{split}_labels is {labels.dtype} {labels.shape} or out of range 0..9")
    return images, labels


def load_mnistm(
    split: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST-M split as (images uint8 [N,28,28,3], labels int64 [N]).

    Builds the cache on first use and rebuilds it, with a warning, if it is corrupt, so an
    interrupted or damaged cache never needs manual cleanup.
    """
    if split not in SPLIT_FILES:
        raise ConfigError(f"unknown MNIST-M split {split!r}, expected 'train' or 'test'")
    path = _cache_path(cache_dir, seed)
    if path.is_file():  # read once, not checked first and then read again
        try:
            return _read_cache(path, split)
        except _CACHE_ERRORS as e:
            logger.warning("MNIST-M cache %s is unusable (%s); rebuilding it", path, e)
    path = build_mnistm(data_dir, cache_dir, seed, force=True)
    try:
        return _read_cache(path, split)
    except _CACHE_ERRORS as e:
        raise DataError(f"{path}: the freshly built MNIST-M cache cannot be read back ({e})") from e
