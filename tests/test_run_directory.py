"""The run directory: one process at a time, provenance on record, resumes checked, failed starts cleaned up."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dann import runfiles
from dann.cli import main
from dann.train import callbacks
from dann.train.checkpoint import load_checkpoint

BLOBS = ["run", "blobs", "--set", "modes=[dann]", "--set", "train.eval_every=0"]


def _dann(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dann", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _one_line(err: str) -> str:
    assert err.startswith("dann: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*BLOBS, "--set", "train.steps=20", "--out", str(out)]) == 0
    return out


def test_a_second_process_on_a_running_directory_stops_at_once_and_the_first_is_untouched(tmp_path, capsys):
    out, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    proc = _dann(*BLOBS, "--set", "train.steps=20000", "--set", "train.checkpoint_every=200", "--data-dir", str(data), "--out", str(out))
    try:
        lock = out / ".lock"
        _wait_for(lambda: lock.exists() and lock.stat().st_size > 0 and (out / "run.json").exists(), proc)
        _wait_for(lambda: (out / "checkpoints" / "dann.pt").exists(), proc)
        before = {name: (out / name).read_bytes() for name in ("config.yaml", "run.json")}
        for argv in (["run", "--resume", str(out)], ["run", "blobs", "--out", str(out)]):
            started = time.perf_counter()
            assert main(argv) == 2
            assert time.perf_counter() - started < 1.0
            err = _one_line(capsys.readouterr().err)
            assert f"{out} is in use by another dann process (pid {proc.pid} " in err and "--set train.steps=20000" in err
        second = subprocess.run([sys.executable, "-m", "dann", "run", "--resume", str(out)], capture_output=True, text=True)
        assert second.returncode == 2 and f"pid {proc.pid}" in _one_line(second.stderr)
        assert proc.poll() is None, "the first run stopped"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # the hint is a command that works: it names the data directory the run was started with
    assert f"continue with `dann run --resume {out} --data-dir {data}`" in err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert 0 < load_checkpoint(out / "checkpoints" / "dann.pt")["step"] < 20000
    record = json.loads((out / "run.json").read_text())
    assert record["started"]["data_dir"] == str(data) and record["started"]["versions"]["torch"]
    assert "--set" in record["started"]["command"] and record["resumed"] == []


def test_resume_uses_the_recorded_data_dir_and_records_itself(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    record = json.loads((out / "run.json").read_text())
    record["started"]["data_dir"] = str(tmp_path)
    (out / "run.json").write_text(json.dumps(record))
    assert main(["run", "--resume", str(out)]) == 0
    resumed = json.loads((out / "run.json").read_text())["resumed"]
    assert len(resumed) == 1 and resumed[0]["data_dir"] == str(tmp_path)


@pytest.mark.parametrize("section, key, value", [
    ("train", "progress_bar", True), ("train", "checkpoint_every", 7), (None, "jobs", 2),
])
def test_keys_that_do_not_change_results_may_be_edited_before_a_resume(finished, tmp_path, section, key, value):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["threads"] == 1  # jobs only sets how many modes train at once
    (config[section] if section else config)[key] = value
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", "--resume", str(out)]) == 0


def test_jobs_is_part_of_the_config_when_it_sets_the_thread_count(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*BLOBS, "--set", "train.steps=5", "--set", "threads=0", "--out", str(out)]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["jobs"] = 2
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", "--resume", str(out)]) == 2
    assert "(jobs: 1 -> 2)" in _one_line(capsys.readouterr().err)


def test_results_and_checkpoints_carry_the_config_fingerprint(finished):
    record = json.loads((finished / "run.json").read_text())
    result = json.loads((finished / "results" / "dann.json").read_text())
    checkpoint = load_checkpoint(finished / "checkpoints" / "dann.pt")
    assert record["config_fingerprint"] == result["config_fingerprint"] == checkpoint["config_fingerprint"]
    assert set(result["scores"]) >= {"source_acc", "target_acc", "domain_acc"}
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["results"]["dann"] == result["scores"]


def test_run_files_are_readable_by_others_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        assert main([*BLOBS, "--set", "train.steps=5", "--out", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "summary.json", "results/dann.json", "checkpoints/dann.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name
    for name in (".", "results", "checkpoints"):
        assert (run / name).stat().st_mode & 0o777 == 0o755, name


def test_a_failed_start_leaves_nothing_in_the_way_of_the_same_command(tmp_path, capsys):
    made = tmp_path / "made"
    args = [*BLOBS, "--set", "train.steps=5", "--set", "data.train_per_class=10"]
    assert main([*args, "--out", str(made)]) == 2  # batch 64 > 30 samples, found once the data is loaded
    assert "larger than the source_train split (27 samples)" in _one_line(capsys.readouterr().err)
    assert not made.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main([*args, "--out", str(existing)]) == 2
    assert [p.name for p in existing.iterdir()] == [".lock"]  # a stale lock file does not block
    assert main([*args, "--set", "train.batch_size=16", "--out", str(existing)]) == 0
    assert main([*args, "--set", "train.batch_size=16", "--out", str(made)]) == 0


def test_a_resume_of_a_start_killed_before_its_record_was_written(finished, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(finished / "config.yaml", out / "config.yaml")
    assert main(["run", "--resume", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["config"] == yaml.safe_load((out / "config.yaml").read_text())
    again, first = (json.loads((d / "summary.json").read_text())["results"]["dann"] for d in (out, finished))
    assert all(again[key] == first[key] for key in ("source_acc", "target_acc", "domain_acc"))


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_old_checkpoint(finished, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "results" / "dann.json").unlink()  # the resume reaches the final checkpoint save
    before = (out / "checkpoints" / "dann.pt").read_bytes()
    real_save = callbacks.save_checkpoint

    def save_on_a_full_disk(state, path):
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(runfiles.os, "fsync", full)
            real_save(state, path)

    monkeypatch.setattr(callbacks, "save_checkpoint", save_on_a_full_disk)
    assert main(["run", "--resume", str(out)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "dann.pt: disk full while saving it; the previous version is intact; free some space and run again" in err
    assert (out / "checkpoints" / "dann.pt").read_bytes() == before
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["dann.pt"]


def test_a_learning_rate_in_exponent_notation_is_a_number(capsys):
    assert main(["run", "blobs", "--set", "train.lr=1e-3", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 0.001
