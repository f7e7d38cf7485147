"""What an experiment provides to the shared study runner: its config, data, model and plots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from dann.data.domains import DomainData
from dann.errors import ConfigError
from dann.methods import Mode, MethodOptions
from dann.models.network import DomainAdversarialNet
from dann.train.loop import TrainConfig


@dataclass
class StudyConfig:
    """Keys every experiment has; an experiment's subclass adds ``data`` and ``model`` sections."""

    experiment: str = ""
    protocol: str = "default"  # a named bundle of settings, see Experiment.protocols
    seed: int = 0
    modes: list[str] = field(default_factory=list)
    method: MethodOptions = field(default_factory=MethodOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe_samples: int = 0  # per split: the domain probe, and the checks during training (0: all)
    threads: int = 0  # torch CPU threads per job (0: torch's default, split between the jobs); tiny models run fastest on 1
    jobs: int = 1  # modes trained at once, each in its own process (see study._train_in_processes)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {self.jobs}")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (torch's default) or more, got {self.threads}")


class Experiment(ABC):
    """One data set and network family; the study runner trains each mode on it."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_cls: ClassVar[type[StudyConfig]]
    embedding: ClassVar[Literal["pca", "tsne"]] = "pca"
    #: test samples per domain in the feature embedding plots (t-SNE costs ~7 ms of CPU per point)
    embedding_samples: ClassVar[int] = 2000
    #: named bundles of settings applied before the other ``--set`` overrides (``--set protocol=NAME``)
    protocols: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}

    @abstractmethod
    def load_data(self, cfg: Any, data_dir: str | None) -> DomainData:
        """Build or read the two domains."""

    @abstractmethod
    def build_model(self, cfg: Any, mode: Mode, data: DomainData) -> DomainAdversarialNet:
        """A freshly initialised network for ``mode`` (e.g. with the deeper domain classifier)."""

    @abstractmethod
    def plot_data(self, data: DomainData, plots_dir: Path) -> None:
        """A picture of the inputs of both domains."""

    def n_domain_outputs(self, cfg: StudyConfig, data: DomainData) -> int:
        """One logit for BCE on two domains, else one output per domain."""
        if cfg.method.domain_loss == "ce":
            return data.n_domains
        if data.n_domains > 2:
            raise ConfigError(
                f"method.domain_loss=bce needs exactly two domains, this data has {data.n_domains}; "
                "set method.domain_loss=ce (one output per domain)"
            )
        return 1
