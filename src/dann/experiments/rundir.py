"""The run directory of ``dann run``: one process at a time, its settings on record, resumes checked.

A run can be started twice on one directory, have its ``config.yaml`` edited before a resume,
be killed at any moment, or fail before it trained anything. This module makes each of those
safe: a lock held for the whole run, a record of what the run started with (``run.json``: the
resolved config and its fingerprint, the data directory, plugins, versions and command), a
resume refused with the changed keys named, and a failed start that leaves nothing in the way
of running the same command again. ``config.yaml`` stays the config a user reads and reruns.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dann.config import dump_yaml, to_dict
from dann.errors import ConfigError, DannError, DataError
from dann.experiments.base import Experiment, StudyConfig, get_experiment
from dann.experiments.configure import resolve_config
from dann.registry import import_plugins
from dann.runfiles import (
    RunLock,
    atomic_write_json,
    changed_keys,
    describe_change,
    fingerprint,
    make_dirs,
    read_json,
    read_yaml_mapping,
)

CONFIG = "config.yaml"
RECORD = "run.json"
#: folders where any file means something was trained: a failed run keeps its directory then
TRAINED = ("checkpoints", "results", "metrics")
#: below this much free disk a run is refused before it starts
MIN_FREE_BYTES = 100 * 2**20


def neutral_keys(values: Mapping[str, Any]) -> tuple[str, ...]:
    """Config keys whose values do not change what a run computes, so a resume may change them.

    ``train.progress_bar`` only draws; ``train.checkpoint_every`` only sets when the state is
    saved (saving reads no random numbers); ``jobs`` only how many modes train side by side,
    unless ``threads`` is 0: then jobs split torch's threads between the modes, and a thread
    count changes the rounding of sums. ``threads`` itself is never neutral, for that reason.
    """
    return ("train.progress_bar", "train.checkpoint_every", *(("jobs",) if values.get("threads") else ()))


def config_fingerprint(cfg: StudyConfig) -> str:
    """The fingerprint of what ``cfg`` computes, saved with every checkpoint and per-mode result."""
    values = to_dict(cfg)
    return fingerprint(values, neutral_keys(values))


def _provenance(data_dir: str | None, plugins: Sequence[str]) -> dict[str, Any]:
    """Who ran what, where and with which versions: enough to repeat a run or explain a difference."""
    import numpy
    import torch

    import dann

    return {
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "data_dir": data_dir,
        "plugins": list(plugins),
        "versions": {"dann": dann.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
                     "python": platform.python_version()},
    }


@dataclass
class RunRecord:
    """``run.json``: what the run started with, and each resume's provenance."""

    config: dict[str, Any]
    config_fingerprint: str
    started: dict[str, Any]
    resumed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def data_dir(self) -> str | None:
        """The data directory the run started with: a resume reads the same data unless told otherwise."""
        return self.started.get("data_dir")

    @property
    def plugins(self) -> list[str]:
        return list(self.started.get("plugins", []))


class RunDirectory:
    """One run's directory. On rank 0 a run calls :meth:`create` (fresh) or :meth:`reopen` (resume),
    both of which take the lock; every rank may :meth:`load` a resumed run's config; :meth:`close`
    releases the lock, after :meth:`discard_if_untrained` when the run failed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)
        self._created = False  # this process made the directory
        self._owned = False  # everything in it but the lock file was written by this process

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def record_path(self) -> Path:
        return self.path / RECORD

    def create(self, cfg: StudyConfig, data_dir: str | None, plugins: Sequence[str]) -> None:
        """Make, lock and check a fresh run's directory, then write ``config.yaml`` and ``run.json``.

        Refused: a path that is a file, a directory another dann process holds (its pid and
        command named), or one with anything in it (but the lock file and temporary files a
        killed start may leave).
        """
        if self.path.exists() and not self.path.is_dir():
            raise DannError(f"--out {self.path} is a file, not a directory; choose another --out")
        self._created = not self.path.exists()
        try:
            make_dirs(self.path)
        except OSError as err:
            raise DannError(f"cannot write to output directory {self.path}: {err.strerror or err}") from None
        self.lock.acquire()
        leftovers = [entry for entry in self.path.iterdir() if entry.name != self.lock.path.name]
        if not all(_is_temporary(entry) for entry in leftovers):
            raise DannError(f"output directory {self.path} is not empty; choose another --out or use --resume {self.path}")
        for entry in leftovers:
            entry.unlink()
        self._owned = True
        free = shutil.disk_usage(self.path).free
        if free < MIN_FREE_BYTES:
            raise DannError(f"only {free // 2**20} MiB free on the disk of {self.path}; need at least {MIN_FREE_BYTES // 2**20} MiB")
        dump_yaml(cfg, self.config_path)
        record = RunRecord(to_dict(cfg), config_fingerprint(cfg), _provenance(data_dir, plugins))
        atomic_write_json(self.record_path, asdict(record))

    def reopen(self) -> None:
        """Lock an existing run's directory for a resume, and clear the temporary files a kill left in it."""
        if not self.path.exists():
            raise DannError(f"cannot resume: {self.path} does not exist")
        if not self.path.is_dir():
            raise DannError(f"cannot resume: {self.path} is a file, not a run directory")
        if not self.config_path.exists():
            raise DannError(f"cannot resume: {self.path} has no {CONFIG} (is it a dann run directory?)")
        self.lock.acquire()
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        """Delete the temporary files that atomic writes cut short by a kill left in the run's folders.

        Safe only under the lock: then no other process is writing here.
        """
        for folder in (self.path, *(self.path / name for name in TRAINED)):
            for entry in folder.glob(".*.tmp"):
                if _is_temporary(entry):
                    entry.unlink(missing_ok=True)

    def load(self) -> tuple[Experiment, StudyConfig, RunRecord | None]:
        """The resumed run's experiment and config (``config.yaml``), refused if it changed since the start.

        The plugins the run started with are imported first, so what they registered exists.
        The record is None for a run directory without ``run.json`` (a start killed before it was
        written); the fingerprints in the checkpoints and results still guard those.
        """
        record = self.read_record()
        if record is not None:
            import_plugins(record.plugins, installed=False)
        fix = "put it back as it was, or start a new run"
        values = read_yaml_mapping(self.config_path, "the run's config", fix)
        if not isinstance(values.get("experiment"), str):
            raise DataError(f"{self.config_path}: the run's config names no experiment; {fix}")
        try:
            experiment = get_experiment(values["experiment"])
            cfg = resolve_config(experiment, values)  # a written config resolves to itself
        except ConfigError as err:
            raise ConfigError(f"{self.config_path}: {err}; {fix}") from None
        if record is not None:
            now = to_dict(cfg)
            keys = changed_keys(record.config, now, neutral_keys(now))
            if keys:
                raise ConfigError(
                    f"{CONFIG} changed since the run started ({describe_change(record.config, now, keys)}); "
                    "put it back or start a new run"
                )
        return experiment, cfg, record

    def read_record(self) -> RunRecord | None:
        """``run.json``, or None when it does not exist; damage is a one-line DataError."""
        if not self.record_path.exists():
            return None
        fix = "delete it to resume without it (the checkpoints still guard against a changed config)"
        raw = read_json(self.record_path, "the run's record", fix)
        try:
            record = RunRecord(**raw)
            valid = isinstance(record.config, dict) and isinstance(record.started, dict) and isinstance(record.resumed, list)
        except TypeError:
            valid = False
        if not valid:
            raise DataError(f"{self.record_path}: the run's record is damaged (not what dann writes); {fix}")
        return record

    def note_resume(self, cfg: StudyConfig, record: RunRecord | None, data_dir: str | None, plugins: Sequence[str]) -> None:
        """Add this resume's provenance to ``run.json`` (or start the record, if the start left none)."""
        entry = _provenance(data_dir, plugins)
        if record is None:
            record = RunRecord(to_dict(cfg), config_fingerprint(cfg), entry)
        else:
            record.resumed.append(entry)
        atomic_write_json(self.record_path, asdict(record))

    def discard_if_untrained(self) -> None:
        """After a failed fresh start: remove what this process wrote, unless training left something.

        Then the same command can simply be run again. A directory this process did not make
        keeps only its (stale, harmless) lock file.
        """
        if not self._owned or any((self.path / name).exists() and any((self.path / name).iterdir()) for name in TRAINED):
            return
        with contextlib.suppress(OSError):  # best effort: the error that stopped the run is the one to report
            if self._created:
                shutil.rmtree(self.path)
            else:
                for entry in self.path.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    elif entry.name != self.lock.path.name:
                        entry.unlink()
        self._owned = False

    def close(self) -> None:
        """Release the lock (a no-op where it was not taken)."""
        self.lock.release()


def _is_temporary(path: Path) -> bool:
    """A temporary file of :mod:`dann.runfiles`' atomic writes: ``.NAME.XXXXXXXX.tmp``."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def save_result(out_dir: Path, mode: str, cfg: StudyConfig, scores: Mapping[str, float]) -> None:
    """``results/<mode>.json``: a finished mode's scores and the fingerprint of the config that made them."""
    atomic_write_json(out_dir / "results" / f"{mode}.json", {"config_fingerprint": config_fingerprint(cfg), "scores": dict(scores)})


def load_result(out_dir: Path, mode: str, cfg: StudyConfig) -> dict[str, float] | None:
    """A finished mode's scores (None when it has not finished), refused if made with another config."""
    path = out_dir / "results" / f"{mode}.json"
    if not path.exists():
        return None
    fix = "delete it to retrain that mode"
    saved = read_json(path, f"the result of mode {mode}", fix)
    if not isinstance(saved.get("scores"), dict) or not isinstance(saved.get("config_fingerprint"), str):
        raise DataError(f"{path}: the result of mode {mode} is damaged (no scores or config fingerprint); {fix}")
    if saved["config_fingerprint"] != config_fingerprint(cfg):
        raise DataError(
            f"{path}: mode {mode} was trained with another config than {CONFIG} now holds "
            f"(fingerprint {saved['config_fingerprint'][:12]}); put {CONFIG} back, or {fix}"
        )
    return saved["scores"]
