"""Checkpoints that survive a kill at any moment and never unpickle arbitrary objects."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from dann.errors import DataError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically.

    A temporary file in the same directory is flushed to disk and then renamed over ``path``,
    so a reader sees either the old checkpoint or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a file holding other pickled objects is refused."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"no checkpoint at {path}") from None
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"refusing to load checkpoint {path}: it contains pickled objects other than tensors and "
            f"plain containers ({first_line})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise DataError(f"checkpoint {path} is unreadable or truncated: {err}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise DataError(f"checkpoint {path} is not a dann training checkpoint")
    return state
