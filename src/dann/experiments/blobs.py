"""The Blobs study: four modes on a 2-D shift you can see, in seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.data.domains import DomainData
from dann.experiments.base import Experiment, StudyConfig, register_experiment
from dann.plots.figures import scatter_domains
from dann.train.loop import TrainConfig


@dataclass
class BlobsStudyConfig(StudyConfig):
    modes: list[str] = field(default_factory=lambda: ["source_only", "dann", "domain_only", "dann_deep"])
    threads: int = 1  # a 2-D MLP is too small to gain from threads; more only add contention
    data: BlobsConfig = field(default_factory=BlobsConfig)
    # lambda_max 3: on this small 2-D problem the adversary needs more weight than on images to
    # align the domains within 1500 steps (measured: lambda_max 1 leaves them partly apart).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=0.01, lambda_max=3.0, eval_every=100)
    )


@register_experiment("blobs")
class Blobs(Experiment):
    description = "2-D Gaussian blobs; target = source rotated and shifted (no download, ~1 minute)"
    config_cls = BlobsStudyConfig
    embedding = "pca"

    def load_data(self, cfg: BlobsStudyConfig, data_dir: str | None) -> DomainData:
        return make_blobs_domains(cfg.data, cfg.seed)

    def plot_data(self, data: DomainData, plots_dir: Path) -> None:
        splits = {"source": data.source_train, "target": data.target_train}
        splits.update((domain.name, domain.train) for domain in data.extra_domains)
        scatter_domains(
            {name: split.x.numpy() for name, split in splits.items()},
            {name: split.y.numpy() for name, split in splits.items()},
            plots_dir / "data.png",
            "Blobs: source (labelled) and unlabelled training data",
        )
