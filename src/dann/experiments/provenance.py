"""``provenance.json``: what produced a run directory (versions, code commit, device, threads).

Written by :func:`~dann.experiments.study.run_study` before training, so an interrupted run has
it too; a resumed run appends its own record under ``resumed``, since the code or machine that
finishes a run may differ from the one that started it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dann.errors import ConfigError
from dann.runfiles import atomic_write_json, read_json
from dann.train.device import resolve_device

FILE = "provenance.json"


def git_commit(directory: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout dann runs from, else None.

    Only when ``directory`` (default: the ``dann`` package's folder) is tracked by a git checkout:
    a copy installed inside some other repository (a venv in a project) is not mistaken for it.
    No git, no repository or any git failure gives None, never an error.
    """
    folder = Path(directory) if directory is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # tracked files in this folder: it is part of the checkout, not an untracked copy within one
    if not git("ls-files", "--error-unmatch", "__init__.py"):
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit, "dirty": bool(status)}


def _device(name: str, world_size: int) -> dict[str, Any]:
    try:
        device = resolve_device(name, world_size)
    except ConfigError:  # training will refuse it with the same message; record what was asked
        return {"device": name}
    found = {"device": str(device)}
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found


def provenance(device: str, threads: int, jobs: int, world_size: int = 1) -> dict[str, Any]:
    """One record: versions, commit, device, and the thread counts training uses."""
    from dann import __version__

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dann": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_commit(),
        **_device(device, world_size),
        "threads": {
            "torch_per_job": threads, "interop": torch.get_num_interop_threads(), "jobs": jobs,
            "processes": world_size, "cpus": os.cpu_count(),
        },
        "command": list(sys.argv),
    }


def write_provenance(out_dir: Path, device: str, threads: int, jobs: int, world_size: int, resume: bool) -> dict[str, Any]:
    """Write ``out_dir/provenance.json``; on resume keep the first record and append this one to ``resumed``."""
    path = out_dir / FILE
    record = provenance(device, threads, jobs, world_size)
    if resume and path.exists():
        first = read_json(path, "the run's provenance", f"delete {path} to start a new record")
        first.setdefault("resumed", []).append(record)
        record = first
    atomic_write_json(path, record)
    return record
