"""A Blobs run killed with SIGKILL, then resumed, ends exactly like one that was never interrupted.

Kills land anywhere: during start-up, between writing config.yaml and run.json, mid-step,
mid-checkpoint, mid-append of a metrics row, during evaluation, plotting or the summary. After
each, the command a user would run next is run: ``--resume`` once config.yaml exists, else the
fresh command again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dann.cli import main
from dann.train.checkpoint import load_checkpoint

SCORES = ("source_acc", "target_acc", "target_im", "domain_acc")


def _args(steps: int, checkpoint_every: int) -> list[str]:
    return [
        "run", "blobs", "--set", "modes=[source_only,dann]", "--set", "train.eval_every=0",
        "--set", f"train.steps={steps}", "--set", f"train.checkpoint_every={checkpoint_every}",
    ]


def _start(out: Path, fresh: list[str]) -> subprocess.Popen:
    argv = ["run", "--resume", str(out)] if (out / "config.yaml").exists() else [*fresh, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dann", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _assert_same_run(reference: Path, out: Path) -> None:
    ref, got = (json.loads((d / "summary.json").read_text())["results"] for d in (reference, out))
    assert ref.keys() == got.keys()
    for mode in ref:
        assert {k: got[mode][k] for k in SCORES} == {k: ref[mode][k] for k in SCORES}, mode
        assert (out / "metrics" / f"{mode}.jsonl").read_text() == (reference / "metrics" / f"{mode}.jsonl").read_text(), mode
        a, b = (load_checkpoint(d / "checkpoints" / f"{mode}.pt")["method"] for d in (reference, out))
        assert all(torch.equal(a[k], b[k]) for k in a), mode
    leftovers = [p for p in out.rglob(".*.tmp")]
    assert not leftovers, leftovers


def _metrics_size(out: Path) -> int:
    return sum(p.stat().st_size for p in out.glob("metrics/*.jsonl"))


def _wait_until(changed, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not changed():
        time.sleep(0.005)


def _kill_and_resume(tmp_path: Path, steps: int, checkpoint_every: int, kills: int, seed: int) -> None:
    """Kills cycle through three moments, each after a random delay: from the process's start
    (start-up, writing config.yaml and run.json), from its (re)writing run.json (loading data,
    plotting it, building the network), and from its first logged training rows (training,
    checkpoints, evaluation, plots, summary), so every phase is hit even on a busy machine."""
    fresh = _args(steps, checkpoint_every)
    reference = tmp_path / "reference"
    assert main([*fresh, "--out", str(reference)]) == 0
    out = tmp_path / "run"
    record = out / "run.json"
    rng = random.Random(seed)
    for kill in range(kills):
        started = record.stat().st_mtime_ns if record.exists() else None
        logged = _metrics_size(out)
        proc = _start(out, fresh)
        if kill % 4 == 1:
            _wait_until(lambda: record.exists() and record.stat().st_mtime_ns != started, proc)
        elif kill % 4 > 1:
            _wait_until(lambda: _metrics_size(out) != logged, proc)
        time.sleep(rng.uniform(0.5, 5.0) if kill % 4 == 0 else rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    proc = _start(out, fresh)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    _assert_same_run(reference, out)


def kill_after_first_checkpoint_then_resume(tmp_path: Path, fresh: list[str], mode: str) -> tuple[Path, Path]:
    """An uninterrupted reference run, and the same run SIGKILLed once ``mode`` checkpointed, then resumed."""
    reference = tmp_path / "reference"
    assert main([*fresh, "--out", str(reference)]) == 0
    out = tmp_path / "run"
    proc = _start(out, fresh)
    checkpoint = out / "checkpoints" / f"{mode}.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "summary.json").exists()
    assert main(["run", "--resume", str(out)]) == 0
    return reference, out


def test_killed_once_mid_training_then_resumed_is_bit_identical(tmp_path):
    _assert_same_run(*kill_after_first_checkpoint_then_resume(tmp_path, _args(3000, 100), "source_only"))


@pytest.mark.slow
def test_killed_twenty_times_at_random_moments_then_resumed_is_bit_identical(tmp_path):
    _kill_and_resume(tmp_path, steps=2000, checkpoint_every=50, kills=20, seed=20)
