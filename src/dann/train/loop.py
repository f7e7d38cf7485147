"""The one training loop every method shares: schedules, optimisers, logging, evaluation hooks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm import tqdm

from dann.data.batches import PairedBatches
from dann.data.domains import DomainData
from dann.errors import DannError
from dann.methods.base import Method, StepContext
from dann.train.metrics_log import MetricsLog
from dann.train.schedules import lambda_at, lr_at


@dataclass
class TrainConfig:
    """How to train (the ``train`` section of a config). ``batch_size`` is per domain."""

    steps: int = 2000
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["paper", "constant"] = "paper"
    lambda_schedule: Literal["paper", "constant"] = "paper"
    lambda_max: float = 1.0
    gamma: float = 10.0
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    progress_bar: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise DannError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise DannError(f"train.lr must be positive, got {self.lr}")


class NonFiniteLossError(DannError):
    """Training produced NaN or inf: stop rather than write garbage weights."""


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    images_per_second: float


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    method: Method,
    data: DomainData,
    cfg: TrainConfig,
    seed: int,
    log: MetricsLog | None = None,
    evaluate: Callable[[Method], dict[str, float]] | None = None,
) -> TrainResult:
    """Train ``method`` for ``cfg.steps`` steps on paired source/target batches.

    ``evaluate`` (held-out accuracies) is called every ``cfg.eval_every`` steps for the curves;
    its time is not counted as training time.
    """
    batches = PairedBatches(
        data.source_train, data.target_train, cfg.batch_size, seed, with_target_labels=method.uses_target_labels
    )
    optimizers = {stage: make_optimizer(params, cfg) for stage, params in method.parameter_groups().items()}
    sums: dict[str, torch.Tensor] = {}
    train_seconds = 0.0
    bar = tqdm(total=cfg.steps, unit="step", disable=not cfg.progress_bar, dynamic_ncols=True, leave=False)
    method.train()
    for step in range(cfg.steps):
        started = time.perf_counter()
        progress = step / cfg.steps
        ctx = StepContext(step, progress, lambda_at(cfg.lambda_schedule, progress, cfg.lambda_max, cfg.gamma))
        lr = lr_at(cfg.lr_schedule, progress, cfg.lr)
        batch = batches.next()
        batch.source_x, batch.target_x = data.prepare(batch.source_x), data.prepare(batch.target_x)
        for stage in method.stages:
            optimizer = optimizers[stage]
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            out = method(batch, ctx, stage)
            if not torch.isfinite(out.loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({out.loss.item()}) at step {step} in mode {method.name!r}, stage {stage!r}; "
                    f"metrics: {({k: round(float(v), 4) for k, v in out.metrics.items()})}"
                )
            out.loss.backward()
            optimizer.step()
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0) + value
        train_seconds += time.perf_counter() - started
        bar.update()

        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            count = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            row = {"step": done, "lr": lr, "lambda": ctx.lambda_}
            row.update({key: float(total) / count for key, total in sums.items()})
            sums.clear()
            if evaluate is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                row.update(evaluate(method))
                method.train()
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("loss")})
            if log is not None:
                log.write(row)
    bar.close()
    method.eval()
    # Throughput counts the source + target images drawn per step, the same for every mode.
    images = 2 * cfg.steps * cfg.batch_size
    return TrainResult(cfg.steps, train_seconds, images / max(train_seconds, 1e-9))
