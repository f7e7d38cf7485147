"""Bad input gets one line naming the problem and exit code 2, never a traceback."""

import subprocess
import sys

import pytest

from dann.cli import main


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nosuch"], "unknown experiment 'nosuch'; choose from blobs"),
        (["run", "blobs", "--set", "train.stepz=3"], "unknown config key 'train.stepz'"),
        (["run", "blobs", "--set", "train.steps=many"], "'train.steps' must be an integer"),
        (["run", "blobs", "--set", "modes=[dann,nosuch]"], "unknown method 'nosuch'"),
        (["run", "blobs", "--set", "train.optimizer=rmsprop"], "'train.optimizer' must be one of 'sgd', 'adam'"),
        (["run", "blobs", "--set", "train.steps=0"], "train.steps must be at least 1"),
        (["run", "blobs", "--set", "recipe=nosuch"], "unknown recipe 'nosuch' for blobs; choose from default"),
        (["run", "blobs", "--set", "data.shift=[1]"], "data.shift must be two numbers"),
        (["run"], "name an experiment"),
        (["run", "--resume", "/nonexistent/dir"], "cannot resume: /nonexistent/dir does not exist"),
    ],
)
def test_one_line_error_and_exit_code_2(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "out")] if "--resume" not in args else args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("dann: error:")


def test_non_empty_output_dir_is_refused(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert main(["run", "blobs", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_unwritable_output_dir_is_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "blobs", "--out", str(blocker / "sub")]) == 2
    assert "cannot write to output directory" in capsys.readouterr().err


def test_usage_errors_are_one_line_too():
    proc = subprocess.run([sys.executable, "-m", "dann", "run", "blobs", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unrecognized arguments: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_list_and_help_explain_what_exists():
    listing = subprocess.run([sys.executable, "-m", "dann", "run", "--list"], capture_output=True, text=True)
    assert listing.returncode == 0 and "blobs" in listing.stdout and "domain_only" in listing.stdout
    helptext = subprocess.run([sys.executable, "-m", "dann", "run", "--help"], capture_output=True, text=True)
    assert helptext.returncode == 0 and "--set" in helptext.stdout and "--resume" in helptext.stdout


def test_closed_output_pipe_ends_quietly(tmp_path, monkeypatch):
    """`dann run --list | head`: the reader leaving is not an error worth a traceback."""
    import dann.cli

    def reader_left(args):
        raise BrokenPipeError

    monkeypatch.setattr(dann.cli, "_run", reader_left)
    with open(tmp_path / "stdout", "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["run", "--list"]) == 141
