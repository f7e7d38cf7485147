import math

import numpy as np
import pytest

from dann import annealed_lr, dann_lambda
from dann.errors import ConfigError
from dann.train.schedules import lambda_at, lr_at


def test_lambda_endpoints_and_formula():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.25) == pytest.approx(2 / (1 + math.exp(-2.5)) - 1)


def test_lr_endpoints_and_formula():
    assert annealed_lr(0.0, 0.01) == 0.01
    assert annealed_lr(1.0, 0.01) == pytest.approx(0.01 / 11**0.75)
    assert annealed_lr(0.5, 0.02, alpha=4, beta=0.5) == pytest.approx(0.02 / 3**0.5)


def test_schedules_are_monotonic():
    p = np.linspace(0, 1, 101)
    lambdas = [dann_lambda(x) for x in p]
    lrs = [annealed_lr(x, 0.01) for x in p]
    assert all(b > a for a, b in zip(lambdas, lambdas[1:]))
    assert all(b < a for a, b in zip(lrs, lrs[1:]))


def test_constant_and_scaled_schedules():
    assert lambda_at("constant", 0.3, 0.7) == 0.7
    assert lambda_at("paper", 1.0, 0.5) == pytest.approx(0.5 * dann_lambda(1.0))
    assert lr_at("constant", 0.9, 0.1) == 0.1
    assert lr_at("paper", 1.0, 0.1) == pytest.approx(annealed_lr(1.0, 0.1))


@pytest.mark.parametrize("progress", [-0.1, 1.5, float("nan")])
def test_progress_outside_unit_interval_is_rejected(progress):
    with pytest.raises(ValueError, match="progress"):
        dann_lambda(progress)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ConfigError, match="paper, constant"):
        lr_at("cosine", 0.1, 0.1)
