"""Typed configs: dataclasses, filled from YAML or ``--set key=value``, unknown keys rejected.

Every run writes its fully resolved config, so a run can be repeated from that file alone.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from dann.errors import ConfigError
from dann.runfiles import atomic_write_yaml, read_yaml_mapping

C = TypeVar("C")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where it is lossless."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping of keys, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # "--set modes=dann" means a one-element list
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if math.isnan(value):
            raise ConfigError(f"config key '{key}' must be a number, got NaN")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"config field '{key}' has an unsupported annotation {tp!r}")


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def extra_keys(**kwargs: Any) -> Any:
    """A dataclass field that collects the section's keys no other field names (as a dict).

    For sections whose further keys belong to a plugin's own options (a network's, a method's):
    the owning dataclass validates them in ``__post_init__``, where it knows which plugin is
    chosen. In YAML they sit beside the section's own keys, not under the field's name.
    """
    return dataclasses.field(default_factory=dict, metadata={"extra_keys": True}, **kwargs)


def _extra_field(cls: type) -> str | None:
    return next((f.name for f in dataclasses.fields(cls) if f.metadata.get("extra_keys")), None)


def from_dict(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys and wrong types raise ConfigError."""
    fields = _fields(cls)
    extra = _extra_field(cls)
    unknown = sorted(set(data) - set(fields))
    if extra is not None:
        fields.pop(extra)
        unknown = sorted(set(data) - set(fields))
        values = {name: _coerce(data[name], fields[name], prefix + name) for name in data if name in fields}
        return cls(**values, **{extra: {name: data[name] for name in unknown}})
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; known keys here: "
            + ", ".join(prefix + name for name in fields)
        )
    values = {name: _coerce(value, fields[name], prefix + name) for name, value in data.items()}
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (lists, not tuples, so YAML stays simple)."""
    return _as_dict(cfg)


def _as_dict(value: Any) -> Any:
    """``dataclasses.asdict``, except that an :func:`extra_keys` field's content joins its parent section."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = _as_dict(getattr(value, f.name))
            if f.metadata.get("extra_keys"):
                out.update(item)
            else:
                out[f.name] = item
        return out
    if isinstance(value, Mapping):
        return {k: _as_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_dict(v) for v in value]
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.steps=200", "modes=[dann]"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {err.problem}") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' was already given a value")
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; ``update`` wins."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict; a missing, damaged or non-mapping file is a one-line error."""
    return read_yaml_mapping(path, "config file", "fix it or give another file")


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config, every default spelled out, atomically (a kill never leaves half of it)."""
    atomic_write_yaml(path, to_dict(cfg))
