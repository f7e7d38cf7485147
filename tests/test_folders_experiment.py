"""`dann run folders` end to end on generated image folders: outputs, labels, backbones, and bad data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dann.cli import main
from dann.experiments import get_experiment, resolve_config
from dann.experiments import mnist_mnistm as mm

FAST = ["--set", "train.steps=4", "--set", "train.batch_size=4", "--set", "train.eval_every=2", "--set", "threads=1",
        "--set", "train.progress_bar=false", "--set", "probe_samples=0"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def image(label: int, size: int, rng: np.random.Generator, grey: bool = False, shift: int = 0) -> Image.Image:
    """A noisy image with a bright vertical band whose position is the class; ``shift`` brightens the background (a domain shift)."""
    pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8) + shift
    band = size // 3
    pixels[:, label * band : (label + 1) * band] = 200
    return Image.fromarray(pixels[:, :, 0] if grey else pixels, "L" if grey else "RGB")


def write_domain(folder: Path, labelled: bool, n_per_class: int = 4, size: int = 16, grey: bool = False, shift: int = 0, seed: int = 0) -> Path:
    """``folder/<c>/i.png`` (labelled) or ``folder/c_i.png`` (flat), three classes."""
    rng = np.random.default_rng(seed)
    for label in range(3):
        where = folder / f"class{label}" if labelled else folder
        where.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            image(label, size, rng, grey, shift).save(where / f"{label}_{i}.png")
    return folder


def run(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "run"
    return main(["run", "folders", *FAST, *args, "--out", str(out)]), out


def test_unlabelled_target_end_to_end(tmp_path, capsys):
    source = write_domain(tmp_path / "source", labelled=True)
    target = write_domain(tmp_path / "target", labelled=False, shift=40, seed=1)
    code, out = run(tmp_path, "--set", f"data.source={source}", "--set", f"data.target={target}")
    assert code == 0
    for path in ("summary.json", "config.yaml", "metrics/dann.jsonl", "metrics/source_only.jsonl", "plots/samples.png",
                 "plots/curves.png", "plots/pca_dann.png", "checkpoints/dann.pt", "checkpoints/source_only.pt"):
        assert (out / path).is_file(), path
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target_labels"] is False
    assert set(summary["results"]) == {"source_only", "dann"}
    assert all("target_acc" not in r and "source_acc" in r and "target_im" in r for r in summary["results"].values())
    captured = capsys.readouterr()
    table_rows = [line for line in captured.out.splitlines() if line.startswith(("dann ", "source_only "))]
    assert len(table_rows) == 2 and all(row.split()[2] == "-" for row in table_rows)  # target_acc column
    assert "target " in captured.err and "(unlabelled)" in captured.err  # what was read, said once


def test_labelled_target_is_held_out_and_scored(tmp_path):
    source = write_domain(tmp_path / "source", labelled=True, n_per_class=5)
    target = write_domain(tmp_path / "target", labelled=True, n_per_class=5, shift=40, seed=1)
    code, out = run(tmp_path, "--set", f"data.source={source}", "--set", f"data.target={target}", "--set", "modes=[dann]",
                    "--set", "data.holdout=0.2")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target_labels"] is True and 0.0 <= summary["results"]["dann"]["target_acc"] <= 1.0


def test_flat_target_with_labelled_target_test_grey_source_and_resize(tmp_path):
    """The layout of `dann data make-folders`: grey source classes, flat colour target, labelled target_test of another size."""
    source = write_domain(tmp_path / "source", labelled=True, grey=True)
    target = write_domain(tmp_path / "target", labelled=False, shift=40, seed=1)
    target_test = write_domain(tmp_path / "target_test", labelled=True, size=20, shift=40, seed=2)
    cfg = resolve_config(get_experiment("folders"), {"data": {
        "source": str(source), "target": str(target), "target_test": str(target_test), "size": [16, 16], "holdout": 0,
    }})
    data = get_experiment("folders").load_data(cfg, None)
    assert data.input_shape == (3, 16, 16)  # grey widened to RGB, resized
    assert data.source_test.x is data.source_train.x  # holdout 0: evaluated on the training images (decoded once)
    assert not data.target_train.labelled and data.target_test.labelled and len(data.target_test) == 12
    code, out = run(tmp_path, *[f"--set=data.{k}={v}" for k, v in (("source", source), ("target", target), ("target_test", target_test))],
                    "--set", "data.size=[16,16]", "--set", "modes=[dann]")
    assert code == 0 and "target_acc" in json.loads((out / "summary.json").read_text())["results"]["dann"]


def test_image_list_source_and_seeded_holdout(tmp_path):
    write_domain(tmp_path / "images", labelled=True)
    lines = [f"{p.relative_to(tmp_path).as_posix()} {int(p.parent.name[-1])}" for p in sorted((tmp_path / "images").rglob("*.png"))]
    (tmp_path / "source.txt").write_text("\n".join(lines) + "\n")
    target = write_domain(tmp_path / "target", labelled=False, seed=1)
    overrides = {"data": {"source": str(tmp_path / "source.txt"), "target": str(target), "holdout": 0.25}}
    experiment = get_experiment("folders")
    first = experiment.load_data(resolve_config(experiment, overrides), None)
    again = experiment.load_data(resolve_config(experiment, overrides), None)
    assert (len(first.source_train), len(first.source_test)) == (9, 3)
    assert torch.equal(first.source_test.x, again.source_test.x)  # same seed, same held-out images
    other = experiment.load_data(resolve_config(experiment, {**overrides, "seed": 1}), None)
    assert not torch.equal(first.source_test.x, other.source_test.x)


def test_resnet18_trains_on_64px_folders(tmp_path):
    source = write_domain(tmp_path / "source", labelled=True, size=64)
    target = write_domain(tmp_path / "target", labelled=False, size=64, shift=40, seed=1)
    code, out = run(tmp_path, "--set", f"data.source={source}", "--set", f"data.target={target}",
                    "--set", "model.network=resnet18", "--set", "model.bottleneck=32", "--set", "modes=[dann]")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["dann"]["train_seconds"] > 0
    state = torch.load(out / "checkpoints" / "dann.pt", weights_only=False)
    assert any("backbone.model.layer4" in key for key in state["method"])  # the whole network trained


def test_frozen_resnet50_trains_heads_on_cached_features(tmp_path):
    source = write_domain(tmp_path / "source", labelled=True, size=64)
    target = write_domain(tmp_path / "target", labelled=False, size=64, shift=40, seed=1)
    code, out = run(tmp_path, "--set", f"data.source={source}", "--set", f"data.target={target}",
                    "--set", "model.network=resnet50", "--set", "model.freeze_backbone=true", "--set", "model.bottleneck=32")
    assert code == 0
    state = torch.load(out / "checkpoints" / "dann.pt", weights_only=False)
    assert not any("layer4" in key for key in state["method"])  # heads only: the backbone ran once, before training
    assert set(json.loads((out / "summary.json").read_text())["results"]) == {"source_only", "dann"}


def bad_folders(tmp_path: Path) -> dict[str, Path]:
    good = write_domain(tmp_path / "good", labelled=True)
    flat = write_domain(tmp_path / "flat", labelled=False)
    broken = write_domain(tmp_path / "broken", labelled=False)
    (broken / "zz.png").write_bytes(b"not an image")
    bigger = write_domain(tmp_path / "bigger", labelled=False, size=20)
    other_classes = write_domain(tmp_path / "other", labelled=True)
    (other_classes / "class2").rename(other_classes / "class9")
    (tmp_path / "empty").mkdir()
    one_class = tmp_path / "one" / "only"
    one_class.mkdir(parents=True)
    image(0, 16, np.random.default_rng(0)).save(one_class / "a.png")
    (tmp_path / "bad.txt").write_text("good/class0/0_0.png zero\n")
    return {"good": good, "flat": flat, "broken": broken, "bigger": bigger, "other": other_classes,
            "empty": tmp_path / "empty", "one": tmp_path / "one", "list": tmp_path / "bad.txt", "missing": tmp_path / "nope"}


@pytest.mark.parametrize(
    "source, target, extra, message",
    [
        ("missing", "flat", [], "image folder {missing} not found"),
        ("empty", "flat", [], "holds no images"),
        ("flat", "flat", [], "is unlabelled: a source needs labels"),
        ("one", "flat", [], "has 1 class(es)"),
        ("good", "broken", [], "cannot read image {broken}/zz.png"),
        ("good", "other", [], "class folders of {other} differ from the source's classes"),
        ("good", "bigger", [], "source images are 16x16 but target_train images 20x20"),
        ("list", "flat", [], "does not read as 'path label'"),
        ("good", "flat", ["data.holdout=0.99"], "too few to hold out"),
        (None, "flat", [], "set data.source=DIR"),
        ("good", "flat", ["model.network=resnet18", "data.channels=1"], "takes RGB images"),
        ("good", "flat", ["model.network=resnet18", "model.freeze_backbone=true", "data.augment=flip"], "cannot be augmented"),
        ("good", "flat", ["model.network=resnet18", "model.weights=/no/such/file.pt"], "is not a file, 'imagenet' or a weights name"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_leaves_no_run_directory(tmp_path, capsys, source, target, extra, message):
    paths = bad_folders(tmp_path)
    args = [f"--set=data.target={paths[target]}", *[f"--set={e}" for e in extra]]
    if source is not None:
        args.append(f"--set=data.source={paths[source]}")
    code, out = run(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("dann: error:")]
    assert len(error_lines) == 1 and message.format(**paths) in error_lines[0], err
    assert "Traceback" not in err
    assert not out.exists()  # nothing for --resume to misread


def test_a_given_empty_output_directory_is_left_empty_after_bad_data(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    assert main(["run", "folders", *FAST, "--set", f"data.source={tmp_path / 'nope'}", "--set", f"data.target={tmp_path}", "--out", str(out)]) == 2
    assert out.is_dir() and [p.name for p in out.iterdir()] == [".lock"]  # the lock file stays; it blocks nothing


def fake_loaders(monkeypatch) -> None:
    """Tiny random MNIST / MNIST-M with the real shapes, for both routes."""

    def load_mnist(split, data_dir=None):
        rng = np.random.default_rng(0 if split == "train" else 1)
        n = 40 if split == "train" else 20
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10

    def load_mnistm(split, data_dir=None, seed=0):
        rng = np.random.default_rng(2 if split == "train" else 3)
        n = 40 if split == "train" else 20
        return rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10

    monkeypatch.setattr(mm, "load_mnist", load_mnist)
    monkeypatch.setattr(mm, "load_mnistm", load_mnistm)


def as_set(x: torch.Tensor, y: torch.Tensor | None) -> list[bytes]:
    return sorted(image.contiguous().numpy().tobytes() + (b"" if y is None else bytes([int(label)])) for image, label in
                  zip(x, y if y is not None else [None] * len(x)))


def test_make_folders_holds_the_images_mnist_mnistm_trains_on(tmp_path, monkeypatch, capsys):
    fake_loaders(monkeypatch)
    assert main(["data", "make-folders", "--out", str(tmp_path / "digits"), "--train-limit", "30", "--test-limit", "15"]) == 0
    assert "dann run folders" in capsys.readouterr().out
    folders = get_experiment("folders")
    cfg = resolve_config(folders, {"recipe": "digits", "data": {
        "source": str(tmp_path / "digits" / "source"), "target": str(tmp_path / "digits" / "target"),
        "target_test": str(tmp_path / "digits" / "target_test"), "holdout": 0}})
    from_folders = folders.load_data(cfg, None)
    mnist = get_experiment("mnist-mnistm")
    from_arrays = mnist.load_data(resolve_config(mnist, {"data": {"train_limit": 30, "test_limit": 15}}), None)
    assert as_set(from_folders.source_train.x, from_folders.source_train.y) == as_set(from_arrays.source_train.x, from_arrays.source_train.y)
    assert as_set(from_folders.target_train.x, None) == as_set(from_arrays.target_train.x, None)
    assert as_set(from_folders.target_test.x, from_folders.target_test.y) == as_set(from_arrays.target_test.x, from_arrays.target_test.y)
    # the digits recipe is the mnist-mnistm defaults: same normalisation, augmentation, network and training
    assert type(from_folders.prepare) is type(from_arrays.prepare) and type(from_folders.augment) is type(from_arrays.augment)
    mnist_cfg = resolve_config(mnist, {})
    assert cfg.train == mnist_cfg.train and cfg.method == mnist_cfg.method and cfg.model == mnist_cfg.model


def test_a_network_that_fails_to_build_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    """Past data loading, before the first checkpoint: ImageNet weights absent from torch.hub's cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    source = write_domain(tmp_path / "source", labelled=True)
    target = write_domain(tmp_path / "target", labelled=False)
    code, out = run(tmp_path, f"--set=data.source={source}", f"--set=data.target={target}",
                    "--set=model.network=resnet18", "--set=model.weights=imagenet")
    assert code == 2 and "ImageNet weights for resnet18 are not in" in capsys.readouterr().err
    assert not out.exists()
