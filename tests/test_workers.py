"""Worker processes of ``dann.experiments.workers``."""

import logging

from helpers import log_from_worker

from dann.experiments.workers import run_in_processes


def test_workers_log_as_the_parent_does(capfd, monkeypatch):
    logger = logging.getLogger("dann")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("dann: %(message)s"))
    monkeypatch.setattr(logger, "handlers", [handler])  # as `dann`'s CLI sets it, whatever earlier tests did
    monkeypatch.setattr(logger, "level", logging.INFO)
    assert run_in_processes(dict, (), log_from_worker, ["a", "b"], 2, 1) == {"a": "a", "b": "b"}
    err = capfd.readouterr().err
    assert "dann: worker says a" in err and "dann: worker says b" in err


def test_workers_of_a_program_that_set_no_logging_stay_quiet(capfd, monkeypatch):
    monkeypatch.setattr(logging.getLogger("dann"), "handlers", [])  # a program embedding dann, set no logging
    assert run_in_processes(dict, (), log_from_worker, ["a"], 1, 1) == {"a": "a"}
    assert "worker says" not in capfd.readouterr().err
