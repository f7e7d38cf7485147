"""Checkpoints, exact resume after SIGKILL or Ctrl-C, determinism, failure handling, torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dann.cli import main
from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.errors import DataError
from dann.fit import fit
from dann.methods import StepLoss
from dann.methods.supervised import SourceOnly
from dann.models.network import mlp_network
from dann.train.checkpoint import load_checkpoint, save_checkpoint
from dann.train.loop import NonFiniteLossError, TrainConfig

RUN = ["run", "blobs", "--set", "modes=[dann]", "--set", "train.eval_every=0"]


def _dann(*args):
    return subprocess.Popen([sys.executable, "-m", "dann", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(run_dir):
    return load_checkpoint(Path(run_dir) / "checkpoints" / "dann.pt")["method"]


def _same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    ra, rb = (json.loads((Path(d) / "summary.json").read_text())["results"]["dann"] for d in (a, b))
    for key in ("source_acc", "target_acc", "domain_acc"):
        assert ra[key] == rb[key]
    assert (Path(a) / "metrics/dann.jsonl").read_text() == (Path(b) / "metrics/dann.jsonl").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    settings = ["--set", "train.steps=3000", "--set", "train.checkpoint_every=100"]
    assert main([*RUN, *settings, "--out", str(out)]) == 0
    return out, settings


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_then_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(reference, tmp_path, how):
    ref, settings = reference
    out = tmp_path / "run"
    proc = _dann(*RUN, *settings, "--out", str(out))
    checkpoint = out / "checkpoints" / "dann.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere between two checkpoints
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    assert not (out / "summary.json").exists(), "the run finished before it could be interrupted"
    if how == signal.SIGINT:
        assert proc.returncode == 130 and f"--resume {out}" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert 0 < load_checkpoint(checkpoint)["step"] < 3000
    assert main(["run", "--resume", str(out)]) == 0
    _same_run(ref, out)


def test_interrupted_parallel_jobs_checkpoint_and_resume_bit_for_bit(reference, tmp_path):
    """SIGTERM to the main process of a jobs=2 run reaches both workers; each checkpoints and stops."""
    ref, settings = reference
    out = tmp_path / "run"
    args = [*RUN, *settings, "--set", "modes=[source_only,dann]", "--set", "jobs=2", "--out", str(out)]
    proc = _dann(*args)
    checkpoints = [out / "checkpoints" / f"{mode}.pt" for mode in ("source_only", "dann")]
    deadline = time.time() + 120
    while not all(c.exists() for c in checkpoints) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and f"--resume {out}" in err, err
    assert not (out / "summary.json").exists(), "the run finished before it could be interrupted"
    assert 0 < load_checkpoint(checkpoints[1])["step"] < 3000
    assert main(["run", "--resume", str(out)]) == 0
    _same_run(ref, out)


def test_rerun_with_the_same_seed_gives_identical_results(tmp_path):
    args = [*RUN, "--set", "train.steps=150", "--set", "modes=[dann,source_only]"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    _same_run(tmp_path / "a", tmp_path / "b")
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert not torch.equal(_weights(tmp_path / "a")["model.label_predictor.weight"], _weights(tmp_path / "c")["model.label_predictor.weight"])


class _Explodes(SourceOnly):
    def loss(self, batch, ctx, stage="model"):
        out = super().loss(batch, ctx, stage)
        return StepLoss(out.loss * (float("nan") if ctx.step == 7 else 1.0), out.metrics)


def test_non_finite_loss_stops_with_step_mode_and_keeps_the_last_checkpoint(tmp_path):
    data = make_blobs_domains(BlobsConfig(train_per_class=20, test_per_class=5))
    method = _Explodes(mlp_network(2, 3, [8], [8]))
    path = tmp_path / "ck.pt"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 7 of 'explodes'.*label_loss.*checkpoint of step 5 is kept"):
        fit(data, method, train_config=TrainConfig(steps=20, batch_size=16, checkpoint_every=5), seed=0, checkpoint=path, name="explodes")
    assert load_checkpoint(path)["step"] == 5


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": _Payload()}, path)
    with pytest.raises(DataError, match="refusing to load checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"step": 3, "w": torch.randn(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="unreadable or truncated"):
        load_checkpoint(path)


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_match_one_process(tmp_path):
    args = [*RUN, "--set", "train.steps=200", "--set", "train.batch_size=64", "--set", "modes=[dann,source_only]"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dann", *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=0), key
    assert (tmp_path / "two" / "summary.json").exists()
