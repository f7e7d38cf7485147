"""MNIST: locate, verify, load and (when online) fetch the four standard idx files.

Files live in ``<data_dir>/mnist/<name>`` either raw or as ``<name>.gz``. Checksums are of the
decompressed bytes, so any gzip wrapper (upstream's or a re-compressed copy) is accepted.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dann.data.idx import idx_content, parse_idx, read_idx_bytes
from dann.errors import ConfigError, DataError
from dann.runfiles import atomic_write_bytes, make_dirs

logger = logging.getLogger(__name__)


class MnistFile(NamedTuple):
    """What a standard MNIST file must contain once decompressed."""

    sha256: str
    shape: tuple[int, ...]


MNIST_FILES: dict[str, MnistFile] = {
    "train-images-idx3-ubyte": MnistFile(
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)
    ),
    "train-labels-idx1-ubyte": MnistFile(
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)
    ),
    "t10k-images-idx3-ubyte": MnistFile(
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)
    ),
    "t10k-labels-idx1-ubyte": MnistFile(
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)
    ),
}

# Tried in order; each serves "<mirror><name>.gz". The S3 mirror is the one torchvision tries first.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 30


def default_cache_dir() -> Path:
    """Where dann keeps derived data and downloads: ``DANN_CACHE``, else the XDG cache dir."""
    if os.environ.get("DANN_CACHE"):
        return Path(os.environ["DANN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "dann"
    return Path.home() / ".cache" / "dann"


def _data_dir_and_origin(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """Resolve the data dir and say how it was chosen, so errors can tell the user what to change."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "given by --data-dir / the data_dir argument"
    if os.environ.get("DANN_DATA"):
        return Path(os.environ["DANN_DATA"]).expanduser(), "from the DANN_DATA environment variable"
    return default_cache_dir(), "the default, as neither --data-dir nor DANN_DATA is set"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the input data dir: the argument, else ``DANN_DATA``, else the cache dir."""
    return _data_dir_and_origin(data_dir)[0]


def _find(folder: Path, name: str) -> Path | None:
    """Return the raw or gzipped copy of ``name`` in ``folder`` (raw first: no decompression)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_error(folder: Path, origin: str, missing: list[str]) -> DataError:
    expected = ", ".join(MNIST_FILES)
    return DataError(
        f"MNIST file(s) not found: {', '.join(missing)} (raw or .gz) in {folder} "
        f"(data dir {origin}). MNIST needs these files there, each raw or gzipped: {expected}. "
        f"Fix: copy them into {folder}, or point DANN_DATA / --data-dir at a directory that has "
        f"a mnist/ folder with them, or run `dann data fetch mnist` on a machine with internet"
    )


#: what to do about a damaged MNIST file
_REFETCH = "delete it and run `dann data fetch mnist`, or copy an intact one there"


def _standard_file_of_shape(shape: tuple[int, ...]) -> str | None:
    """The standard MNIST file whose content has ``shape``, to name a file put under another's name."""
    return next((name for name, spec in MNIST_FILES.items() if spec.shape == shape), None)


def _read_verified(path: Path, name: str, verify: bool) -> np.ndarray:
    """Read one MNIST file and check it, most specific problem first.

    Structure (gzip, magic number, truncation), then the shape (a file of the other split or of
    the other kind), then, with ``verify``, the checksum of the decompressed bytes: a damaged
    file is named as truncated or misnamed, not only as a checksum mismatch.
    """
    spec = MNIST_FILES[name]
    try:
        data = read_idx_bytes(path)
        array = parse_idx(data, path)
    except DataError as err:
        raise DataError(f"{err}; {_REFETCH}") from None
    shape = tuple(array.shape)
    looks_like = _standard_file_of_shape(shape)
    misnamed = f"; it looks like {looks_like}, put each file under its own name" if looks_like not in (None, name) else ""
    # With verify=False the sample count may differ (e.g. a subset), the per-item shape may not.
    if array.dtype != np.uint8 or array.ndim != len(spec.shape) or shape[1:] != spec.shape[1:]:
        raise DataError(
            f"{path}: holds {array.dtype} values of shape {shape}, expected unsigned bytes "
            f"of shape {spec.shape}{misnamed or '; ' + _REFETCH}"
        )
    if not verify:
        return array
    if shape[0] != spec.shape[0]:
        raise DataError(f"{path}: holds {shape[0]} items, {name} holds {spec.shape[0]}{misnamed or '; ' + _REFETCH}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise DataError(
            f"{path}: checksum mismatch: sha256 of the decompressed content is {actual}, "
            f"expected {spec.sha256}; the file is corrupt or not the standard MNIST file. "
            f"Delete it and fetch it again (`dann data fetch mnist`) or copy a good one there"
        )
    return array


def load_mnist(
    split: str, data_dir: str | os.PathLike | None = None, verify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split as (images uint8 [N,28,28], labels int64 [N]).

    Parameters
    ----------
    split : "train" (60,000 samples) or "test" (10,000).
    data_dir : directory holding ``mnist/``; see `resolve_data_dir`.
    verify : check the sha256 of the decompressed files, so results are reproducible.
    """
    if split not in SPLIT_FILES:
        raise ConfigError(f"unknown MNIST split {split!r}, expected 'train' or 'test'")
    root, origin = _data_dir_and_origin(data_dir)
    folder = root / "mnist"
    names = SPLIT_FILES[split]
    paths = {name: _find(folder, name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise _missing_error(folder, origin, missing)
    images_name, labels_name = names
    images = _read_verified(paths[images_name], images_name, verify)
    labels = _read_verified(paths[labels_name], labels_name, verify)
    if len(images) != len(labels):
        raise DataError(
            f"{folder}: {paths[images_name].name} holds {len(images)} images but "
            f"{paths[labels_name].name} holds {len(labels)} labels; the files do not belong together"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{paths[labels_name]}: label {int(labels.max())} is out of range 0..{NUM_CLASSES - 1}; "
            f"this is not an MNIST labels file"
        )
    return images, labels.astype(np.int64)


def _download(url: str, dest: Path, sha256: str) -> None:
    """Download ``url`` to ``dest``, keeping it only if its decompressed sha256 matches.

    The file is held in memory (MNIST's largest is 10 MB) and written atomically, readable by
    everyone: an interrupted or tampered download never lands under the final name.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "dann"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        payload = response.read()
    actual = hashlib.sha256(idx_content(payload, url)).hexdigest()
    if actual != sha256:
        raise DataError(f"downloaded content has sha256 {actual}, expected {sha256}")
    atomic_write_bytes(dest, payload)


def _problem(path: Path, name: str) -> str | None:
    """What is wrong with an existing MNIST file (None: it is the standard one)."""
    try:
        _read_verified(path, name, verify=True)
    except DataError as err:
        return str(err)
    return None


def fetch_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """Download the MNIST files missing from, or damaged in, ``<data_dir>/mnist/``; return that folder.

    Files already there are verified (structure, shape, checksum) and downloaded again when
    damaged, so success is never reported over a corrupt file. Each download is tried on every
    mirror of `MNIST_MIRRORS` in order and only kept once its checksum matches.
    """
    root, origin = _data_dir_and_origin(data_dir)
    folder = root / "mnist"
    try:
        make_dirs(folder)
    except OSError as e:
        raise DataError(f"{folder}: cannot create the MNIST folder ({e.strerror or e})") from e
    for name, spec in MNIST_FILES.items():
        existing = _find(folder, name)
        damage = None if existing is None else _problem(existing, name)
        if existing is not None and damage is None:
            continue
        failures = []
        for mirror in MNIST_MIRRORS:
            url = f"{mirror}{name}.gz"
            logger.info("downloading %s", url)
            try:
                _download(url, folder / f"{name}.gz", spec.sha256)
                break
            except (urllib.error.URLError, http.client.HTTPException, OSError, DataError) as e:
                failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
        else:
            found = f"{damage} (and it " if damage is not None else f"{name} is missing (and it "
            raise DataError(
                f"{found}could not be downloaded from any mirror: {'; '.join(failures)}). This "
                f"machine looks offline, or the mirrors are unreachable or serve other files. "
                f"Put the MNIST files ({', '.join(MNIST_FILES)}, raw or .gz) into {folder} by hand "
                f"(data dir {origin}), "
                f"or set DANN_DATA / --data-dir to a directory whose mnist/ folder has them"
            )
        if damage is not None:  # said once it is mended: a failure says it in its one line
            logger.warning("%s; downloaded an intact copy", damage)
        if existing is not None and existing.name == name:  # a damaged raw file would be found before the new .gz
            existing.unlink()
    return folder
