"""Named things a user can add from outside dann: methods, networks, experiments.

A registry maps a name to an entry and remembers where the entry came from (dann itself, or a
user's module loaded with ``dann run --import MODULE`` or an installed plugin), so ``dann run
--list`` can say which is which. Plugins are ordinary modules whose import registers things.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from dann.errors import ConfigError

T = TypeVar("T")
X = TypeVar("X")

#: The entry-point group of installed plugins: ``[project.entry-points."dann.plugins"] name = "module"``.
PLUGIN_GROUP = "dann.plugins"


@dataclass(frozen=True)
class Registered(Generic[T]):
    """An entry and where it was registered (``"built-in"`` or the registering module's name)."""

    name: str
    entry: T
    origin: str


class Registry(Generic[T]):
    """Name -> entry. Registering a taken name is an error, so a plugin cannot silently replace a built-in."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Registered[T]] = {}

    def add(self, name: str, entry: T, module: str) -> T:
        """Register ``entry`` under ``name``; ``module`` is the registering module (for ``--list``)."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{self.kind} name {name!r} must be letters, digits, '_' or '-'")
        if name in self._entries:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered (by {self._entries[name].origin})")
        origin = "built-in" if module == "dann" or module.startswith("dann.") else module
        self._entries[name] = Registered(name, entry, origin)
        return entry

    def registering(self, name: str, entry_of: Callable[[X, str], T], description: str = "") -> Callable[[X], X]:
        """A decorator registering ``entry_of(obj, description)`` under ``name``; returns ``obj`` unchanged.

        Call it from a public ``register_*`` function: the module that called *that* function is
        recorded as the origin. ``description`` defaults to the first line of ``obj``'s docstring.
        """
        module = sys._getframe(2).f_globals.get("__name__", "?")

        def register(obj: X) -> X:
            text = description or (getattr(obj, "__doc__", None) or name).strip().splitlines()[0]
            self.add(name, entry_of(obj, text), module)
            return obj

        return register

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests and notebooks that re-register)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry called ``name``, or a ConfigError listing the names that exist."""
        try:
            return self._entries[name].entry
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {', '.join(self._entries)}") from None

    def origin(self, name: str) -> str:
        return self._entries[name].origin

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, r.entry) for name, r in self._entries.items()]


def import_plugins(modules: Sequence[str] = (), installed: bool = True) -> list[str]:
    """Import the user's ``modules`` and (with ``installed``) every ``dann.plugins`` entry point.

    Importing is all a plugin needs: its decorators register its methods, networks and
    experiments. Returns the modules imported; a module that cannot be imported is a one-line error.
    """
    names = list(modules)
    if installed:
        names += [ep.value.split(":")[0] for ep in entry_points(group=PLUGIN_GROUP)]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"cannot import plugin module {name!r}: {err}") from None
    return names
