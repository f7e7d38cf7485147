"""Experiments by name, as ``dann run NAME`` knows them; register more with :func:`register_experiment`."""

from __future__ import annotations

from dann.experiments import blobs, folders, mnist_mnistm, table  # noqa: F401  (registers the built-ins)
from dann.experiments.base import EXPERIMENTS, Experiment, StudyConfig, get_experiment, register_experiment
from dann.experiments.configure import resolve_config

__all__ = ["EXPERIMENTS", "Experiment", "StudyConfig", "get_experiment", "register_experiment", "resolve_config"]
