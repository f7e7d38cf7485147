"""A user's plugin, outside the dann package: one method, one network, one experiment.

Imported with ``dann run --import plugins.toy`` (or by a test); the decorators register them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import dann
import dann.experiments
from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.methods.losses import accuracy
from dann.models.network import mlp


@dataclass
class CentroidOptions:
    """The toy method's own options (``method.toy_centroids.*``)."""

    weight: float = 1.0


@dann.register_method("toy_centroids", "plugin: label loss + pull the feature means of the two domains together")
class ToyCentroids(dann.Method):
    """Source label loss + ``weight * ||mean f_s - mean f_t||^2``: a first-moment discrepancy, no adversary."""

    options_cls = CentroidOptions

    def loss(self, batch, ctx, stage="model"):
        n_source = len(batch.source_x)
        features = self.model.features(torch.cat([batch.source_x, batch.target_x]))
        logits = self.model.classify(features[:n_source])
        label_loss = self.label_loss(logits, batch.source_y)
        gap = (features[:n_source].mean(0) - features[n_source:].mean(0)).pow(2).sum()
        return dann.StepLoss(
            label_loss + self.options.weight * ctx.lambda_ * gap,
            {"label_loss": label_loss.detach(), "centroid_gap": gap.detach(), "label_acc": accuracy(logits.detach(), batch.source_y)},
            target_logits=lambda: self.model.classify(features[n_source:]),
        )


@dataclass
class WideOptions:
    width: int = 24


@dann.register_network("toy_wide", WideOptions, "plugin: one wide hidden layer")
def wide_network(request: dann.NetworkRequest, options: WideOptions) -> dann.DomainAdversarialNet:
    (n_inputs,) = request.input_shape
    return dann.DomainAdversarialNet(
        nn.Sequential(nn.Linear(n_inputs, options.width), nn.ReLU()),
        nn.Linear(options.width, request.n_classes),
        mlp([options.width, *request.domain_hidden, request.n_domain_outputs]),
    )


@dataclass
class ToyStudyConfig(dann.experiments.StudyConfig):
    modes: list[str] = field(default_factory=lambda: ["source_only", "toy_centroids"])
    threads: int = 1
    data: BlobsConfig = field(default_factory=lambda: BlobsConfig(train_per_class=50, test_per_class=50))
    model: dann.ModelConfig = field(default_factory=lambda: dann.ModelConfig(network="toy_wide"))
    train: dann.TrainConfig = field(default_factory=lambda: dann.TrainConfig(steps=60, batch_size=32, lr=0.05))


@dann.register_experiment("toy_blobs")
class ToyBlobs(dann.experiments.Experiment):
    description = "plugin: a small Blobs with a target that has no labels at all"
    config_cls = ToyStudyConfig

    def load_data(self, cfg: ToyStudyConfig, data_dir: str | None) -> dann.DomainData:
        blobs = make_blobs_domains(cfg.data, cfg.seed)
        unlabelled = {"target_train": dann.Split(blobs.target_train.x), "target_test": dann.Split(blobs.target_test.x)}
        return dann.DomainData(blobs.source_train, blobs.source_test, n_classes=blobs.n_classes, **unlabelled)

    def plot_data(self, data: dann.DomainData, plots_dir: Path) -> None:
        (plots_dir / "data.txt").write_text(f"{len(data.source_train)} source, {len(data.target_train)} target\n")
