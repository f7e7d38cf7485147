from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import raises_one_line
from PIL import Image, features

from dann.data.folders import (
    ImageFileDataset,
    UnreadableImage,
    list_image_folder,
    list_image_list,
    load_image,
    read_image_folder,
    read_image_list,
    write_example_folders,
)
from dann.data.loaded import check_source
from dann.errors import ConfigError, DataError


def save(path: Path, value: int = 0, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """A uniform image of ``size`` (width, height) whose first channel is ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"L": value, "RGB": (value, 10, 20), "RGBA": (value, 10, 20, 128)}[mode]
    Image.new(mode, size, colour).save(path)
    return path


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    save(root / "dog" / "b.png", 30)
    save(root / "dog" / "a.png", 20)
    save(root / "cat" / "x.png", 10)
    save(root / "cat" / "deeper" / "y.jpg", 40)  # images anywhere below the class folder count
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    save(root / "dog" / ".DS_Store.png", 99)
    return root


# --------------------------------------------------------------------------- happy paths


def test_labelled_folder_shapes_labels_and_order(labelled):
    domain = read_image_folder(labelled, size=None)
    assert domain.x.dtype == torch.uint8 and domain.x.shape == (4, 3, 8, 8)
    assert domain.y.dtype == torch.int64 and domain.y.tolist() == [0, 0, 1, 1]
    assert domain.classes == ["cat", "dog"]
    assert [Path(p).name for p in domain.paths] == ["y.jpg", "x.png", "a.png", "b.png"]  # deeper/y.jpg sorts by its folder
    assert domain.x[2, 0].unique().tolist() == [20] and domain.x[3, 0].unique().tolist() == [30]
    assert domain.notes == ["ignored 1 file(s) that are not images: 'notes.txt'"] and domain.origin == str(labelled)
    again = read_image_folder(labelled, size=None)
    assert again.paths == domain.paths and torch.equal(again.x, domain.x)
    check_source(domain)


def test_flat_folder_is_unlabelled(tmp_path):
    for name in ["b.png", "a.PNG", "c.bmp"]:
        save(tmp_path / name)
    domain = read_image_folder(tmp_path, size=(8, 8))
    assert domain.y is None and domain.classes == [] and not domain.labelled
    assert [Path(p).name for p in domain.paths] == ["a.PNG", "b.png", "c.bmp"]


def test_given_classes_set_the_label_indices(labelled):
    domain = read_image_folder(labelled, size=None, classes=["dog", "cat"])
    assert domain.classes == ["dog", "cat"] and domain.y.tolist() == [0, 0, 1, 1]
    assert Path(domain.paths[0]).name == "a.png"


def test_given_classes_allow_an_empty_class_folder(labelled):
    (labelled / "fox").mkdir()
    domain = read_image_folder(labelled, size=None, classes=["cat", "dog", "fox"])
    assert domain.classes == ["cat", "dog", "fox"] and len(domain) == 4


def test_grey_and_colour_become_rgb_with_one_note(tmp_path):
    save(tmp_path / "a.png", 50, mode="L")
    save(tmp_path / "b.png", 60, mode="L")
    save(tmp_path / "c.png", 70, mode="RGB")
    domain = read_image_folder(tmp_path, size=None)
    assert domain.x.shape == (3, 3, 8, 8)
    assert domain.notes == ["converted 2 grey image(s) to RGB"]
    assert domain.x[0].unique().tolist() == [50]  # grey copied into all three channels


def test_all_grey_stays_one_channel_and_channels_converts(tmp_path):
    save(tmp_path / "a.png", 50, mode="L")
    assert read_image_folder(tmp_path, size=None).x.shape == (1, 1, 8, 8)
    assert read_image_folder(tmp_path, size=None, channels=3).x.shape == (1, 3, 8, 8)
    save(tmp_path / "b.png", 50, mode="RGB")
    grey = read_image_folder(tmp_path, size=None, channels=1)
    assert grey.x.shape == (2, 1, 8, 8) and grey.notes == ["converted 1 colour image(s) to grey"]


def test_alpha_is_dropped_with_a_note(tmp_path):
    save(tmp_path / "a.png", 50, mode="RGBA")
    domain = read_image_folder(tmp_path, size=None)
    assert domain.x.shape == (1, 3, 8, 8) and domain.x[0, 0].unique().tolist() == [50]
    assert any("alpha" in note for note in domain.notes)


def test_resize_any_sizes_to_one(tmp_path):
    save(tmp_path / "a.png", 100, size=(32, 20))
    save(tmp_path / "b.png", 200, size=(9, 31))
    domain = read_image_folder(tmp_path, size=(16, 12))
    assert domain.x.shape == (2, 3, 16, 12)
    assert domain.x[0, 0].unique().tolist() == [100]  # a uniform image stays uniform


def test_resize_antialiases(tmp_path):
    stripes = np.zeros((32, 32), dtype=np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    small = read_image_folder(tmp_path, size=(8, 8)).x.float()
    assert 100 < small.mean() < 155 and small.std() < 20  # averaged, not aliased to black or white


def test_formats(tmp_path):
    formats = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff"] + (["webp"] if features.check("webp") else [])
    for i, ext in enumerate(formats):
        save(tmp_path / f"{i}.{ext}", 128)
    domain = read_image_folder(tmp_path, size=(8, 8), channels=3)
    assert len(domain) == len(formats) and domain.x.dtype == torch.uint8


def test_sixteen_bit_grey_is_scaled(tmp_path):
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert read_image_folder(tmp_path, size=None).x.unique().tolist() == [255]


def test_skip_bad_images_counts_them(tmp_path):
    for i in range(3):
        save(tmp_path / f"good{i}.png", 10 * i, size=(32, 32))
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    noisy = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "truncated.png")
    data = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])

    raises_one_line(UnreadableImage, "garbage.png", read_image_folder, tmp_path, size=None)
    (tmp_path / "garbage.png").unlink()
    raises_one_line(UnreadableImage, "truncated.png", read_image_folder, tmp_path, size=None)
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    domain = read_image_folder(tmp_path, size=None, skip_bad_images=True)
    assert len(domain) == 3 and all("good" in p for p in domain.paths)
    assert len(domain.notes) == 1 and domain.notes[0].startswith("skipped 2 unreadable image(s)")


def test_all_bad_is_an_error_even_when_skipping(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    raises_one_line(DataError, "all 1 images", read_image_folder, tmp_path, size=None, skip_bad_images=True)


def test_list_file_labelled_relative_to_its_folder(tmp_path):
    save(tmp_path / "imgs" / "a.png", 1)
    save(tmp_path / "imgs" / "b c.png", 2)  # a path with a space
    (tmp_path / "list.txt").write_text("# comment\nimgs/a.png 2\n\nimgs/b c.png 0\n")
    domain = read_image_list(tmp_path / "list.txt", size=(8, 8))
    assert domain.y.tolist() == [2, 0] and domain.classes == ["0", "1", "2"]
    assert [Path(p).name for p in domain.paths] == ["a.png", "b c.png"]
    named = read_image_list(tmp_path / "list.txt", size=(8, 8), classes=["x", "y", "z"])
    assert named.classes == ["x", "y", "z"]


def test_list_file_unlabelled_with_root(tmp_path):
    save(tmp_path / "data" / "a.png")
    save(tmp_path / "data" / "b.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "target.txt").write_text("b.png\na.png\n")
    listing = list_image_list(tmp_path / "lists" / "target.txt", root=tmp_path / "data")
    assert listing.labels is None and [Path(p).name for p in listing.paths] == ["b.png", "a.png"]
    domain = read_image_list(tmp_path / "lists" / "target.txt", root=tmp_path / "data", size=None)
    assert domain.y is None and domain.classes == []


def test_streaming_dataset_matches_in_memory(labelled):
    domain = read_image_folder(labelled, size=(6, 6))
    dataset = ImageFileDataset.from_listing(list_image_folder(labelled), size=(6, 6), channels=3)
    assert len(dataset) == len(domain)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1)
    images, labels = zip(*loader)
    assert torch.equal(torch.cat(images), domain.x) and torch.cat(labels).tolist() == domain.y.tolist()
    flat = ImageFileDataset(domain.paths[:1], None, size=6)
    image, label = flat[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 6) and label == -1
    assert load_image(domain.paths[0], (6, 6), 3).shape == (3, 6, 6)


def test_write_example_folders_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 10, 12), dtype=np.uint8)
    colour = rng.integers(0, 256, (4, 10, 12, 3), dtype=np.uint8)
    labels6 = np.array([0, 1, 2, 0, 1, 2])
    out = write_example_folders(
        tmp_path, grey, labels6, colour, np.array([2, 2, 1, 0]), colour[:3], np.array([1, 0, 1]), ["a", "b", "c"]
    )
    source = read_image_folder(out["source"], size=None)
    assert source.classes == ["a", "b", "c"] and source.x.shape == (6, 1, 10, 12)
    order = np.argsort(labels6, kind="stable")
    assert torch.equal(source.x[:, 0], torch.from_numpy(grey[order])) and source.y.tolist() == labels6[order].tolist()
    target = read_image_folder(out["target"], size=None)
    assert target.y is None and torch.equal(target.x, torch.from_numpy(colour).permute(0, 3, 1, 2))
    test = read_image_folder(out["target_test"], size=None, classes=source.classes)
    assert test.y.tolist() == [0, 1, 1]  # the empty class folder 'c' is allowed
    assert read_image_list(out["target_labels"], size=None).y.tolist() == [2, 2, 1, 0]
    raises_one_line(DataError, "not empty", write_example_folders, tmp_path, grey, labels6, colour, None, colour, [0] * 4, "abc")


# --------------------------------------------------------------------------- bad data


def test_missing_folder(tmp_path):
    raises_one_line(DataError, "nowhere not found", read_image_folder, tmp_path / "nowhere", size=None)


def test_empty_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    raises_one_line(DataError, "holds no images", read_image_folder, tmp_path, size=None)


def test_loose_images_beside_class_folders(labelled):
    save(labelled / "stray.png")
    raises_one_line(DataError, "mixes loose images ('stray.png')", read_image_folder, labelled, size=None)


def test_empty_class_folder_in_source(labelled):
    (labelled / "fox").mkdir()
    raises_one_line(DataError, "'fox'", read_image_folder, labelled, size=None)


def test_class_folders_must_match_the_source(labelled):
    message = raises_one_line(DataError, "missing 'bird'", read_image_folder, labelled, size=None, classes=["bird", "cat"])
    assert "extra 'dog'" in message


def test_sizes_differ_without_size(tmp_path):
    save(tmp_path / "a.png", size=(8, 8))
    save(tmp_path / "b.png", size=(10, 8))
    raises_one_line(DataError, "pass size=(H, W)", read_image_folder, tmp_path, size=None)


def test_image_below_min_size(tmp_path):
    save(tmp_path / "big.png", size=(16, 16))
    save(tmp_path / "tiny.png", size=(4, 6))
    message = raises_one_line(DataError, "tiny.png is 4x6 pixels", read_image_folder, tmp_path, size=(8, 8), min_size=8)
    assert "min_size" in message
    assert len(read_image_folder(tmp_path, size=(8, 8), min_size=(6, 4))) == 2


def test_source_with_one_class_or_no_labels(tmp_path):
    save(tmp_path / "only" / "a.png")
    one = read_image_folder(tmp_path, size=None)
    raises_one_line(DataError, "at least 2 labelled classes", check_source, one)
    flat = read_image_folder(tmp_path / "only", size=None)
    raises_one_line(DataError, "is unlabelled", check_source, flat)


def test_list_file_errors(tmp_path):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    lst = tmp_path / "list.txt"
    raises_one_line(DataError, "list.txt not found", read_image_list, lst)
    lst.write_text("a.png 0\nb.png\n")
    raises_one_line(DataError, "line 2 has no label but line 1 has one", read_image_list, lst)
    lst.write_text("a.png\nb.png 1\n")
    raises_one_line(DataError, "line 1 has no label but line 2 has one", read_image_list, lst)
    lst.write_text("a.png 0\nmissing.png 1\n")
    raises_one_line(DataError, "line 2: image", read_image_list, lst)
    lst.write_text("a.png cat\n")
    raises_one_line(DataError, "line 1", read_image_list, lst)
    lst.write_text("a.png -1\n")
    raises_one_line(DataError, "negative", read_image_list, lst)
    lst.write_text("a.png 3\n")
    raises_one_line(DataError, "out of range", read_image_list, lst, classes=["x", "y"])
    lst.write_text("# nothing\n")
    raises_one_line(DataError, "lists no images", read_image_list, lst)


def test_bad_settings(tmp_path):
    save(tmp_path / "a.png")
    raises_one_line(ConfigError, "channels", read_image_folder, tmp_path, size=None, channels=2)
    raises_one_line(ConfigError, "size", read_image_folder, tmp_path, size=(0, 8))
