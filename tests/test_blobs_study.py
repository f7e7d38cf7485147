"""The Blobs study end to end through the CLI, with the default configuration and seed."""

import json

import pytest
import yaml

from dann.cli import main
from dann.data.blobs import BlobsConfig, make_blobs_domains


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("blobs") / "run"
    assert main(["run", "blobs", "--out", str(out)]) == 0
    return out


def test_writes_every_output(study):
    summary = json.loads((study / "summary.json").read_text())
    assert summary["experiment"] == "blobs" and summary["seed"] == 0
    assert set(summary["results"]) == {"source_only", "dann", "domain_only", "dann_deep"}
    for scores in summary["results"].values():
        for key in ("source_acc", "target_acc", "domain_acc"):
            assert 0.0 <= scores[key] <= 1.0
        assert scores["train_seconds"] > 0
    for name in ["data", "curves"] + [f"pca_{m}" for m in summary["results"]]:
        assert (study / "plots" / f"{name}.png").stat().st_size > 10_000
    rows = [json.loads(line) for line in (study / "metrics" / "dann.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1500
    assert {"step", "lr", "lambda", "label_loss", "domain_loss"} <= set(rows[0])
    assert any((study / "tb" / "dann").iterdir())


def test_config_yaml_is_complete_and_reruns(study):
    written = yaml.safe_load((study / "config.yaml").read_text())
    assert written["train"]["steps"] == 1500 and written["data"]["n_classes"] == BlobsConfig().n_classes
    assert written["modes"] == ["source_only", "dann", "domain_only", "dann_deep"]


def test_dann_adapts_where_source_only_does_not(study):
    r = json.loads((study / "summary.json").read_text())["results"]
    assert r["dann"]["target_acc"] >= r["source_only"]["target_acc"] + 0.10
    assert r["dann_deep"]["target_acc"] >= r["source_only"]["target_acc"] + 0.10
    # reversal hides the domain from a fresh probe; without reversal the features reveal it
    assert r["dann"]["domain_acc"] < r["source_only"]["domain_acc"]
    assert r["domain_only"]["domain_acc"] >= 0.95


def test_modes_trained_in_parallel_processes_match_one_process(tmp_path):
    args = ["run", "blobs", "--set", "train.steps=150", "--set", "modes=[dann,source_only,dann_deep]"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--set", "jobs=2", "--out", str(tmp_path / "parallel")]) == 0
    serial, parallel = (json.loads((tmp_path / d / "summary.json").read_text())["results"] for d in ("serial", "parallel"))
    assert list(parallel) == list(serial)  # the order of cfg.modes, whichever finished first
    for mode, scores in serial.items():
        for key in ("source_acc", "target_acc", "domain_acc"):
            assert parallel[mode][key] == scores[key], (mode, key)
        assert (tmp_path / "parallel" / "metrics" / f"{mode}.jsonl").read_text() == (tmp_path / "serial" / "metrics" / f"{mode}.jsonl").read_text()
        assert (tmp_path / "parallel" / "plots" / f"pca_{mode}.png").exists()


@pytest.mark.parametrize(
    "setting, message",
    [("jobs=0", "jobs must be at least 1"), ("modes=[dann,source_only,dann]", "modes lists dann more than once")],
)
def test_bad_study_settings_are_named(tmp_path, capsys, setting, message):
    assert main(["run", "blobs", "--out", str(tmp_path / "r"), "--set", setting]) == 2
    assert message in capsys.readouterr().err


def test_the_terminal_table_is_printed(tmp_path, capsys):
    assert main(["run", "blobs", "--out", str(tmp_path / "r"), "--set", "train.steps=20", "--set", "modes=[dann]"]) == 0
    out = capsys.readouterr().out
    assert "target_acc" in out and "dann" in out


def test_blobs_data_is_deterministic_and_shifted():
    a, b = make_blobs_domains(BlobsConfig(), seed=3), make_blobs_domains(BlobsConfig(), seed=3)
    for name, split in a.splits().items():
        assert split.x.equal(b.splits()[name].x) and split.y.equal(b.splits()[name].y)
    assert (a.source_train.x.mean(0) - a.target_train.x.mean(0)).norm() > 0.5
    assert a.source_train.x.shape == (600, 2) and a.source_test.y.bincount().tolist() == [200, 200, 200]


def test_self_training_with_a_mode_that_cannot_take_it_fails_before_training(tmp_path, capsys):
    args = ["run", "blobs", "--out", str(tmp_path / "r"), "--set", "modes=[dann,adda]", "--set", "method.self_training=true"]
    assert main(args) == 2
    assert "adda do not" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics").exists()  # dann, listed first, never started
