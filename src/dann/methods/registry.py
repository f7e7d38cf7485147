"""Methods by name: the built-ins and any a user registers with :func:`register_method`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from dann.config import from_dict
from dann.errors import ConfigError
from dann.methods.base import Method
from dann.methods.config import MethodConfig
from dann.models.network import DomainAdversarialNet
from dann.registry import Registry


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its class, a one-line description, and which domain head it trains with."""

    cls: type[Method]
    description: str
    #: ``deep``: the network's deeper domain classifier (``model.deep_domain_hidden``)
    domain_head: Literal["default", "deep"] = "default"

    @property
    def options_cls(self) -> type | None:
        return self.cls.options_cls


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(
    name: str, description: str = "", domain_head: Literal["default", "deep"] = "default"
) -> Callable[[type[Method]], type[Method]]:
    """Register a :class:`Method` subclass under ``name`` (the name users give in ``modes``).

    The same class can be registered under several names as variants, e.g. DANN with the deep
    domain head as ``dann_deep``. ``description`` defaults to the first line of the docstring.
    """

    def entry(cls: type[Method], text: str) -> MethodEntry:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ConfigError(f"method {name!r} must be a dann.methods.Method subclass, got {cls!r}")
        return MethodEntry(cls, text, domain_head)

    return METHODS.registering(name, entry, description)


def get_method(name: str) -> MethodEntry:
    """The method registered as ``name``, or a ConfigError listing the registered ones."""
    return METHODS.get(name)


def resolve_method_options(config: MethodConfig, names: Sequence[str]) -> MethodConfig:
    """Check the ``method`` section against the chosen methods ``names``; fill each one's options.

    Options under a name that is not chosen, or a regulariser a chosen method cannot take, are
    refused here, before anything trains.
    """
    entries = {name: get_method(name) for name in names}
    with_options = [name for name, entry in entries.items() if entry.options_cls is not None]
    resolved = {}
    for key, value in config.per_method.items():
        if key not in METHODS:
            raise ConfigError(
                f"unknown config key 'method.{key}'; known keys here: the shared settings "
                f"(method.domain_loss, method.label_smoothing, ...) or a chosen method's options ({', '.join(with_options) or 'none'})"
            )
        if key not in entries:
            raise ConfigError(f"method.{key} sets options for {key}, which is not among the modes ({', '.join(names)})")
        options_cls = entries[key].options_cls
        if options_cls is None:
            raise ConfigError(f"method.{key}: {key} has no options of its own")
        if isinstance(value, options_cls):
            resolved[key] = value
        elif isinstance(value, dict):
            resolved[key] = from_dict(options_cls, value, prefix=f"method.{key}.")
        else:
            raise ConfigError(f"config key 'method.{key}' must be a mapping of {key}'s options, got {value!r}")
    for name in with_options:
        resolved.setdefault(name, entries[name].options_cls())
    if config.self_training:
        refused = [name for name, entry in entries.items() if not entry.cls.supports_self_training]
        if refused:
            raise ConfigError(
                f"method.self_training needs one-stage methods that take it; {', '.join(refused)} do not "
                "(drop them from modes, or run them separately)"
            )
    config.per_method = {name: resolved[name] for name in names if name in resolved}
    return config


def config_for(config: MethodConfig, name: str) -> MethodConfig:
    """A copy of ``config`` resolved for method ``name`` alone (a study's config holds every mode's options)."""
    single = copy.deepcopy(config)
    single.per_method = {key: options for key, options in single.per_method.items() if key == name}
    return resolve_method_options(single, [name])


def build_method(name: str, model: DomainAdversarialNet, config: MethodConfig | None = None) -> Method:
    """A fresh ``name`` method around ``model``, with its options from ``config.per_method``."""
    entry = get_method(name)
    config = config or MethodConfig()
    options = config.per_method.get(name)
    if options is None and entry.options_cls is not None:
        options = entry.options_cls()
    return entry.cls(model, config, options)
