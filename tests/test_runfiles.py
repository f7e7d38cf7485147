"""Run-directory files: atomic writes, one-line read errors, the run lock, config fingerprints."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dann import runfiles
from dann.errors import DannError, DataError
from dann.runfiles import (
    DiskFull,
    RunLock,
    RunLocked,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    changed_keys,
    describe_change,
    fingerprint,
    read_json,
    read_jsonl,
    read_yaml_mapping,
)

SRC = Path(runfiles.__file__).resolve().parents[1]


def one_line(err: pytest.ExceptionInfo) -> str:
    """The message, checked to be the single line the CLI prints."""
    message = str(err.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# --- atomic writes -------------------------------------------------------------------------------


def test_atomic_writes_round_trip_and_create_parents(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1.5, None]})
    atomic_write_yaml(tmp_path / "c.yaml", {"train": {"lr": 0.01, "sizes": (1, 2)}, "seed": 0})
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text("utf-8") == "héllo\n"
    assert (tmp_path / "j.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1.5,\n    null\n  ]\n}\n'
    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == {"train": {"lr": 0.01, "sizes": [1, 2]}, "seed": 0}
    assert list((tmp_path / "c.yaml").read_text().splitlines())[0] == "train:"  # key order kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.yaml", "j.json", "t.txt"]


def test_atomic_write_makes_files_world_readable_whatever_the_umask(tmp_path):
    old_umask = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "x.txt", "new")
        (tmp_path / "y.txt").write_text("old")
        os.chmod(tmp_path / "y.txt", 0o600)
        atomic_write_text(tmp_path / "y.txt", "new")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "y.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failing", ["_write_all", "fsync"])
def test_disk_full_keeps_the_previous_version_and_no_temp_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"version": 1})
    before = path.read_bytes()

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = runfiles if failing == "_write_all" else runfiles.os
    monkeypatch.setattr(target, failing, full)
    with pytest.raises(DiskFull) as err:
        atomic_write_json(path, {"version": 2})
    monkeypatch.undo()
    message = one_line(err)
    assert isinstance(err.value, DannError)
    assert str(path) in message and "disk full" in message and "previous version is intact" in message
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_disk_full_on_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfiles, "_write_all", full)
    with pytest.raises(DiskFull) as err:
        atomic_write_text(tmp_path / "new.txt", "x")
    assert "disk full" in one_line(err) and "no partial file" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_mid_write_removes_temp_file_and_propagates(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("seed: 0\n")

    def interrupted(fd, data):
        os.write(fd, data[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(runfiles, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_yaml(path, {"seed": 1})
    assert path.read_text() == "seed: 0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_other_os_errors_are_not_reported_as_disk_full(tmp_path, monkeypatch):
    def broken(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(runfiles, "_write_all", broken)
    with pytest.raises(OSError) as err:
        atomic_write_text(tmp_path / "x.txt", "x")
    assert not isinstance(err.value, DannError) and err.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_json_touches_nothing(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{}\n")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert path.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["s.json"]


# --- safe reads ----------------------------------------------------------------------------------

WHAT, FIX = "the run summary", "delete it and run the mode again"


def read_json_error(path: Path) -> str:
    with pytest.raises(DataError) as err:
        read_json(path, WHAT, FIX)
    message = one_line(err)
    assert message.startswith(f"{path}: ") and message.endswith(f"; {FIX}")
    return message


def test_read_json_returns_the_object(tmp_path):
    atomic_write_json(tmp_path / "s.json", {"a": [1, 2]})
    assert read_json(tmp_path / "s.json", WHAT, FIX) == {"a": [1, 2]}
    (tmp_path / "l.json").write_text("[1]")
    assert read_json(tmp_path / "l.json", WHAT, FIX, expect=list) == [1]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", f"{WHAT} is damaged (empty)"),
        (b"  \n", f"{WHAT} is damaged (empty)"),
        (b'{"target_acc": 0.9, "steps', f"{WHAT} is damaged (truncated: the JSON ends at line 1 column"),
        (b'{\n  "target_acc": 0.9,\n', f"{WHAT} is damaged (truncated: the JSON ends at line 3 column"),
        (b'{"a": 1} trailing', f"{WHAT} is damaged (not valid JSON: Extra data at line 1 column 10)"),
        (b"hello there", f"{WHAT} is damaged (not valid JSON: Expecting value at line 1 column 1)"),
        (bytes(range(256)) * 4, f"{WHAT} is damaged (not UTF-8 text: byte 0x80 at offset 128)"),
        (b"\xff\xfe{}", f"{WHAT} is damaged (not UTF-8 text: byte 0xff at offset 0)"),
        (b"[1, 2]", f"{WHAT} is damaged (expected a JSON object, found a JSON array)"),
        (b'"text"', f"{WHAT} is damaged (expected a JSON object, found a string)"),
        (b"null", f"{WHAT} is damaged (expected a JSON object, found null)"),
    ],
)
def test_read_json_damage_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "summary.json"
    path.write_bytes(content)
    assert fragment in read_json_error(path)


def test_read_json_missing_and_unreadable_have_their_own_messages(tmp_path):
    assert read_json_error(tmp_path / "nope.json") == f"{tmp_path / 'nope.json'}: {WHAT} does not exist; {FIX}"
    (tmp_path / "dir.json").mkdir()
    message = read_json_error(tmp_path / "dir.json")
    assert f"cannot read {WHAT} (Is a directory)" in message and "damaged" not in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "is damaged (empty)"),
        (b"# only a comment\n", "is damaged (empty)"),
        (b"train:\n  lr: [0.1\n", "is damaged (not valid YAML: "),
        (b"a: 1\n b: 2\n", "is damaged (not valid YAML: mapping values are not allowed here at line 2 column 3)"),
        (b"a: 1\n---\nb: 2\n", "is damaged (not valid YAML: "),
        (b"\xc3\x28: 1\n", "is damaged (not UTF-8 text: byte 0xc3 at offset 0)"),
        (b"- 1\n- 2\n", "is damaged (expected a mapping of keys, found a list)"),
        (b"just words\n", "is damaged (expected a mapping of keys, found a single value 'just words')"),
    ],
)
def test_read_yaml_mapping_damage_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_yaml_mapping(path, "the run's config", "restore it or start a new run")
    message = one_line(err)
    assert message.startswith(f"{path}: the run's config ") and fragment in message
    assert message.endswith("; restore it or start a new run")


def test_read_yaml_mapping_reads_and_reports_missing(tmp_path):
    atomic_write_yaml(tmp_path / "c.yaml", {"seed": 3, "train": {"lr": 0.1}})
    assert read_yaml_mapping(tmp_path / "c.yaml", "the config", "fix it") == {"seed": 3, "train": {"lr": 0.1}}
    with pytest.raises(DataError) as err:
        read_yaml_mapping(tmp_path / "none.yaml", "the config", "fix it")
    assert one_line(err) == f"{tmp_path / 'none.yaml'}: the config does not exist; fix it"


def test_read_jsonl_drops_a_torn_last_line_only_when_tolerated(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "los')
    assert read_jsonl(path, "the metrics log", "delete it") == [{"step": 1}, {"step": 2}]
    with pytest.raises(DataError) as err:
        read_jsonl(path, "the metrics log", "delete it", tolerate_torn_tail=False)
    assert one_line(err).startswith(f"{path}: the metrics log is damaged (line 4: not valid JSON: ")
    path.write_text('{"step": 1}\n{"step": 2}')  # complete but unterminated: kept
    assert read_jsonl(path, "the metrics log", "delete it") == [{"step": 1}, {"step": 2}]
    path.write_bytes(b'{"step": 1}\n{"name": "\xc3')  # cut inside a UTF-8 character
    assert read_jsonl(path, "the metrics log", "delete it") == [{"step": 1}]
    path.write_text("")
    assert read_jsonl(path, "the metrics log", "delete it") == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n', "(line 2: not valid JSON: "),
        (b'{"step": 1}\n{"step": 2, "lo\n', "(line 2: not valid JSON: "),  # has its newline: not torn
        (b'{"step": 1}\n[1, 2]\n', "(line 2: expected a JSON object, found a JSON array)"),
        (b'{"step": 1}\n\xff\xfe\n{"step": 3}\n', "(line 2: not UTF-8 text at byte 0 of the line)"),
    ],
)
def test_read_jsonl_bad_lines_name_the_line(tmp_path, content, fragment):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_jsonl(path, "the metrics log", "delete it")
    message = one_line(err)
    assert message.startswith(f"{path}: the metrics log is damaged ") and fragment in message
    assert message.endswith("; delete it")


def test_read_jsonl_missing(tmp_path):
    with pytest.raises(DataError) as err:
        read_jsonl(tmp_path / "m.jsonl", "the metrics log", "delete it")
    assert one_line(err) == f"{tmp_path / 'm.jsonl'}: the metrics log does not exist; delete it"


# --- run lock ------------------------------------------------------------------------------------


def test_run_lock_records_holder_and_releases_on_exit(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "a"  # created by the lock
    monkeypatch.setattr(sys, "argv", ["dann", "run", "blobs", "--out", str(run)])
    with RunLock(run) as lock:
        assert lock.held
        record = json.loads((run / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["hostname"] == socket.gethostname()
        assert record["command"] == ["dann", "run", "blobs", "--out", str(run)]
        assert "T" in record["started"]
        # a second open file description conflicts even in the same process
        with pytest.raises(RunLocked) as err:
            RunLock(run).acquire()
        message = one_line(err)
        assert message == (
            f"{run} is in use by another dann process (pid {os.getpid()} on {socket.gethostname()} since "
            f"{record['started']}: dann run blobs --out {run}); wait for it to finish or stop it"
        )
    assert not lock.held
    with RunLock(run):  # released, so it can be taken again
        pass
    assert (run / ".lock").exists()


def test_stale_lock_file_does_not_block(tmp_path):
    (tmp_path / ".lock").write_text('{"pid": 999999, "hostname": "gone", "started": "2020", "command": []}')
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    (tmp_path / ".lock").write_bytes(b"\xff garbage")
    with RunLock(tmp_path):
        pass


def test_held_lock_without_a_record_still_fails_fast(tmp_path):
    with RunLock(tmp_path):
        (tmp_path / ".lock").write_text("")  # as if the holder had not written its record yet
        with pytest.raises(RunLocked) as err:
            RunLock(tmp_path).acquire()
    assert "(its pid and command are not recorded yet)" in one_line(err)


def test_lock_unsupported_by_the_file_system_is_one_line(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runfiles.fcntl, "flock", no_locks)
    with pytest.raises(DannError) as err:
        RunLock(tmp_path).acquire()
    assert not isinstance(err.value, RunLocked)
    assert "cannot lock the run directory (No locks available)" in one_line(err)


CHILD = """
import sys, time
from dann.runfiles import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_held_by_another_process_fails_fast_and_frees_when_it_is_killed(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), "--tag"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline() == "locked\n"
        start = time.monotonic()
        with pytest.raises(RunLocked) as err:
            RunLock(run).acquire()
        assert time.monotonic() - start < 0.5
        message = one_line(err)
        assert message.startswith(f"{run} is in use by another dann process (pid {child.pid} on ")
        assert f"-c {str(run)} --tag); wait for it to finish or stop it" in message
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    with RunLock(run) as lock:  # the kernel released the dead child's lock
        assert lock.held


# --- fingerprints --------------------------------------------------------------------------------

OLD = {"seed": 0, "model": {"hidden": 64, "layers": [64, 32]}, "train": {"lr": 0.01, "progress_bar": True}}


def test_fingerprint_is_canonical():
    reordered = {"train": {"progress_bar": True, "lr": 0.01}, "model": {"layers": (64, 32), "hidden": 64}, "seed": 0}
    assert fingerprint(OLD) == fingerprint(reordered)
    assert len(fingerprint(OLD)) == 64 and int(fingerprint(OLD), 16) >= 0
    assert fingerprint({"a": [1, 2]}) != fingerprint({"a": [2, 1]})  # lists keep their order
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.0}) != fingerprint({"a": True})
    assert fingerprint({"a": 0.1 + 0.2}) != fingerprint({"a": 0.3})  # floats by repr, not rounded
    assert fingerprint({"a": {}}) != fingerprint({})
    with pytest.raises(TypeError, match="config key 'model.path' holds"):
        fingerprint({"model": {"path": Path("x")}})


def test_changed_keys_and_fingerprint_agree_and_honour_ignore():
    new = {"seed": 1, "model": {"hidden": 128, "layers": [64, 32], "dropout": 0.1}, "train": {"lr": 0.02}}
    assert changed_keys(OLD, new) == ["model.dropout", "model.hidden", "seed", "train.lr", "train.progress_bar"]
    ignore = ["train.progress_bar"]
    assert changed_keys(OLD, new, ignore) == ["model.dropout", "model.hidden", "seed", "train.lr"]
    quiet = {**OLD, "train": {"lr": 0.01, "progress_bar": False}}
    assert changed_keys(OLD, quiet, ignore) == [] and fingerprint(OLD, ignore) == fingerprint(quiet, ignore)
    assert changed_keys(OLD, quiet) == ["train.progress_bar"] and fingerprint(OLD) != fingerprint(quiet)
    # a prefix covers a whole section, but not a key that merely starts with the same letters
    assert changed_keys({"train": {"lr": 1}}, {"train": {"lr": 2}}, ["train"]) == []
    assert changed_keys({"train": {"lr": 1}}, {"train": {"lr": 2}}, ["train.l"]) == ["train.lr"]
    # a section replaced by a value, a list changed, True versus 1
    assert changed_keys({"m": {"a": 1}, "l": [1]}, {"m": 3, "l": [1, 2]}) == ["l", "m"]
    assert changed_keys({"flag": True}, {"flag": 1}) == ["flag"]


def test_describe_change_is_short_and_one_line():
    old = {"seed": 0, "train": {"lr": 0.01, "optimizer": "adam"}}
    new = {"seed": 1, "train": {"lr": 0.02, "optimizer": "sgd\nx", "warmup": 5}}
    assert describe_change(old, new, ["train.lr", "seed"]) == "train.lr: 0.01 -> 0.02; seed: 0 -> 1"
    text = describe_change(old, new)
    assert text == (
        'seed: 0 -> 1; train.lr: 0.01 -> 0.02; train.optimizer: "adam" -> "sgd\\nx"; '
        "train.warmup: (not set) -> 5"
    )
    many_old = {f"k{i}": i for i in range(8)}
    many_new = {f"k{i}": i + 1 for i in range(8)}
    summary = describe_change(many_old, many_new, changed_keys(many_old, many_new))
    assert summary.endswith("k4: 4 -> 5; and 3 more") and summary.count(";") == 5
    long = describe_change({"l": list(range(100))}, {}, ["l"])
    assert "\n" not in long and long.endswith("... -> (not set)") and len(long) < 60
