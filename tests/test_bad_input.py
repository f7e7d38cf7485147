"""Bad input, one case per row: exit code 2 and ONE line `dann: error: ...` that names the problem.

Each row is ``(argv, exit code, fragment of the message, setup)``. ``argv`` may hold ``{tmp}`` (the
case's own directory), ``{run}`` (a copy of a finished Blobs run there) and ``{data}`` (a data
directory the setup fills). Every fresh run gets ``--out {tmp}/out``, and that directory must not
exist afterwards: a start that fails leaves nothing in the way of running the command again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dann.cli import main
from dann.data import mnist
from dann.runfiles import RunLock
from dann.train.checkpoint import load_checkpoint, save_checkpoint

Setup = Callable[[Path, pytest.MonkeyPatch], object]
STEPS = 20


# --- helpers that damage a run directory or fill a data directory ----------------------------------


def _edit_config(path: Path, section: str | None, key: str, value: object) -> None:
    config = yaml.safe_load(path.read_text())
    (config[section] if section else config)[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def edited(section: str | None, key: str, value: object) -> Setup:
    return lambda tmp, mp: _edit_config(tmp / "run" / "config.yaml", section, key, value)


def written(relative: str, content: bytes | str) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def retrain(*then: Setup) -> Setup:
    """Forget the mode's result, so the resume reads its checkpoint; then apply ``then``."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        (tmp / "run" / "results" / "dann.json").unlink()
        for step in then:
            step(tmp, mp)

    return setup


def checkpoint_changed(change: Callable[[dict], None]) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        path = tmp / "run" / "checkpoints" / "dann.pt"
        state = load_checkpoint(path)
        change(state)
        save_checkpoint(state, path)

    return setup


def _reshape_first_weight(state: dict) -> None:
    name = next(iter(state["method"]))
    state["method"][name] = torch.zeros(3, 3)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def evil_checkpoint(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    torch.save({"step": 1, "payload": _Payload()}, tmp / "run" / "checkpoints" / "dann.pt")


def truncated_checkpoint(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    path = tmp / "run" / "checkpoints" / "dann.pt"
    path.write_bytes(path.read_bytes()[:500])


def locked(tmp: Path, mp: pytest.MonkeyPatch) -> RunLock:
    lock = RunLock(tmp / "run")
    lock.acquire()
    return lock


def idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


SMALL_MNIST = {
    "train-images-idx3-ubyte": np.arange(12 * 28 * 28, dtype=np.uint8).reshape(12, 28, 28),
    "train-labels-idx1-ubyte": np.arange(12, dtype=np.uint8) % 10,
    "t10k-images-idx3-ubyte": np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28) * 3,
    "t10k-labels-idx1-ubyte": np.arange(5, dtype=np.uint8),
}


def small_mnist(**replace: bytes) -> Setup:
    """Tiny MNIST files made the expected ones, some replaced by ``replace[name]`` (underscored names)."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        folder = tmp / "data" / "mnist"
        folder.mkdir(parents=True)
        specs = {}
        for name, array in SMALL_MNIST.items():
            content = idx(array)
            specs[name] = mnist.MnistFile(hashlib.sha256(content).hexdigest(), array.shape)
            (folder / f"{name}.gz").write_bytes(gzip.compress(replace.get(name.replace("-", "_"), content)))
        mp.setattr(mnist, "MNIST_FILES", specs)

    return setup


def offline(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    mp.setattr(mnist, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    mp.setattr(mnist, "DOWNLOAD_TIMEOUT_S", 2)


def both(*setups: Setup) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        for step in setups:
            step(tmp, mp)

    return setup


IMAGES = "train_images_idx3_ubyte"
FRESH = ["run", "blobs"]
RESUME = ["run", "--resume", "{run}"]


def case(argv: list[str], fragment: str, setup: Setup | None = None, *, code: int = 2, id: str):
    return pytest.param(argv, code, fragment, setup, id=id)


CASES = [
    # usage
    case(["run", "blobs", "--bogus"], "unrecognized arguments: --bogus", id="unknown-flag"),
    case(["run", "blobs", "--seed", "abc"], "invalid int value: 'abc'", id="seed-not-int"),
    case([], "required: command", id="no-command"),
    case(["data", "fetch", "cifar"], "invalid choice: 'cifar'", id="fetch-unknown-dataset"),
    case(["data", "build", "mnistm", "--seed", "x"], "invalid int value: 'x'", id="build-seed-not-int"),
    # experiments, recipes, methods, networks
    case(["run"], "name an experiment", id="no-experiment"),
    case(["run", "nosuch"], "unknown experiment 'nosuch'; choose from blobs", id="unknown-experiment"),
    case(["recipes", "nosuch"], "unknown experiment 'nosuch'", id="recipes-unknown-experiment"),
    case([*FRESH, "--recipe", "nosuch"], "unknown recipe 'nosuch' for blobs", id="unknown-recipe"),
    case([*FRESH, "--set", "modes=[dann,nosuch]"], "unknown method 'nosuch'", id="unknown-method"),
    case([*FRESH, "--set", "modes=[]"], "modes must name at least one mode", id="no-modes"),
    case([*FRESH, "--set", "modes=[dann,dann]"], "dann more than once", id="repeated-mode"),
    case([*FRESH, "--set", "model.network=nosuch"], "unknown network 'nosuch'", id="unknown-network"),
    case([*FRESH, "--set", "method.cdan.random_dim=8", "--set", "modes=[dann]"],
         "method.cdan sets options for cdan, which is not among the modes (dann)", id="option-of-unchosen-method"),
    case([*FRESH, "--set", "method.self_training=true", "--set", "modes=[adda]"],
         "method.self_training needs one-stage methods that take it; adda do not", id="self-training-for-adda"),
    case([*FRESH, "--set", "method.dann.nosuch=1", "--set", "modes=[dann]"], "dann has no options of its own", id="options-of-optionless-method"),
    case([*FRESH, "--set", "method.nosuch=1"], "unknown config key 'method.nosuch'", id="unknown-method-key"),
    # keys and types
    case([*FRESH, "--set", "train.stepz=3"], "unknown config key 'train.stepz'", id="unknown-train-key"),
    case([*FRESH, "--set", "nosuch=1"], "unknown config key 'nosuch'", id="unknown-top-key"),
    case([*FRESH, "--set", "model.nosuch=1"], "unknown config key 'model.nosuch'", id="unknown-network-option"),
    case([*FRESH, "--set", "train.steps=many"], "'train.steps' must be an integer, got 'many'", id="steps-not-int"),
    case([*FRESH, "--set", "train.steps=1.5"], "'train.steps' must be an integer, got 1.5", id="steps-float"),
    case([*FRESH, "--set", "train.lr=fast"], "'train.lr' must be a number, got 'fast'", id="lr-not-number"),
    case([*FRESH, "--set", "train.progress_bar=maybe"], "'train.progress_bar' must be true or false", id="bool-not-bool"),
    case([*FRESH, "--set", "train.optimizer=rmsprop"], "'train.optimizer' must be one of 'sgd', 'adam'", id="unknown-optimizer"),
    case([*FRESH, "--set", "train.precision=fp8"], "'train.precision' must be one of", id="unknown-precision"),
    case([*FRESH, "--set", "train=5"], "'train' must be a mapping of keys", id="section-not-mapping"),
    case([*FRESH, "--set", "train.steps"], "--set expects key=value", id="set-without-value"),
    case([*FRESH, "--set", "modes=[dann"], "cannot parse value", id="set-unparsable"),
    case([*FRESH, "--set", "data.shift=[1]"], "data.shift must be two numbers", id="blobs-shift"),
    # config files
    case([*FRESH, "--config", "{tmp}/missing.yaml"], "config file does not exist", id="config-missing"),
    case([*FRESH, "--config", "{tmp}/bad.yaml"], "not valid YAML", written("bad.yaml", "train: [1, 2\n"), id="config-garbage"),
    case([*FRESH, "--config", "{tmp}/list.yaml"], "expected a mapping of keys, found a list",
         written("list.yaml", "- 1\n- 2\n"), id="config-list"),
    case([*FRESH, "--config", "{tmp}/empty.yaml"], "config file is damaged (empty)", written("empty.yaml", ""), id="config-empty"),
    case([*FRESH, "--config", "{tmp}/other.yaml"], "config is for experiment 'mnist-mnistm', not 'blobs'",
         written("other.yaml", "experiment: mnist-mnistm\n"), id="config-of-other-experiment"),
    # values that would train nonsense
    case([*FRESH, "--seed", "-1"], "seed must be 0 or more, got -1", id="negative-seed"),
    case([*FRESH, "--set", "seed=-1"], "seed must be 0 or more, got -1", id="negative-seed-set"),
    case(["run", "mnist-mnistm", "--set", "data.mnistm_seed=-1"], "data.mnistm_seed must be 0 or more", id="negative-mnistm-seed"),
    case(["data", "build", "mnistm", "--seed", "-1", "--cache-dir", "{tmp}/cache"], "MNIST-M seed must be 0 or more",
         id="build-negative-seed"),
    case([*FRESH, "--set", "train.weight_decay=-0.1"], "train.weight_decay must be 0 or more", id="negative-weight-decay"),
    case([*FRESH, "--set", "train.lambda_max=-1"], "train.lambda_max must be 0 or more", id="negative-lambda-max"),
    case([*FRESH, "--set", "train.lr=.nan"], "'train.lr' must be a number, got NaN", id="lr-nan"),
    case([*FRESH, "--set", "train.lr=.inf"], "train.lr must be a positive finite number, got inf", id="lr-inf"),
    case([*FRESH, "--set", "train.lr=0"], "train.lr must be a positive finite number", id="lr-zero"),
    case([*FRESH, "--set", "train.lr=-1e-3"], "train.lr must be a positive finite number, got -0.001", id="lr-negative"),
    case([*FRESH, "--set", "train.momentum=1.0"], "train.momentum must be in [0, 1)", id="momentum-one"),
    case([*FRESH, "--set", "train.batch_size=0"], "train.batch_size must be at least 1", id="batch-zero"),
    case([*FRESH, "--set", "train.steps=0"], "train.steps must be at least 1", id="steps-zero"),
    case([*FRESH, "--set", "probe_samples=-1"], "probe_samples must be 0 (all) or more", id="negative-probe-samples"),
    case([*FRESH, "--set", "jobs=0"], "jobs must be at least 1", id="jobs-zero"),
    case([*FRESH, "--set", "threads=-1"], "threads must be 0", id="negative-threads"),
    case([*FRESH, "--set", "model.hidden=[]"], "model.hidden must list at least one layer size", id="hidden-empty"),
    case([*FRESH, "--set", "model.hidden=[0]"], "model.hidden must list at least one layer size, each at least 1", id="hidden-zero"),
    case([*FRESH, "--set", "model.domain_hidden=[0]"], "model.domain_hidden sizes must be at least 1", id="domain-hidden-zero"),
    case([*FRESH, "--set", "method.label_smoothing=1.0"], "method.label_smoothing must be in [0, 1)", id="label-smoothing-one"),
    case([*FRESH, "--set", "train.device=tpu"], "train.device must be auto, cpu, cuda or cuda:N", id="unknown-device"),
    case([*FRESH, "--set", "train.batch_size=5000"], "batch size 5000 (train.batch_size) is larger than the source_train split (540 samples)",
         id="batch-larger-than-split"),
    case([*FRESH, "--set", "data.train_per_class=5"], "larger than the source_train split (13 samples)", id="split-smaller-than-batch"),
    # output and data directories
    case([*FRESH, "--out", "{tmp}/file"], "is a file, not a directory", written("file", "x"), id="out-is-a-file"),
    case([*FRESH, "--out", "{tmp}/file/sub"], "cannot write to output directory", written("file", "x"), id="out-under-a-file"),
    case([*FRESH, "--out", "{run}"], "is not empty; choose another --out or use --resume", id="out-not-empty"),
    case([*FRESH, "--out", "{run}"], "is in use by another dann process", locked, id="out-locked"),
    case([*FRESH, "--data-dir", "{tmp}/missing"], "--data-dir", id="data-dir-missing"),
    case([*FRESH, "--data-dir", "{tmp}/file"], "is a file", written("file", "x"), id="data-dir-is-a-file"),
    # missing and damaged data
    case(["run", "mnist-mnistm", "--data-dir", "{tmp}"], "MNIST file(s) not found", id="mnist-missing"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "truncated: the header declares 12x28x28",
         small_mnist(**{IMAGES: idx(SMALL_MNIST["train-images-idx3-ubyte"])[:400]}), id="mnist-truncated"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "wrong magic number",
         small_mnist(**{IMAGES: b"<html>not found</html>"}), id="mnist-wrong-magic"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "it looks like t10k-images-idx3-ubyte",
         small_mnist(**{IMAGES: idx(SMALL_MNIST["t10k-images-idx3-ubyte"])}), id="mnist-other-split"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "it looks like train-labels-idx1-ubyte",
         small_mnist(**{IMAGES: idx(SMALL_MNIST["train-labels-idx1-ubyte"])}), id="mnist-labels-as-images"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "checksum mismatch",
         small_mnist(**{IMAGES: idx(255 - SMALL_MNIST["train-images-idx3-ubyte"])}), id="mnist-checksum"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "corrupt or truncated gzip data",
         both(small_mnist(), written("data/mnist/train-images-idx3-ubyte.gz", b"\x1f\x8b\x08garbage")), id="mnist-bad-gzip"),
    case(["run", "mnist-mnistm", "--data-dir", "{data}"], "BSDS500 training photos not found", small_mnist(), id="bsds-missing"),
    case(["data", "build", "mnistm", "--data-dir", "{tmp}", "--cache-dir", "{tmp}/cache"], "MNIST file(s) not found", id="build-without-mnist"),
    case(["data", "fetch", "mnist", "--data-dir", "{data}"], "truncated: the header declares 12x28x28",
         both(small_mnist(**{IMAGES: idx(SMALL_MNIST["train-images-idx3-ubyte"])[:400]}), offline), id="fetch-over-truncated-offline"),
    case(["data", "fetch", "mnist", "--data-dir", "{tmp}/file/sub"], "cannot create the MNIST folder", written("file", "x"),
         id="fetch-into-a-file"),
    # resume directories
    case(["run", "--resume", "{tmp}/missing"], "cannot resume: ", id="resume-missing"),
    case(["run", "--resume", "{tmp}/file"], "is a file, not a run directory", written("file", "x"), id="resume-a-file"),
    case(["run", "--resume", "{tmp}"], "has no config.yaml (is it a dann run directory?)", id="resume-not-a-run"),
    case([*RESUME, "--set", "train.lr=1"], "drop --set", id="resume-with-set"),
    case(["run", "blobs", "--resume", "{run}"], "drop EXPERIMENT", id="resume-with-experiment"),
    case([*RESUME, "--data-dir", "{tmp}/missing"], "does not exist", id="resume-data-dir-missing"),
    case(RESUME, "is in use by another dann process", locked, id="resume-locked"),
    case(RESUME, "the run's config is damaged (empty); put it back as it was", written("run/config.yaml", ""), id="config-yaml-empty"),
    case(RESUME, "the run's config is damaged (not valid YAML", written("run/config.yaml", "seed: [0\n"), id="config-yaml-garbage"),
    case(RESUME, "expected a mapping of keys", written("run/config.yaml", "just text\n"), id="config-yaml-scalar"),
    case(RESUME, "the run's config names no experiment", edited(None, "experiment", None), id="config-yaml-no-experiment"),
    case(RESUME, "unknown experiment 'nosuch'", edited(None, "experiment", "nosuch"), id="config-yaml-unknown-experiment"),
    case(RESUME, "unknown config key 'train.stepz'", edited("train", "stepz", 3), id="config-yaml-unknown-key"),
    case(RESUME, "config.yaml changed since the run started (train.lr: 0.01 -> 0.02); put it back or start a new run",
         edited("train", "lr", 0.02), id="edited-lr"),
    case(RESUME, f"(train.steps: {STEPS} -> {STEPS + 10})", edited("train", "steps", STEPS + 10), id="edited-steps"),
    case(RESUME, "(seed: 0 -> 1)", edited(None, "seed", 1), id="edited-seed"),
    case(RESUME, "(model.hidden: [32,8] -> [16,8])", edited("model", "hidden", [16, 8]), id="edited-hidden"),
    case(RESUME, "run.json: the run's record is damaged", written("run/run.json", "{\"config\": "), id="run-json-cut"),
    case(RESUME, "results/dann.json: the result of mode dann is damaged (empty); delete it to retrain that mode",
         written("run/results/dann.json", ""), id="result-empty"),
    case(RESUME, "is damaged (truncated", written("run/results/dann.json", "{\"config_fingerprint\": \"ab"), id="result-partial"),
    case(RESUME, "mode dann was trained with another config",
         written("run/results/dann.json", json.dumps({"config_fingerprint": "0" * 64, "scores": {}})), id="result-other-config"),
    case(RESUME, "is unreadable or truncated (not a complete PyTorch checkpoint)",
         retrain(written("run/checkpoints/dann.pt", bytes(range(256)) * 8)), id="checkpoint-random-bytes"),
    case(RESUME, "is empty", retrain(written("run/checkpoints/dann.pt", b"")), id="checkpoint-empty"),
    case(RESUME, "is unreadable or truncated", retrain(truncated_checkpoint), id="checkpoint-truncated"),
    case(RESUME, "checkpoint does not fit this run (it has no 'optimizers')",
         retrain(checkpoint_changed(lambda state: state.pop("optimizers"))), id="checkpoint-missing-keys"),
    case(RESUME, "checkpoint does not fit this run (size mismatch", retrain(checkpoint_changed(_reshape_first_weight)),
         id="checkpoint-other-shape"),
    case(RESUME, "was written with other settings than this run's",
         retrain(checkpoint_changed(lambda state: state.update(config_fingerprint="0" * 64))), id="checkpoint-other-config"),
    case(RESUME, "refusing to load checkpoint", retrain(evil_checkpoint), id="checkpoint-pickled-object"),
    case(RESUME, "metrics/dann.jsonl: the metrics log is damaged (line 2",
         retrain(written("run/metrics/dann.jsonl", '{"step": 10}\nnot json\n{"step": 20}\n')), id="metrics-damaged-mid-file"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    args = ["run", "blobs", "--set", "modes=[dann]", "--set", f"train.steps={STEPS}", "--set", "train.eval_every=0", "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(autouse=True)
def private_data_dirs(tmp_path, monkeypatch):
    """No case reads or writes the user's data or cache."""
    monkeypatch.delenv("DANN_DATA", raising=False)
    monkeypatch.setenv("DANN_CACHE", str(tmp_path / "cache"))


def test_at_least_sixty_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("argv, code, fragment, setup", CASES)
def test_bad_input_is_one_line_and_exit_code_2(argv, code, fragment, setup, tmp_path, finished_run, monkeypatch, capsys):
    if any("{run}" in a for a in argv):
        shutil.copytree(finished_run, tmp_path / "run")
    held = setup(tmp_path, monkeypatch) if setup is not None else None
    words = [a.format(tmp=tmp_path, run=tmp_path / "run", data=tmp_path / "data") for a in argv]
    fresh = words[:1] == ["run"] and "--resume" not in words and "--out" not in words and len(words) > 1
    if fresh:
        words += ["--out", str(tmp_path / "out")]
    try:
        try:
            got = main(words)
        except SystemExit as exit_:  # argparse's usage errors
            got = exit_.code
    finally:
        if isinstance(held, RunLock):
            held.release()
    # progress lines ("dann: downloading URL") may come first; the error is one line, the last
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True) if not line.startswith("dann: downloading "))
    assert got == code, err
    assert err.startswith("dann: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert fragment in err, err
    if fresh:
        assert not (tmp_path / "out").exists(), "a failed start left its directory behind"
