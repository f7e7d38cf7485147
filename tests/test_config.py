from dataclasses import dataclass, field
from typing import Literal

import pytest

from dann.config import from_dict, parse_overrides, to_dict
from dann.errors import ConfigError


@dataclass
class Inner:
    steps: int = 10
    lr: float = 0.1
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)


def test_round_trip_and_overrides():
    cfg = from_dict(Outer, parse_overrides(["inner.steps=5", "sizes=[3, 4]", "flag=true", "inner.lr=1"]))
    assert cfg.inner.steps == 5 and cfg.sizes == [3, 4] and cfg.flag is True
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["inner.stepz=5"], "unknown config key 'inner.stepz'"),
        (["nosuch=1"], "unknown config key 'nosuch'"),
        (["inner.steps=ten"], "'inner.steps' must be an integer"),
        (["inner.steps=1.5"], "'inner.steps' must be an integer"),
        (["flag=maybe"], "'flag' must be true or false"),
        (["inner.kind=c"], "one of 'a', 'b'"),
        (["sizes=[1, x]"], r"'sizes\[1\]' must be an integer"),
        (["inner=3"], "'inner' must be a mapping"),
    ],
)
def test_bad_keys_and_types_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, parse_overrides(overrides))


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


def test_momentum_is_sgd_momentum_or_adam_beta1():
    from torch import nn

    from dann.train.loop import TrainConfig, make_optimizer

    params = list(nn.Linear(2, 2).parameters())
    adam = make_optimizer(params, TrainConfig(optimizer="adam", momentum=0.5))
    assert adam.param_groups[0]["betas"] == (0.5, 0.999)
    sgd = make_optimizer(params, TrainConfig(optimizer="sgd", momentum=0.5))
    assert sgd.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ConfigError, match=r"train\.momentum must be in \[0, 1\), got 1.0"):
        TrainConfig(momentum=1.0)
