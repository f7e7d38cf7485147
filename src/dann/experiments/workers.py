"""Several runs at once, each in its own process with its own thread count.

Why: oneDNN's threads wait on each other on a small CNN's convolutions, one-thread processes do
not. On the paper's MNIST network two one-thread processes ran 1.12x (quiet machine) to 1.45x
(loaded machine) the GFLOP/s of one two-thread process. Ctrl-C or SIGTERM reaches every worker,
whose training loop checkpoints and stops. Workers log as the parent does: a spawned process
starts with logging unconfigured, so the ``dann`` logger's level and message format are handed on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from typing import Any, TypeVar

import torch

from dann.registry import import_plugins
from dann.train.loop import TrainingInterrupted, signals_handled_by

R = TypeVar("R")

#: ``setup(*args) -> context``, run once per worker (e.g. load the data);
#: ``task(context, item, line) -> result``, run per item; ``line`` numbers the worker (for progress bars).
Setup = Callable[..., Any]
Task = Callable[[Any, str, int], R]


def run_in_processes(
    setup: Setup, setup_args: tuple, task: Task, items: Sequence[str], jobs: int, threads: int, plugins: Sequence[str] = ()
) -> dict[str, R]:
    """``{item: task(context, item, line)}`` over ``jobs`` spawned worker processes of ``threads`` threads each.

    ``setup`` and ``task`` must be importable top-level functions. ``plugins`` are imported in every
    worker first, so what they register exists there too. A signal sets a shared flag: no worker
    starts a new item, those training checkpoint and stop, and TrainingInterrupted is raised here.
    """
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()
    started = context.Value("i", 0)
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker,
        initargs=(setup, setup_args, threads, list(plugins), stopping, started, _logging_of_parent()),
    )
    results: dict[str, R] = {}
    with pool, _forward_signals_to_workers(stopping):
        futures = {pool.submit(_run_in_worker, task, item): item for item in items}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # let the others write their checkpoints
            if stopping.is_set():
                raise TrainingInterrupted("a signal; every mode in training saved a checkpoint") from None
            raise
    return results


_worker: dict[str, Any] = {}  # what a worker process keeps between the items it runs


def _logging_of_parent() -> tuple[int, logging.Formatter | None] | None:
    """The ``dann`` logger's level and first handler's format, or None where the parent set none."""
    logger = logging.getLogger("dann")
    if not logger.handlers:
        return None
    return logger.level, logger.handlers[0].formatter


def _start_worker(
    setup: Setup, setup_args: tuple, threads: int, plugins: list[str], stopping: EventType, started: Synchronized,
    parent_logging: tuple[int, logging.Formatter | None] | None,
) -> None:
    if parent_logging is not None:
        level, formatter = parent_logging
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        logger = logging.getLogger("dann")
        logger.addHandler(handler)
        logger.setLevel(level)
    torch.set_num_threads(threads)
    import_plugins(plugins)
    with started.get_lock():
        line, started.value = started.value, started.value + 1
    _worker.update(stopping=stopping, line=line, context=setup(*setup_args))


def _run_in_worker(task: Task, item: str) -> Any:
    if _worker["stopping"].is_set():
        raise TrainingInterrupted(f"a signal before {item!r} started")
    return task(_worker["context"], item, _worker["line"])


def _forward_signals_to_workers(stopping: EventType) -> AbstractContextManager[None]:
    """Pass SIGINT/SIGTERM on to the worker processes, whose training loops stop at a checkpoint."""

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    return signals_handled_by(forward)
