"""Experiments by name, as ``dann run NAME`` knows them."""

from __future__ import annotations

from dann.errors import ConfigError
from dann.experiments.base import Experiment, StudyConfig
from dann.experiments.blobs import Blobs
from dann.experiments.mnist_mnistm import MnistToMnistM

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (Blobs(), MnistToMnistM())}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``, or a ConfigError listing those that exist."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}") from None


__all__ = ["EXPERIMENTS", "Experiment", "StudyConfig", "get_experiment"]
