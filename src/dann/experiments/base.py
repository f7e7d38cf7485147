"""What an experiment provides to the shared study runner: its config, data and pictures of the data."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from dann.config import load_yaml
from dann.data.domains import DomainData
from dann.errors import ConfigError
from dann.methods import MethodConfig
from dann.models.registry import ModelConfig
from dann.registry import Registry
from dann.train.loop import TrainConfig

#: a batch -> batch function: a ``DomainData.prepare`` or ``augment``
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StudyConfig:
    """Keys every experiment has; an experiment's subclass adds its ``data`` section and its defaults."""

    experiment: str = ""
    recipe: str = "default"  # a named bundle of settings applied before the user's (``dann recipes``)
    seed: int = 0
    modes: list[str] = field(default_factory=list)
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe_samples: int = 0  # per split: the domain probe, and the checks during training (0: all)
    threads: int = 0  # torch CPU threads per job (0: torch's default, split between the jobs); tiny models run fastest on 1
    jobs: int = 1  # modes trained at once, each in its own process (see dann.experiments.workers)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be 0 or more, got {self.seed}")
        if self.jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {self.jobs}")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (torch's default) or more, got {self.threads}")
        if self.probe_samples < 0:
            raise ConfigError(f"probe_samples must be 0 (all) or more, got {self.probe_samples}")


class Experiment(ABC):
    """One data set and network family; the study runner trains each mode on it."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_cls: ClassVar[type[StudyConfig]]
    embedding: ClassVar[Literal["pca", "tsne"]] = "pca"
    #: test samples per domain in the feature embedding plots (t-SNE costs ~7 ms of CPU per point)
    embedding_samples: ClassVar[int] = 2000

    @abstractmethod
    def load_data(self, cfg: Any, data_dir: str | None) -> DomainData:
        """Build or read the domains."""

    @abstractmethod
    def plot_data(self, data: DomainData, plots_dir: Path) -> None:
        """A picture of the inputs of every domain."""

    def input_transforms(self, cfg: Any, source_x: torch.Tensor, target_x: torch.Tensor) -> tuple[Transform, Transform] | None:
        """``(prepare, augment)`` as this experiment builds them under ``cfg`` for images like
        ``source_x`` and ``target_x`` (``(N, C, H, W)``, pixel values 0..255), so another route (the
        scikit-learn estimator's ``recipe``) can feed a network exactly as ``dann run`` does; None
        when the experiment has none to share."""
        return None

    def recipes(self) -> dict[str, Path]:
        """Named recipes: ``dann/recipes/<experiment>/<name>.yaml`` shipped with dann (``default`` is the experiment's defaults)."""
        folder = resources.files("dann") / "recipes" / self.name
        found = {"default": None}
        if folder.is_dir():
            found.update({Path(str(p)).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=str) if str(p).endswith(".yaml")})
        return found

    def recipe(self, name: str) -> dict[str, Any]:
        """The settings of recipe ``name`` (a ConfigError naming the recipes that exist)."""
        recipes = self.recipes()
        if name not in recipes:
            raise ConfigError(f"unknown recipe {name!r} for {self.name}; choose from {', '.join(recipes)}")
        return {} if recipes[name] is None else load_yaml(recipes[name])


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register_experiment(name: str) -> Callable[[type[Experiment]], type[Experiment]]:
    """Register an :class:`Experiment` subclass (one instance is kept) as ``dann run NAME``."""
    module = sys._getframe(1).f_globals.get("__name__", "?")

    def register(cls: type[Experiment]) -> type[Experiment]:
        if not (isinstance(cls, type) and issubclass(cls, Experiment)):
            raise ConfigError(f"experiment {name!r} must be a dann.experiments.Experiment subclass, got {cls!r}")
        cls.name = name
        EXPERIMENTS.add(name, cls(), module)
        return cls

    return register


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``, or a ConfigError listing those that exist."""
    return EXPERIMENTS.get(name)
