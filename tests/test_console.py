"""What a user sees: progress lines, the CLI's log messages, --version, a closed pipe, TensorBoard's groups."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import dann
from dann.cli import main
from dann.train.callbacks import ProgressBar
from dann.train.metrics_log import MetricsLog, flat_hparams, tensorboard_tag

SRC = str(Path(dann.__file__).resolve().parent.parent)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(bar: ProgressBar, steps: int = 20, log_every: int = 5) -> None:
    """What the loop does to the bar: a step at a time, the averaged losses every ``log_every`` steps."""
    state = SimpleNamespace(is_main=True, steps=steps, step=0, images_per_second=1234.0, train_seconds=2.5)
    for step in range(1, steps + 1):
        state.step = step
        logs = {"step": step, "label_loss": 1.0 / step, "lr": 0.01} if step % log_every == 0 else {}
        bar.on_step_end(state, logs)
    bar.on_train_end(state)


def test_without_a_terminal_progress_is_plain_lines_and_one_result_line():
    out = io.StringIO()
    drive(ProgressBar("dann", stream=out))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # every tenth of the run, then the result
    assert lines[0] == "dann: step 2/20 (10%), 1234 img/s"
    assert lines[4] == "dann: step 10/20 (50%), 1234 img/s, label_loss 0.100"
    assert lines[-1] == "dann: 20 steps in 2.5 s (1234 img/s); label_loss 0.050"


def test_on_a_terminal_the_bar_is_cleared_and_the_result_line_stays():
    out = Terminal()
    drive(ProgressBar("dann_deep", stream=out))
    text = out.getvalue()
    assert "\r" in text  # tqdm's updates
    assert text.rstrip("\n").splitlines()[-1].lstrip("\r").endswith("dann_deep: 20 steps in 2.5 s (1234 img/s); label_loss 0.050")


def test_library_messages_reach_stderr_as_dann_lines(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])  # main sets up logging before parsing
    capsys.readouterr()
    logging.getLogger("dann.data.mnist").info("downloading %s", "x.gz")
    logging.getLogger("dann.data.mnist").debug("not shown")
    assert capsys.readouterr().err == "dann: downloading x.gz\n"
    assert len([h for h in logging.getLogger("dann").handlers if type(h).__name__ == "_StderrHandler"]) == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"dann {dann.__version__}\n"


def test_list_into_a_closed_pipe_ends_without_a_traceback():
    """`dann run --list | head -0`: the reader is gone before dann writes a byte."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-m", "dann", "run", "--list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) in (0, 141)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "BrokenPipe" not in stderr


def test_tensorboard_tags_are_grouped():
    assert [tensorboard_tag(k) for k in ("label_loss", "domain_loss", "target_acc", "discriminator_acc", "lr", "lambda", "target_im", "phase")] == [
        "loss/label_loss", "loss/domain_loss", "accuracy/target_acc", "accuracy/discriminator_acc",
        "schedule/lr", "schedule/lambda", "score/target_im", "other/phase",
    ]
    assert flat_hparams({"train": {"lr": 0.1, "steps": 5}, "modes": ["dann"], "x": None}) == {
        "train.lr": 0.1, "train.steps": 5, "modes": '["dann"]', "x": "null"
    }


def test_tensorboard_gets_the_config_as_hparams_and_text(tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    with MetricsLog(tmp_path / "m.jsonl", tmp_path / "tb", config={"mode": "dann", "train": {"lr": 0.01}}) as log:
        log.write({"step": 1, "label_loss": 0.5, "target_acc": 0.7})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"loss/label_loss", "accuracy/target_acc", "config/text_summary", "_hparams_/session_start_info"} <= tags
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.01" in text
