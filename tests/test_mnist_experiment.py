"""The MNIST -> MNIST-M experiment: data preparation, a short training run, the CLI end to end."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, needs_shared_data

from dann.cli import main
from dann.data import mnist
from dann.evaluate.metrics import class_accuracy, extract_features
from dann.experiments import get_experiment, resolve_config
from dann.experiments import mnist_mnistm as mm
from dann.fit import build_network, fit


@pytest.fixture(scope="session")
def mnistm_cache(tmp_path_factory) -> Path:
    """One MNIST-M build (~7 s), through ``dann data build``, shared by every test that reads it."""
    cache = tmp_path_factory.mktemp("dann-cache")
    assert main(["data", "build", "mnistm", "--data-dir", str(SHARED_DATA), "--cache-dir", str(cache)]) == 0
    assert (cache / "mnistm" / "mnistm_seed0.npz").is_file()
    return cache


@pytest.fixture
def real_data(mnistm_cache, monkeypatch) -> Path:
    monkeypatch.setenv("DANN_CACHE", str(mnistm_cache))
    return SHARED_DATA


def fake_loaders(monkeypatch) -> None:
    """Tiny random MNIST / MNIST-M in memory: the experiment's own code path, no files."""
    rng = np.random.default_rng(0)

    def load_mnist(split, data_dir=None):
        n = 40 if split == "train" else 20
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)

    def load_mnistm(split, data_dir=None, seed=0):
        n = 40 if split == "train" else 20
        return rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)

    monkeypatch.setattr(mm, "load_mnist", load_mnist)
    monkeypatch.setattr(mm, "load_mnistm", load_mnistm)


def test_prepared_batch_is_mean_centred_float_nchw(monkeypatch):
    fake_loaders(monkeypatch)
    experiment = get_experiment("mnist-mnistm")
    cfg = resolve_config(experiment, {"data": {"train_limit": 30, "normalise": "channel_mean"}})
    data = experiment.load_data(cfg, None)
    # Stored compact: uint8 NCHW; grey MNIST replicated to 3 channels, 30 of 40 images kept.
    assert data.source_train.x.dtype == data.target_train.x.dtype == torch.uint8
    assert data.source_train.x.shape == data.target_train.x.shape == (30, 3, 28, 28)
    assert data.source_test.x.shape == (20, 3, 28, 28)
    assert torch.equal(data.source_train.x[:, 0], data.source_train.x[:, 2])

    both = torch.cat([data.source_train.x, data.target_train.x])
    prepared = data.prepare(both)
    assert prepared.dtype == torch.float32 and prepared.shape == (60, 3, 28, 28)
    assert prepared.is_contiguous(memory_format=torch.channels_last)
    # Centred per channel over the training images of both domains, on a 0..1 scale.
    torch.testing.assert_close(prepared.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    mean = both.double().mean(dim=(0, 2, 3)).float().reshape(1, 3, 1, 1)
    torch.testing.assert_close(prepared, (both.float() - mean) / 255)


def test_per_image_normalisation_standardises_each_image(monkeypatch):
    fake_loaders(monkeypatch)
    experiment = get_experiment("mnist-mnistm")
    data = experiment.load_data(resolve_config(experiment, {"data": {"normalise": "per_image"}}), None)
    images = torch.cat([data.source_train.x[:5], data.target_train.x[:5], torch.zeros(1, 3, 28, 28, dtype=torch.uint8)])
    prepared = data.prepare(images)
    assert prepared.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(prepared).all()  # a blank image does not divide by zero
    torch.testing.assert_close(prepared.mean(dim=(1, 2, 3)), torch.zeros(11), atol=1e-5, rtol=0)
    std = images[:10].float().std(dim=(1, 2, 3))
    torch.testing.assert_close(prepared[:10].std(dim=(1, 2, 3)), std / (std + 1))
    # Brightness and contrast are gone: an image and its affine rescaling prepare alike.
    rescaled = (images[:10].float() * 0.5 + 60).round().to(torch.uint8)
    torch.testing.assert_close(data.prepare(rescaled), prepared[:10], atol=0.06, rtol=0)


def test_polarity_normalisation_makes_strokes_bright_in_every_channel(monkeypatch):
    fake_loaders(monkeypatch)
    experiment = get_experiment("mnist-mnistm")
    data = experiment.load_data(resolve_config(experiment, {"data": {"normalise": "polarity", "augment": "none"}}), None)
    stroke = torch.zeros(28, 28, dtype=torch.bool)
    stroke[4:24, 12:15] = True  # a "1": few pixels, far from the background level
    image = torch.empty(1, 3, 28, 28, dtype=torch.uint8)
    image[0, 0] = torch.where(stroke, 250, 20)  # light stroke on dark
    image[0, 1] = torch.where(stroke, 10, 200)  # dark stroke on light: flipped
    image[0, 2] = torch.where(stroke, 120, 90)  # faint light stroke
    prepared = data.prepare(torch.cat([image, torch.zeros(1, 3, 28, 28, dtype=torch.uint8)]))
    assert prepared.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(prepared).all()
    for channel in prepared[0]:
        assert channel[stroke].min() > 0 > channel[~stroke].max()
        torch.testing.assert_close(channel.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)


def test_training_batches_are_inverted_at_random_and_evaluation_batches_never(monkeypatch):
    fake_loaders(monkeypatch)
    experiment = get_experiment("mnist-mnistm")
    data = experiment.load_data(resolve_config(experiment, {}), None)
    prepared = data.prepare(data.target_train.x)
    torch.manual_seed(0)
    augmented = data.augment(prepared)
    negated = (augmented == -prepared).flatten(1).all(1)
    assert 0 < int(negated.sum()) < len(prepared)
    assert torch.equal(augmented[~negated], prepared[~negated])
    plain = experiment.load_data(resolve_config(experiment, {"data": {"augment": "none"}}), None)
    assert torch.equal(plain.augment(prepared), prepared)
    coloured = experiment.load_data(resolve_config(experiment, {"data": {"augment": "colour"}}), None)
    jittered = coloured.augment(prepared)
    assert jittered.shape == prepared.shape and not torch.equal(jittered, prepared)


def test_intermediate_domain_blends_each_digit_with_its_mnistm_image(monkeypatch):
    fake_loaders(monkeypatch)
    digits, labels = mm.load_mnist("train")
    coloured, _ = mm.load_mnistm("train")
    monkeypatch.setattr(mm, "load_mnist", lambda split, data_dir=None: (digits, labels))
    monkeypatch.setattr(mm, "load_mnistm", lambda split, data_dir=None, seed=0: (coloured, labels))
    experiment = get_experiment("mnist-mnistm")
    cfg = resolve_config(experiment, {"data": {"intermediate": 0.25}, "method": {"domain_loss": "ce"}})
    data = experiment.load_data(cfg, None)
    (between,) = data.extra_domains
    assert between.name == "intermediate" and not between.labelled and data.n_domains == 3
    expected = np.rint(0.75 * digits[..., None].astype(np.float32) + 0.25 * coloured).astype(np.uint8)
    assert torch.equal(between.train.x, torch.from_numpy(expected).permute(0, 3, 1, 2))
    model = build_network(data, "dann", cfg.model, cfg.method)
    assert model.domain_classifier[-1].out_features == 3


def test_recipes_and_partial_overrides():
    experiment = get_experiment("mnist-mnistm")
    paper = resolve_config(experiment, {"recipe": "paper"})
    assert (paper.train.optimizer, paper.train.lr, paper.train.momentum, paper.train.batch_size) == ("sgd", 0.01, 0.9, 128)
    assert (paper.train.lr_schedule, paper.train.lambda_schedule, paper.model.domain_hidden) == ("paper", "paper", [100])
    assert (paper.data.normalise, paper.data.augment, paper.train.ema_decay) == ("channel_mean", "none", 0.0)
    assert paper.method.label_smoothing == 0.0 and resolve_config(experiment, {}).method.label_smoothing == 0.1
    # A partial section keeps the experiment's other defaults (progress bar on, its batch size).
    quick = resolve_config(experiment, {"train": {"steps": 7}})
    default = resolve_config(experiment, {})
    assert quick.train.steps == 7 and quick.train.progress_bar
    assert quick.train.batch_size == default.train.batch_size


@needs_shared_data
def test_short_dann_run_beats_chance(real_data):
    experiment = get_experiment("mnist-mnistm")
    cfg = resolve_config(
        experiment,
        {"data": {"train_limit": 2000, "test_limit": 500}, "train": {"steps": 50, "batch_size": 64, "progress_bar": False}},
    )
    data = experiment.load_data(cfg, str(real_data))
    method = fit(data, "dann", model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed).method
    accuracy = {
        domain: class_accuracy(method, extract_features(method, split.x, data.prepare, domain), split.y)
        for domain, split in (("source", data.source_test), ("target", data.target_test))
    }
    assert accuracy["source"] > 0.5, accuracy  # chance is 0.1
    assert accuracy["target"] > 0.15, accuracy


@needs_shared_data
def test_cli_run_writes_every_output(real_data, tmp_path):
    out = tmp_path / "run"
    code = main([
        "run", "mnist-mnistm", "--out", str(out), "--data-dir", str(real_data),
        "--set", "data.train_limit=300", "--set", "data.test_limit=150", "--set", "probe_samples=100",
        "--set", "train.steps=4", "--set", "train.batch_size=32", "--set", "train.log_every=2",
        "--set", "train.eval_every=2", "--set", "train.progress_bar=false",
    ])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    modes = ["source_only", "dann", "dann_deep", "target_only"]
    assert list(summary["results"]) == modes
    for scores in summary["results"].values():
        assert {"source_acc", "target_acc", "domain_acc", "train_seconds", "images_per_second"} <= set(scores)
        assert scores["images_per_second"] > 0
    for name in ["samples.png", "curves.png", *(f"tsne_{m}.png" for m in modes)]:
        assert (out / "plots" / name).stat().st_size > 0, name
    for m in modes:
        assert list((out / "tb" / m).glob("events.out.tfevents.*")), m
        assert (out / "metrics" / f"{m}.jsonl").stat().st_size > 0


def test_cli_missing_data_names_the_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANN_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["run", "mnist-mnistm", "--out", str(tmp_path / "run"), "--data-dir", str(empty)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "train-images-idx3-ubyte" in err and str(empty / "mnist") in err

    assert main(["data", "build", "mnistm", "--data-dir", str(empty)]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err


def test_cli_fetch_offline_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))  # nothing listens on port 9
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("dann: downloading ") for line in lines[:-1])  # progress, then one error line
    assert lines[-1].startswith("dann: error:") and "could not be downloaded" in lines[-1]


@needs_shared_data
def test_cli_fetch_with_files_present_needs_no_network(tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(SHARED_DATA / "mnist", data_dir / "mnist")
    assert main(["data", "fetch", "mnist", "--data-dir", str(data_dir)]) == 0  # all present: no download
    assert str(data_dir / "mnist") in capsys.readouterr().out


def test_the_label_free_recipe_is_the_sweep_winner_it_names():
    """`--recipe label-free --seed 1` trains what docs/results/label-free-pick.md's held-out sweep picked (trial 5)."""
    import yaml

    from dann.config import to_dict
    from dann.experiments.sweep import Sweep

    root = Path(__file__).resolve().parents[1]
    base = {"seed": 1, "model": {"batch_norm": True}, "method": {"align_pseudo_labels": True, "class_balance_weight": 0.1},
            "train": {"steps": 4000, "eval_every": 500}}
    sweep = Sweep("mnist-mnistm", "mixval", yaml.safe_load((root / "benchmarks/spaces/mnist-mnistm.yaml").read_text()), base, "grid")
    picked = to_dict(sweep.config({"modes": ["cdan_e"], "method.self_training": True}, threads=1))
    recipe = to_dict(resolve_config(get_experiment("mnist-mnistm"), {"recipe": "label-free", "seed": 1}))
    for config in (picked, recipe):
        # what cannot change the trained weights: names, workers, bars, which validators are also recorded
        for key in ("recipe", "threads", "jobs"):
            config.pop(key)
        config["train"].pop("progress_bar")
        config["validation"].pop("validators")
    assert picked == recipe
