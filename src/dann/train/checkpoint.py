"""Checkpoints that survive a kill at any moment and never unpickle arbitrary objects."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from dann.errors import DataError
from dann.runfiles import atomic_open

#: what to do about a checkpoint that cannot be used
RETRAIN = "delete it to train from the start"
#: the checkpoint key holding the fingerprint of the settings it was trained with
FINGERPRINT_KEY = "config_fingerprint"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically.

    A reader sees either the old checkpoint or the new one, never half of one; a full disk is a
    one-line :class:`~dann.runfiles.DiskFull` and leaves the old checkpoint as it was.
    """
    with atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else than a dann checkpoint is a one-line DataError.

    Damage (empty, truncated, random bytes, another kind of file) and files holding pickled
    objects other than tensors and plain containers are told apart, and neither message suggests
    loading with ``weights_only=False``: a checkpoint that needs it was not written by dann.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise DataError(f"checkpoint {path} is empty (cut off while it was first written?); {RETRAIN}")
    if not zipfile.is_zipfile(path):  # what torch.save writes; a truncated one has lost its directory
        raise DataError(f"checkpoint {path} is unreadable or truncated (not a complete PyTorch checkpoint); {RETRAIN}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise DataError(f"checkpoint {path} is unreadable (damaged pickle data); {RETRAIN}") from None
        raise DataError(
            f"refusing to load checkpoint {path}: it holds a pickled Python object ({found.group(1)}) besides "
            f"tensors and plain containers, so dann did not write it; {RETRAIN}"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch reports damage as RuntimeError, KeyError, EOFError, ...
        raise DataError(f"checkpoint {path} is unreadable or truncated ({_first_line(err)}); {RETRAIN}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise DataError(f"checkpoint {path} is not a dann training checkpoint (no training step recorded); {RETRAIN}")
    return state


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
