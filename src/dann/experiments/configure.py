"""One config resolver: experiment defaults, then a named recipe, then a config file, then ``--set``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dann.config import from_dict, load_yaml, merge, to_dict
from dann.errors import ConfigError
from dann.experiments.base import Experiment, StudyConfig
from dann.methods import get_method, resolve_method_options
from dann.models.registry import get_network


def resolve_config(
    experiment: Experiment, overrides: Mapping[str, Any] | None = None, file: str | Path | None = None
) -> StudyConfig:
    """The checked config of a study: each layer wins over the one before, unknown keys are errors.

    The recipe is named by the ``recipe`` key of the file or the overrides. A config written by an
    earlier run resolves to itself, so ``--config run/config.yaml`` and ``--resume`` repeat it.
    """
    layers = [load_yaml(file) if file is not None else {}, dict(overrides or {})]
    for layer in layers:
        if layer.get("experiment", experiment.name) != experiment.name:
            raise ConfigError(f"config is for experiment {layer['experiment']!r}, not {experiment.name!r}")
    recipe_name = next((layer["recipe"] for layer in reversed(layers) if "recipe" in layer), "default")
    if not isinstance(recipe_name, str):
        raise ConfigError(f"config key 'recipe' must be a recipe name, got {recipe_name!r}")
    layers.insert(0, experiment.recipe(recipe_name))
    defaults = to_dict(experiment.config_cls())
    _drop_default_network_options(defaults, layers)
    values = defaults
    for layer in (*layers, {"experiment": experiment.name, "recipe": recipe_name}):
        values = merge(values, layer)
    cfg = from_dict(experiment.config_cls, values)
    if not cfg.modes:
        raise ConfigError("modes must name at least one mode")
    if repeated := sorted({mode for mode in cfg.modes if cfg.modes.count(mode) > 1}):
        raise ConfigError(f"modes lists {', '.join(repeated)} more than once; each mode writes its own outputs")
    for mode in cfg.modes:
        get_method(mode)
    resolve_method_options(cfg.method, cfg.modes)
    return cfg


def _drop_default_network_options(defaults: dict[str, Any], layers: list[dict[str, Any]]) -> None:
    """A layer that picks another network starts from that network's option defaults, not the experiment's network's."""
    chosen = next((layer["model"]["network"] for layer in reversed(layers) if "network" in layer.get("model", {})), None)
    default = defaults["model"]["network"]
    if chosen is not None and chosen != default:
        for name in _option_names(default):
            defaults["model"].pop(name, None)


def _option_names(network: str) -> list[str]:
    return [f.name for f in dataclasses.fields(get_network(network).options_cls)]
