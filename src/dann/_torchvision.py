"""Import torchvision even where its compiled operators do not match the installed torch.

dann uses only torchvision's pure-Python parts (model definitions, weights enums, transforms,
``ImageFolder``). A torchvision wheel built for another torch (say a CUDA build beside a CPU
torch) fails at import while registering fake kernels for its C++ operators
(``RuntimeError: operator torchvision::nms does not exist``). On that failure alone,
:func:`import_torchvision` imports it again with the module that does those registrations
replaced by an empty one, and warns once; any other error is raised unchanged.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

from dann.errors import ConfigError

_REGISTRATIONS = "torchvision._meta_registrations"
_torchvision: types.ModuleType | None = None


def import_torchvision(purpose: str = "dann's image backbones") -> types.ModuleType:
    """The ``torchvision`` module (imported once, cached); ``purpose`` only words the not-installed error."""
    global _torchvision
    if _torchvision is None:
        _torchvision = _import(purpose)
    return _torchvision


def _import(purpose: str) -> types.ModuleType:
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError as error:
        if error.name != "torchvision":
            raise
        raise ConfigError(
            f"torchvision is needed for {purpose}: pip install torchvision (a build matching your torch)"
        ) from None
    except RuntimeError as error:
        if not _is_operator_mismatch(error):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # half-imported: a retry must run every module again
    sys.modules[_REGISTRATIONS] = types.ModuleType(_REGISTRATIONS, "empty stand-in: torchvision's compiled operators did not load")
    module = importlib.import_module("torchvision")
    warnings.warn(
        "torchvision's compiled operators do not match this torch build; dann uses only its models and "
        "transforms, which work, but detection ops such as torchvision.ops.nms will not",
        RuntimeWarning,
        stacklevel=3,
    )
    return module


def _is_operator_mismatch(error: RuntimeError) -> bool:
    message = str(error)
    return "torchvision::" in message and "does not exist" in message
