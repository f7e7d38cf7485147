"""A method, a network and an experiment defined outside dann register and train, through the CLI and through fit."""

import json

import pytest
import torch

import dann
from dann.cli import main
from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.errors import ConfigError
from dann.evaluate.metrics import evaluate
from dann.experiments.study import format_table
from dann.methods import METHODS
from dann.models.registry import NETWORKS
from dann.registry import import_plugins

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    import_plugins(["plugins.toy"], installed=False)  # tests/ is on sys.path: a module outside the package
    return __import__("plugins.toy").toy


def test_registered_from_outside_and_listed_with_their_origin(toy, capsys):
    assert METHODS.origin("toy_centroids") == NETWORKS.origin("toy_wide") == "plugins.toy"
    assert METHODS.origin("dann") == "built-in"
    assert main(["run", "--list", "--import", "plugins.toy"]) == 0
    listed = capsys.readouterr().out
    assert "toy_centroids" in listed and "[plugins.toy]" in listed and "toy_blobs" in listed


def test_a_taken_name_cannot_be_registered_again(toy):
    with pytest.raises(ConfigError, match="a method named 'dann' is already registered"):
        dann.register_method("dann")(toy.ToyCentroids)


def test_plugin_experiment_method_and_network_train_through_the_cli_without_target_labels(toy, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "toy_blobs", "--import", "plugins.toy", "--out", str(out), "--set", "method.toy_centroids.weight=2.0"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target_labels"] is False
    assert set(summary["results"]) == {"source_only", "toy_centroids"}
    assert all("target_acc" not in r and "source_acc" in r for r in summary["results"].values())
    assert "target_acc" not in (out / "metrics" / "toy_centroids.jsonl").read_text()
    assert "centroid_gap" in (out / "metrics" / "toy_centroids.jsonl").read_text()
    table = capsys.readouterr().out
    assert "toy_centroids" in table and table.splitlines()[2].split()[2] == "-"  # target_acc column
    assert "weight: 2.0" in (out / "config.yaml").read_text()


def test_plugins_reach_the_worker_processes(toy, tmp_path):
    out = tmp_path / "jobs"
    assert main(["run", "toy_blobs", "--import", "plugins.toy", "--out", str(out), "--set", "jobs=2", "--set", "train.steps=20"]) == 0
    assert set(json.loads((out / "summary.json").read_text())["results"]) == {"source_only", "toy_centroids"}


def test_plugin_method_and_network_through_fit_on_unlabelled_target(toy):
    blobs = make_blobs_domains(BlobsConfig(train_per_class=50, test_per_class=50))
    data = dann.DomainData(blobs.source_train, blobs.source_test, dann.Split(blobs.target_train.x), dann.Split(blobs.target_test.x), 3)
    model = dann.ModelConfig(network="toy_wide", options={"width": 16})
    config = dann.MethodConfig(per_method={"toy_centroids": toy.CentroidOptions(weight=3.0)})
    fitted = dann.fit(data, "toy_centroids", model=model, config=config, train_config=dann.TrainConfig(steps=30, batch_size=32), seed=0)
    assert fitted.method.options.weight == 3.0 and fitted.method.model.feature_extractor[0].out_features == 16
    scores = evaluate(fitted.method, data)
    assert "target_acc" not in scores and {"source_acc", "target_im", "domain_acc"} <= set(scores)
    assert "-" in format_table({"toy_centroids": {**scores, "train_seconds": fitted.train_seconds}})


def test_an_oracle_on_an_unlabelled_target_is_refused(toy):
    blobs = make_blobs_domains(BlobsConfig(train_per_class=10, test_per_class=10))
    data = dann.DomainData(blobs.source_train, blobs.source_test, dann.Split(blobs.target_train.x), dann.Split(blobs.target_test.x), 3)
    with pytest.raises(ConfigError, match="target_only is an oracle that trains on target labels, but the training target has none"):
        dann.fit(data, "target_only", train_config=dann.TrainConfig(steps=2))


def test_the_same_seed_trains_the_same_plugin_method(toy):
    blobs = make_blobs_domains(BlobsConfig(train_per_class=20, test_per_class=5))
    runs = [dann.fit(blobs, "toy_centroids", train_config=dann.TrainConfig(steps=10, batch_size=16), seed=3).method for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))
