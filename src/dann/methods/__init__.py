"""Methods by name. Adding one: a :class:`Method` subclass whose :meth:`~Method.loss` turns a batch
into a loss, decorated with :func:`register_method` (from any module; see ``dann run --import``)."""

from __future__ import annotations

# importing the built-in methods registers them, in this order
from dann.methods import supervised, adversarial, conditional, alternating, adda, vada  # noqa: F401  isort: skip
from dann.methods.base import Method, n_domain_outputs
from dann.methods.config import MethodConfig
from dann.methods.registry import (
    METHODS, MethodEntry, build_method, config_for, get_method, register_method, resolve_method_options,
)
from dann.methods.step import StepContext, StepLoss

__all__ = [
    "METHODS", "Method", "MethodConfig", "MethodEntry", "StepContext", "StepLoss",
    "build_method", "config_for", "get_method", "n_domain_outputs", "register_method", "resolve_method_options",
]
