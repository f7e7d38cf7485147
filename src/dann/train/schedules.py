"""The paper's schedules, as functions of training progress ``p`` in [0, 1]."""

from __future__ import annotations

import math

from dann.errors import ConfigError


def _check_progress(progress: float) -> float:
    if not 0.0 <= progress <= 1.0 or math.isnan(progress):
        raise ValueError(f"training progress must be in [0, 1], got {progress}")
    return progress


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Adaptation factor ``2 / (1 + exp(-gamma p)) - 1``: 0 at the start, -> 1 at the end.

    Starting at 0 keeps the noisy early domain signal from wrecking the features.
    """
    return 2.0 / (1.0 + math.exp(-gamma * _check_progress(progress))) - 1.0


def annealed_lr(progress: float, lr0: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Learning-rate annealing ``lr0 / (1 + alpha p) ** beta`` from the paper."""
    return lr0 / (1.0 + alpha * _check_progress(progress)) ** beta


LAMBDA_SCHEDULES = ("paper", "constant")
LR_SCHEDULES = ("paper", "constant")


def lambda_at(schedule: str, progress: float, lambda_max: float, gamma: float = 10.0) -> float:
    """The adversarial weight at ``progress``: ``lambda_max`` times the chosen schedule."""
    if schedule == "paper":
        return lambda_max * dann_lambda(progress, gamma)
    if schedule == "constant":
        _check_progress(progress)
        return lambda_max
    raise ConfigError(f"unknown lambda_schedule {schedule!r}; choose from {', '.join(LAMBDA_SCHEDULES)}")


def lr_at(schedule: str, progress: float, lr0: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The learning rate at ``progress`` under the chosen schedule."""
    if schedule == "paper":
        return annealed_lr(progress, lr0, alpha, beta)
    if schedule == "constant":
        _check_progress(progress)
        return lr0
    raise ConfigError(f"unknown lr_schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
