"""The files of a run directory: written atomically, read with one-line errors, locked, fingerprinted.

A run can be killed at any moment, run out of disk, or be started twice on the same directory.
These helpers make each of those leave the directory usable and say in one line what to do.
Bottom layer: only the standard library, yaml and :mod:`dann.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from dann.errors import DannError, DataError

__all__ = [
    "DiskFull",
    "RunLock",
    "RunLocked",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_yaml",
    "changed_keys",
    "describe_change",
    "fingerprint",
    "make_dirs",
    "read_json",
    "read_jsonl",
    "read_yaml_mapping",
]

FILE_MODE = 0o644
"""Run files are shared: other users (a supervisor, a reviewer) must be able to read them."""
DIR_MODE = 0o755
"""... and to enter the directories that hold them."""


class DiskFull(DannError):
    """A write ran out of space; the file on disk is still the previous complete version."""


class RunLocked(DannError):
    """Another live process holds the run directory's lock."""


def _one_line(text: str) -> str:
    """Error messages are one line: the CLI prints them after ``dann: error:``."""
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` may write less than asked; loop until everything is out."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort, some file systems refuse directory fsync."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[int]:
    """A descriptor of a temporary file that replaces ``path`` when the block ends, and vanishes if it raises.

    The temporary file lives in the same directory (a rename is atomic only within one file
    system) and is flushed to disk before the rename. Raises :class:`DiskFull` when the disk or
    quota is full; on any failure, Ctrl-C included, the temporary file is removed.
    """
    existed = path.exists()
    tmp: str | None = None
    try:
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)  # mkstemp creates 0o600; the umask is deliberately ignored
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            left = "the previous version is intact" if existed else "no partial file was left"
            raise DiskFull(f"{path}: disk full while saving it; {left}; free some space and run again") from err
        raise
    _sync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never a mix.

    Raises :class:`DiskFull` when the disk or quota is full (the old file stays as it was).
    """
    with _replacing(Path(path)) as fd:
        _write_all(fd, data)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to stream into that replaces ``path`` only once the block completes.

    For writers that produce large files piecewise (``torch.save``, ``np.savez_compressed``, a
    download): a kill or an error mid-write leaves the previous ``path`` (or none), and no
    temporary file unless the process is killed outright. Same guarantees as :func:`atomic_write_bytes`.

    Example::

        with atomic_open(cache) as f:
            np.savez_compressed(f, images=images)
    """
    with _replacing(Path(path)) as fd, os.fdopen(fd, "w+b", closefd=False) as f:
        yield f


def make_dirs(directory: str | Path) -> None:
    """``mkdir -p`` whose new directories are 0o755 whatever the umask; existing ones are left alone.

    Caches, downloads and run directories are shared: other users must be able to reach the
    0o644 files inside them.
    """
    missing = []
    current = Path(directory)
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made by a concurrent process meanwhile
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, DIR_MODE)
    if not Path(directory).is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with a trailing newline (serialised before anything is touched)."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_write_yaml(path: str | Path, mapping: Mapping[str, Any]) -> None:
    """Write ``mapping`` as block-style YAML in its own key order, as a config file is read."""
    atomic_write_text(path, yaml.safe_dump(_plain(mapping), sort_keys=False, default_flow_style=False))


def _plain(value: Any) -> Any:
    """Mappings as dicts and tuples as lists, which safe_dump and the change description need."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# Safe reads


_KIND_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a string", bool: "true/false",
               int: "a number", float: "a number", type(None): "null"}


def _kind(value: Any) -> str:
    return _KIND_NAMES.get(type(value), type(value).__name__)


def _read_bytes(path: Path, what: str, fix: str) -> bytes:
    """The file's bytes; a missing or unreadable file is a one-line :class:`DataError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} does not exist; {fix}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read {what} ({_one_line(err.strerror or err)}); {fix}") from None


def _read_text(path: Path, what: str, fix: str) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is a one-line :class:`DataError`."""
    data = _read_bytes(path, what, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: {what} is damaged (not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start}); {fix}"
        ) from None


def _json_problem(text: str, err: ValueError) -> str:
    """Say 'truncated' when the text ends before the JSON does: what a kill mid-write leaves."""
    if isinstance(err, json.JSONDecodeError):
        where = f"line {err.lineno} column {err.colno}"
        if err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string"):
            return f"truncated: the JSON ends at {where} before it is complete"
        return f"not valid JSON: {err.msg} at {where}"
    return f"not valid JSON: {_one_line(err)}"


def read_json(path: str | Path, what: str, fix: str, *, expect: type = dict) -> Any:
    """Parse a JSON run file, or raise a one-line :class:`DataError` saying what is wrong and ``fix``.

    ``what`` names the file for a user ("the run summary"); ``fix`` says what to do about it
    ("delete it and run again"). The top-level value must be an instance of ``expect``.
    """
    path = Path(path)
    text = _read_text(path, what, fix)
    if not text.strip():
        raise DataError(f"{path}: {what} is damaged (empty); {fix}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        problem = _json_problem(text, err) if isinstance(err, ValueError) else "not valid JSON: nested too deeply"
        raise DataError(f"{path}: {what} is damaged ({problem}); {fix}") from None
    if not isinstance(value, expect):
        wanted = _KIND_NAMES.get(expect, expect.__name__)
        raise DataError(f"{path}: {what} is damaged (expected {wanted}, found {_kind(value)}); {fix}")
    return value


def read_yaml_mapping(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping of keys, with one-line errors like :func:`read_json`."""
    path = Path(path)
    text = _read_text(path, what, fix)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise DataError(f"{path}: {what} is damaged (not valid YAML: {_one_line(problem)}{where}); {fix}") from None
    if value is None:
        raise DataError(f"{path}: {what} is damaged (empty); {fix}")
    if not isinstance(value, dict):
        kind = "a list" if isinstance(value, list) else f"a single value {_one_line(repr(value))[:40]}"
        raise DataError(f"{path}: {what} is damaged (expected a mapping of keys, found {kind}); {fix}")
    return value


def read_jsonl(path: str | Path, what: str, fix: str, tolerate_torn_tail: bool = True) -> list[dict[str, Any]]:
    """The rows (JSON objects) of a JSON-lines file, in order; blank lines are skipped.

    A last line without its newline that does not parse is what a kill mid-write leaves: it is
    dropped when ``tolerate_torn_tail``. A writer appending after such a tail must rewrite the file
    first, or its next row joins the torn one. Any other bad line is a one-line :class:`DataError`.
    """
    path = Path(path)
    lines = _read_bytes(path, what, fix).split(b"\n")
    torn_candidate = len(lines) - 1 if lines[-1].strip() else None  # no newline after the last line
    rows: list[dict[str, Any]] = []
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            problem = None if isinstance(row, dict) else f"expected a JSON object, found {_kind(row)}"
        except UnicodeDecodeError as err:
            problem = f"not UTF-8 text at byte {err.start} of the line"
        except (ValueError, RecursionError) as err:
            problem = f"not valid JSON: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not valid JSON"
        if problem is None:
            rows.append(row)
        elif index == torn_candidate and tolerate_torn_tail:
            break
        else:
            raise DataError(f"{path}: {what} is damaged (line {index + 1}: {problem}); {fix}")
    return rows


# ---------------------------------------------------------------------------------------------
# One process per run directory


class RunLock:
    """Hold ``directory/.lock`` so that a second dann process on the same run fails fast.

    ``flock`` is released by the kernel when the holder dies, so a ``.lock`` file left by a killed
    run never blocks. The file records its holder (pid, host, start time, command) for the error
    message. It is never deleted: unlinking a lock file lets two processes lock two different files.
    A child forked while the lock is held (a DataLoader worker) shares it until the child exits.

    Example::

        with RunLock(out_dir):
            train(...)
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLocked` at once (no waiting)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        try:
            make_dirs(self.directory)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as err:
            raise DannError(
                f"{self.path}: cannot create the run directory's lock file ({_one_line(err.strerror or err)}); "
                f"check that you can write to {self.directory}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise DannError(
                    f"{self.path}: cannot lock the run directory ({_one_line(err.strerror or err)}); "
                    "put the run directory on a file system with file locks (a local disk)"
                ) from None
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(
                f"{self.directory} is in use by another dann process ({holder}); wait for it to finish or stop it"
            ) from None
        try:
            record = {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": list(sys.argv),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except BaseException:
            os.close(fd)  # closing releases the lock
            raise
        self._fd = fd

    def release(self) -> None:
        """Clear the holder record and unlock; a no-op when not held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int, attempts: int = 5, pause: float = 0.02) -> str:
    """Describe the holder from its record; it may be mid-write, so retry briefly before giving up."""
    for attempt in range(attempts):
        try:
            record = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
            command = _one_line(shlex.join(str(arg) for arg in record["command"]))
            if len(command) > 200:
                command = command[:197] + "..."
            return f"pid {int(record['pid'])} on {record['hostname']} since {record['started']}: {command}"
        except (OSError, ValueError, KeyError, TypeError):
            if attempt + 1 < attempts:
                time.sleep(pause)
    return "its pid and command are not recorded yet"


# ---------------------------------------------------------------------------------------------
# Config fingerprints


def _ignored(key: str, ignore: Collection[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in ignore)


def _canonical(value: Any, ignore: Collection[str], prefix: str = "") -> Any:
    """Plain JSON data with ignored keys left out; anything that is not config data is a bug."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            path = f"{prefix}{key}"
            if not _ignored(path, ignore):
                out[str(key)] = _canonical(item, ignore, path + ".")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(item, ignore, prefix) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config key '{prefix.rstrip('.')}' holds {type(value).__name__}, not plain data")


def _dump(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, floats by repr (so 0.1 and 0.1000001 differ, 1 and 1.0 too)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def fingerprint(mapping: Mapping[str, Any], ignore: Collection[str] = ()) -> str:
    """sha256 (hex) of the config without the dotted key prefixes in ``ignore``.

    Two configs have the same fingerprint exactly when :func:`changed_keys` finds nothing, so a
    resume can check a saved fingerprint and explain a mismatch from the saved config.
    """
    return hashlib.sha256(_dump(_canonical(mapping, ignore)).encode("ascii")).hexdigest()


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Collection[str] = ()) -> list[str]:
    """Dotted paths, sorted, where ``new`` adds, removes or changes a value of ``old``.

    Nested mappings are compared key by key; a list is one value. ``True``, ``1`` and ``1.0``
    count as different, as they do in the fingerprint.
    """
    changed: list[str] = []

    def walk(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str) -> None:
        for key in set(map(str, a)) | set(map(str, b)):
            path = f"{prefix}{key}"
            in_a, in_b = key in a, key in b
            if in_a and in_b and isinstance(a[key], Mapping) and isinstance(b[key], Mapping):
                walk(a[key], b[key], path + ".")
            elif in_a != in_b or _dump(a[key]) != _dump(b[key]):
                changed.append(path)

    walk(_canonical(old, ignore), _canonical(new, ignore), "")
    return sorted(changed)


_MISSING = object()


def _lookup(mapping: Mapping[str, Any], path: str) -> Any:
    value: Any = mapping
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _show(value: Any, width: int = 40) -> str:
    if value is _MISSING:
        return "(not set)"
    try:
        text = _dump(_plain(value))
    except (TypeError, ValueError):
        text = repr(value)
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_change(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Sequence[str] | None = None, limit: int = 5
) -> str:
    """One line such as ``train.lr: 0.01 -> 0.02; seed: 0 -> 1``, at most ``limit`` keys then "and N more".

    ``keys`` defaults to :func:`changed_keys` (with nothing ignored).
    """
    keys = changed_keys(old, new) if keys is None else list(keys)
    parts = [f"{key}: {_show(_lookup(old, key))} -> {_show(_lookup(new, key))}" for key in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)
