"""A user's image domains: class-per-subfolder trees, flat (unlabelled) folders and image list files.

Two routes share one decoder (:func:`load_image`): :func:`read_image_folder` and
:func:`read_image_list` decode everything once into a uint8 ``(N, C, H, W)`` tensor, and
:class:`ImageFileDataset` decodes on access so a DataLoader's workers can stream a domain too large
for memory. Both start from an :class:`ImageListing` (paths and labels, nothing decoded).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dann.data.loaded import LoadedDomain
from dann.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

Size = tuple[int, int]  # (height, width)

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


class UnreadableImage(DataError):
    """An image file Pillow cannot open or fully decode (corrupt, truncated, not an image)."""


@dataclass
class ImageListing:
    """Image files and their labels (indices into ``classes``), found without decoding any image.

    ``labels`` is None for an unlabelled domain (then ``classes`` is empty).
    """

    paths: list[str]
    labels: list[int] | None
    classes: list[str]
    origin: str = ""  # the folder or list file, for messages
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- listing


def list_image_folder(path: str | os.PathLike, classes: Sequence[str] | None = None) -> ImageListing:
    """Find the images of a folder: ``root/<class>/**/img`` is labelled, ``root/img`` is unlabelled.

    ``classes`` (the source's class names) makes a labelled folder use the source's label indices;
    its class folders must then match them exactly (a class folder may be empty). Hidden files and
    folders are ignored. Order: by class, then by path below the class folder.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise DataError(f"image folder {root} {what}: give the folder holding the images or class subfolders")
    entries = sorted(entry for entry in root.iterdir() if not entry.name.startswith("."))
    loose = [entry for entry in entries if entry.is_file() and _is_image(entry.name)]
    others = [entry.name for entry in entries if entry.is_file() and not _is_image(entry.name)]
    by_class = {entry.name: _images_below(entry, others) for entry in entries if entry.is_dir()}
    # Said once, so that e.g. .heic or .svg files the user expected to be read are not silently lost.
    notes = [f"ignored {len(others)} file(s) that are not images: {_some(others)}"] if others else []
    with_images = [name for name, files in by_class.items() if files]
    if loose and with_images:
        raise DataError(
            f"image folder {root} mixes loose images ({_some([p.name for p in loose])}) with class subfolders "
            f"({_some(with_images)}): put every image in a class subfolder (labelled) or all directly in {root} (unlabelled)"
        )
    if loose:
        return ImageListing([str(p) for p in loose], None, [], origin=str(root), notes=notes)
    if not with_images:
        raise DataError(
            f"image folder {root} holds no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}): "
            "put them in class subfolders (<class>/img.png) or directly in the folder"
        )
    if classes is None:
        empty = [name for name, files in by_class.items() if not files]
        if empty:
            raise DataError(f"class folder(s) {_some(empty)} in {root} hold no images: add images or remove the folder(s)")
        classes = sorted(by_class)
    else:
        classes = list(classes)
        missing = [name for name in classes if name not in by_class]
        extra = sorted(set(by_class) - set(classes))
        if missing or extra:
            raise DataError(
                f"class folders of {root} differ from the source's classes: missing {_some(missing) or 'none'}, "
                f"extra {_some(extra) or 'none'}; give it exactly one subfolder per source class"
            )
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        paths.extend(str(p) for p in by_class[name])
        labels.extend([index] * len(by_class[name]))
    return ImageListing(paths, labels, classes, origin=str(root), notes=notes)


def list_image_list(
    list_file: str | os.PathLike, root: str | os.PathLike | None = None, classes: Sequence[str] | None = None
) -> ImageListing:
    """Read an image list file (one ``path label`` per line, the label optional; TLlib's ImageList).

    Relative paths are relative to ``root``, or to the list file's folder. Either every line has an
    integer label or none has. Blank lines and lines starting with ``#`` are skipped. Classes are
    named ``"0"`` to ``"K-1"`` unless ``classes`` is given. Order: as listed.
    """
    list_path = Path(list_file)
    if not list_path.is_file():
        raise DataError(f"image list {list_path} not found: give a text file with one 'path label' per line")
    base = Path(root) if root is not None else list_path.parent
    if not base.is_dir():
        raise DataError(f"image root {base} for {list_path} is not a folder: pass root= the folder the listed paths start from")
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"image list {list_path} is not UTF-8 text ({error.reason}): save it as plain UTF-8 text") from error
    paths: list[str] = []
    labels: list[int | None] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_path} line {number}"
        name, label = _parse_list_line(line, base, where)
        image = Path(name) if Path(name).is_absolute() else base / name
        if not image.is_file():
            hint = "" if root is not None else "; pass root= if they are relative to another folder"
            raise DataError(f"{where}: image {image} not found (relative paths start from {base}{hint})")
        if label is not None and label < 0:
            raise DataError(f"{where}: label {label} is negative; labels are class indices 0, 1, ...")
        if label is not None and classes is not None and label >= len(classes):
            raise DataError(f"{where}: label {label} is out of range for the source's {len(classes)} classes")
        if labels and (label is None) != (labels[0] is None):
            has, lacks = (numbers[0], number) if label is None else (number, numbers[0])
            raise DataError(f"{list_path}: line {lacks} has no label but line {has} has one; label every line or none")
        paths.append(str(image))
        labels.append(label)
        numbers.append(number)
    if not paths:
        raise DataError(f"image list {list_path} lists no images: add one 'path label' per line")
    if labels[0] is None:
        return ImageListing(paths, None, [], origin=str(list_path))
    names = list(classes) if classes is not None else [str(i) for i in range(max(labels) + 1)]  # type: ignore[type-var]
    return ImageListing(paths, [int(label) for label in labels], names, origin=str(list_path))  # type: ignore[arg-type]


def _parse_list_line(line: str, base: Path, where: str) -> tuple[str, int | None]:
    """``path label``, ``path`` alone, or a path with spaces (then the label, if any, is the last word)."""
    parts = line.rsplit(maxsplit=1)
    if len(parts) == 2 and re.fullmatch(r"[+-]?\d+", parts[1]):
        return parts[0], int(parts[1])
    if len(parts) == 1 or (base / line).is_file() or Path(line).is_file():
        return line, None
    raise DataError(f"{where}: '{line}' does not read as 'path label' with an integer class index as label")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_below(folder: Path, others: list[str]) -> list[Path]:
    """Every image below ``folder`` (following links, each real folder once), sorted folder-wise;
    the names of other (non-hidden) files are appended to ``others``."""
    found: list[Path] = []
    seen: set[str] = set()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories[:] = []
            continue
        seen.add(real)
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found.extend(Path(directory) / name for name in files if _is_image(name))
        others.extend(name for name in sorted(files) if not name.startswith(".") and not _is_image(name))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _some(names: Sequence[str], shown: int = 3) -> str:
    """``'a', 'b', 'c' and 4 more``: enough names to find the problem, short enough for one line."""
    listed = ", ".join(f"'{name}'" for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


# ----------------------------------------------------------------------------- decoding


def load_image(
    path: str | os.PathLike, size: Size | None = None, channels: int = 3, min_size: int | Size | None = None
) -> torch.Tensor:
    """Decode one image into uint8 ``(channels, H, W)``: fully loaded (so truncation is caught),
    converted to grey (1) or RGB (3), then resized to ``size`` (H, W) with antialiased bilinear."""
    with _open(path) as image:
        if min_size is not None:
            _check_min_size(path, image.size, _as_size(min_size, "min_size"))
        try:
            image.load()
        except Exception as error:  # Pillow raises many types for broken files
            raise _unreadable(path, error) from error
        image = _convert(image, channels)
        if size is not None:
            height, width = _as_size(size, "size")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        return Image.open(path)
    except Exception as error:
        raise _unreadable(path, error) from error


def _unreadable(path: str | os.PathLike, error: Exception) -> UnreadableImage:
    reason = " ".join(str(error).split()) or type(error).__name__
    return UnreadableImage(f"cannot read image {path} ({reason}): replace or delete it, or skip such files with --set data.skip_bad_images=true")


def _check_min_size(path: str | os.PathLike, width_height: tuple[int, int], min_size: Size) -> None:
    width, height = width_height
    if height < min_size[0] or width < min_size[1]:
        raise DataError(
            f"image {path} is {width}x{height} pixels (width x height), smaller than min_size {min_size} (H, W): "
            "replace or remove it, or lower min_size"
        )


def _is_grey(mode: str) -> bool:
    return mode in {"1", "L", "LA", "La", "I", "F"} or mode.startswith("I;16")


def _convert(image: Image.Image, channels: int) -> Image.Image:
    """8-bit grey ``L`` (channels=1) or ``RGB`` (3); alpha is dropped, 16-bit grey scaled to 8 bits."""
    if image.mode == "I" or image.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF)
        scaled = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    elif image.mode in ("P", "PA"):  # via RGBA so palette transparency converts cleanly
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _as_size(size: int | Size, name: str) -> Size:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ConfigError(f"{name} must be two positive integers (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


# ----------------------------------------------------------------------------- in memory


def read_image_folder(
    path: str | os.PathLike,
    size: int | Size | None,
    classes: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
    min_size: int | Size | None = None,
) -> LoadedDomain:
    """Decode an image folder (see :func:`list_image_folder`) into one uint8 ``(N, C, H, W)`` tensor."""
    return read_listing(list_image_folder(path, classes), size, skip_bad_images, channels, min_size)


def read_image_list(
    list_file: str | os.PathLike,
    root: str | os.PathLike | None = None,
    size: int | Size | None = None,
    classes: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
    min_size: int | Size | None = None,
) -> LoadedDomain:
    """Decode the images of a list file (see :func:`list_image_list`) into one uint8 tensor."""
    return read_listing(list_image_list(list_file, root, classes), size, skip_bad_images, channels, min_size)


def read_listing(
    listing: ImageListing,
    size: int | Size | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
    min_size: int | Size | None = None,
) -> LoadedDomain:
    """Decode listed images once into uint8 ``(N, C, H, W)``.

    ``channels`` None: RGB if any image is in colour, else grey. ``size`` None: every image must
    already share one size. With ``skip_bad_images`` unreadable or truncated files are left out and
    counted in the notes instead of raising.
    """
    _check_channels(channels)
    if not listing.paths:
        raise DataError(f"{listing.origin or 'the listing'} lists no images")
    target_size = None if size is None else _as_size(size, "size")
    # Pass 1, headers only: the channel count and the common size are known before decoding.
    headers: dict[int, tuple[str, tuple[int, int], bool]] = {}
    bad: list[str] = []
    for i, path in enumerate(listing.paths):
        try:
            with _open(path) as image:
                headers[i] = (image.mode, image.size, image.mode in _ALPHA_MODES or "transparency" in image.info)
        except UnreadableImage:
            if not skip_bad_images:
                raise
            bad.append(path)
    if not headers:
        raise DataError(f"all {len(listing.paths)} images of {listing.origin} are unreadable, e.g. {bad[0]}: check the files")
    if channels is None:
        channels = 1 if all(_is_grey(mode) for mode, _, _ in headers.values()) else 3
    if target_size is None:
        first = {}
        for i, (_, width_height, _) in headers.items():
            first.setdefault(width_height, listing.paths[i])
        if len(first) > 1:
            (a, path_a), (b, path_b) = list(first.items())[:2]
            raise DataError(
                f"images of {listing.origin} differ in size ({path_a} is {a[0]}x{a[1]}, {path_b} is {b[0]}x{b[1]}, "
                f"width x height): pass size=(H, W), e.g. size=({a[1]}, {a[0]})"
            )
        width, height = next(iter(first))
        target_size = (height, width)
    # Pass 2: decode into one preallocated tensor.
    x = torch.empty((len(headers), channels, *target_size), dtype=torch.uint8)
    kept: list[int] = []
    for i in headers:
        try:
            x[len(kept)] = load_image(listing.paths[i], target_size, channels, min_size)
        except UnreadableImage:
            if not skip_bad_images:
                raise
            bad.append(listing.paths[i])
            continue
        kept.append(i)
    if not kept:
        raise DataError(f"all {len(listing.paths)} images of {listing.origin} are unreadable, e.g. {bad[0]}: check the files")
    if len(kept) < len(x):
        x = x[: len(kept)].clone()
    y = None if listing.labels is None else torch.tensor([listing.labels[i] for i in kept], dtype=torch.long)
    return LoadedDomain(
        x=x,
        y=y,
        classes=list(listing.classes) if y is not None else [],
        paths=[listing.paths[i] for i in kept],
        notes=listing.notes + _notes([headers[i] for i in kept], channels, bad),
        origin=listing.origin,
    )


def _notes(headers: list[tuple[str, tuple[int, int], bool]], channels: int, bad: list[str]) -> list[str]:
    grey = sum(_is_grey(mode) for mode, _, _ in headers)
    colour = len(headers) - grey
    alpha = sum(has_alpha for _, _, has_alpha in headers)
    notes = []
    if channels == 3 and grey:
        notes.append(f"converted {grey} grey image(s) to RGB")
    if channels == 1 and colour:
        notes.append(f"converted {colour} colour image(s) to grey")
    if alpha:
        notes.append(f"dropped the transparency (alpha channel) of {alpha} image(s)")
    if bad:
        notes.append(f"skipped {len(bad)} unreadable image(s): {_some(bad)}")
    return notes


# ----------------------------------------------------------------------------- streaming


class ImageFileDataset(torch.utils.data.Dataset):
    """Images decoded on access, returning ``(uint8 (C, H, W), label or -1)``, for a DataLoader with
    workers to stream a domain too large for memory. Give a ``size`` unless every image already
    shares one, or batches will not stack. Paths and labels are kept in numpy arrays, not Python
    lists, so forked workers do not copy them page by page through reference counting."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | None,
        size: int | Size | None,
        channels: int = 3,
        min_size: int | Size | None = None,
    ) -> None:
        _check_channels(channels)
        if labels is not None and len(labels) != len(paths):
            raise ConfigError(f"got {len(paths)} image paths but {len(labels)} labels")
        self.paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.size = None if size is None else _as_size(size, "size")
        self.channels = channels
        self.min_size = min_size

    @classmethod
    def from_listing(
        cls, listing: ImageListing, size: int | Size | None, channels: int = 3, min_size: int | Size | None = None
    ) -> ImageFileDataset:
        return cls(listing.paths, listing.labels, size, channels, min_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(os.fsdecode(self.paths[index]), self.size, self.channels, self.min_size)
        return image, -1 if self.labels is None else int(self.labels[index])


# ----------------------------------------------------------------------------- writing


def write_example_folders(
    out_dir: str | os.PathLike,
    source_x: np.ndarray,
    source_y: np.ndarray,
    target_x: np.ndarray,
    target_y: np.ndarray | None,
    target_test_x: np.ndarray,
    target_test_y: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Path]:
    """Write arrays as the folders a user would bring: ``source/<class>/NNNNN.png`` (labelled),
    ``target/NNNNN.png`` (flat, unlabelled) and ``target_test/<class>/NNNNN.png``.

    Images are uint8 ``(N, H, W)`` or ``(N, H, W, 3)``; file numbers are array indices. The target's
    labels, if given, go to ``target_labels.txt`` (an image list beside the folders, for checking
    only), never into the unlabelled folder.
    """
    out = Path(out_dir)
    folders = {"source": out / "source", "target": out / "target", "target_test": out / "target_test"}
    for folder in folders.values():
        if folder.exists() and any(folder.iterdir()):
            raise DataError(f"{folder} already exists and is not empty: remove it or choose another output folder")
    names = [str(name) for name in class_names]
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
            raise ConfigError(f"class name {name!r} cannot be a folder name: use names without slashes or a leading dot")
    _write_pngs(folders["source"], source_x, source_y, names)
    target_files = _write_pngs(folders["target"], target_x, None, names)
    _write_pngs(folders["target_test"], target_test_x, target_test_y, names)
    if target_y is not None:
        target_labels = _labels(target_y, len(target_files), len(names), "target_y")
        lines = [f"{p.relative_to(out).as_posix()} {label}\n" for p, label in zip(target_files, target_labels)]
        (out / "target_labels.txt").write_text("".join(lines), encoding="utf-8")
        folders["target_labels"] = out / "target_labels.txt"
    return folders


def _write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray | None, class_names: list[str]) -> list[Path]:
    images = np.asarray(images)
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DataError(
            f"images for {folder} must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    width = max(5, len(str(len(images) - 1)))
    if labels is None:
        subfolders = [folder] * len(images)
    else:
        indices = _labels(labels, len(images), len(class_names), f"labels for {folder}")
        subfolders = [folder / class_names[i] for i in indices]
        for name in class_names:
            (folder / name).mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (image, subfolder) in enumerate(zip(images, subfolders)):
        file = subfolder / f"{i:0{width}d}.png"
        Image.fromarray(image).save(file)
        files.append(file)
    return files


def _labels(labels: np.ndarray, n: int, n_classes: int, name: str) -> list[int]:
    values = np.asarray(labels)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
        raise DataError(f"{name} must be {n} integer class indices, got {values.dtype} {tuple(values.shape)}")
    if n and (values.min() < 0 or values.max() >= n_classes):
        raise DataError(f"{name} must lie in 0..{n_classes - 1} (one per class name), got {values.min()}..{values.max()}")
    return values.tolist()
