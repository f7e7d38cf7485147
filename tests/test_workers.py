"""Worker processes of ``dann.experiments.workers``."""

import logging

from helpers import log_from_worker

from dann.experiments.workers import run_in_processes


def test_workers_log_as_the_parent_does(capfd):
    logger = logging.getLogger("dann")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("dann: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert run_in_processes(dict, (), log_from_worker, ["a", "b"], 2, 1) == {"a": "a", "b": "b"}
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    err = capfd.readouterr().err
    assert "dann: worker says a" in err and "dann: worker says b" in err


def test_workers_of_a_program_that_set_no_logging_stay_quiet(capfd):
    assert not logging.getLogger("dann").handlers
    assert run_in_processes(dict, (), log_from_worker, ["a"], 1, 1) == {"a": "a"}
    assert "worker says" not in capfd.readouterr().err
