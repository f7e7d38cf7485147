"""What an experiment provides to the shared study runner: its config, data and pictures of the data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from dann.config import load_yaml
from dann.data.domains import DomainData, hold_out
from dann.errors import ConfigError
from dann.methods import MethodConfig
from dann.models.registry import ModelConfig
from dann.registry import Registry
from dann.select import get_validator
from dann.train.loop import TrainConfig

#: a batch -> batch function: a ``DomainData.prepare`` or ``augment``
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ValidationConfig:
    """Held-out splits for choosing without target labels (the ``validation`` section)."""

    source: float = 0.1  # fraction of the labelled source training data held out (0: none)
    target: float = 0.1  # fraction of the unlabelled target training data held out (0: none)
    max_samples: int = 2000  # at most this many per domain (0: no cap)
    # label-free scores computed on them at every check (train.eval_every) and at the end
    validators: list[str] = field(default_factory=lambda: ["source_acc", "entropy", "im", "bnm", "snd", "dev", "devn", "class_ami", "mixval"])

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"validation.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.max_samples < 0:
            raise ConfigError(f"validation.max_samples must be 0 (no cap) or more, got {self.max_samples}")
        for name in self.validators:
            get_validator(name)


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
    validation: ValidationConfig = field(default_factory=ValidationConfig)
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
        if self.train.select_by:
            if self.train.select_by not in self.validation.validators:
                raise ConfigError(
                    f"train.select_by={self.train.select_by} is not among validation.validators ({', '.join(self.validation.validators)})"
                )
            if not self.train.eval_every:
                raise ConfigError("train.select_by chooses among the checks: set train.eval_every > 0")
            held = {"source_val": self.validation.source > 0, "target_val": self.validation.target > 0}
            missing = [split for split in sorted(get_validator(self.train.select_by).splits) if not held[split]]
            if missing:
                raise ConfigError(f"train.select_by={self.train.select_by} reads {', '.join(missing)}: set validation.{missing[0][:6]} > 0")


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

    def data(self, cfg: StudyConfig, data_dir: str | None) -> DomainData:
        """The domains as a study trains on them: :meth:`load_data` with the validation splits held out."""
        v = cfg.validation
        return hold_out(self.load_data(cfg, data_dir), v.source, v.target, cfg.seed, v.max_samples)

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

    def entry(cls: type[Experiment], text: str) -> Experiment:
        if not (isinstance(cls, type) and issubclass(cls, Experiment)):
            raise ConfigError(f"experiment {name!r} must be a dann.experiments.Experiment subclass, got {cls!r}")
        cls.name = name
        return cls()

    return EXPERIMENTS.registering(name, entry)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``, or a ConfigError listing those that exist."""
    return EXPERIMENTS.get(name)
