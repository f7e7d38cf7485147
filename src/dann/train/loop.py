"""The one training loop every method shares: sample, forward, backward, step; callbacks do the rest."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from dann.data.batches import PairedBatches
from dann.errors import ConfigError, DannError, DataError
from dann.methods.base import Method
from dann.methods.step import StepContext
from dann.models.network import DomainAdversarialNet, lr_scaled_groups
from dann.train import distributed
from dann.train.callbacks import Callback
from dann.train.cpu import reuse_freed_memory
from dann.train.device import autocast, grad_scaler
from dann.train.schedules import lambda_at, lr_at


@dataclass
class TrainConfig:
    """How to train (the ``train`` section of a config). ``batch_size`` is per domain and global:
    with several processes each takes its share of it."""

    steps: int = 2000
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD's momentum, or Adam's beta1 (its momentum; GAN-style games often use 0.5)
    weight_decay: float = 0.0
    lr_schedule: Literal["paper", "constant"] = "paper"
    lambda_schedule: Literal["paper", "constant"] = "paper"
    lambda_max: float = 1.0
    gamma: float = 10.0
    # > 0: keep an exponential moving average of the weights with this decay (warmed up), evaluate
    # it, and end with it (smooths the oscillation of the adversarial game); 0: off
    ema_decay: float = 0.0
    log_every: int = 10
    eval_every: int = 0  # steps between checks (curves, label-free scores); 0: only at the end
    # a validator (dann.select) that chooses the weights training ends with, scored on the held-out
    # validation splits at every check; "": keep the last weights
    select_by: str = ""
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end); 0: end only
    progress_bar: bool = False
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    # fp32; bf16 autocast (GPUs, CPUs with bfloat16); fp16 autocast with a gradient scaler (GPUs)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "weight_decay", "gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 < self.lr < float("inf"):
            raise ConfigError(f"train.lr must be a positive finite number, got {self.lr}")
        if not 0 <= self.lambda_max < float("inf"):
            raise ConfigError(f"train.lambda_max must be 0 or more (a negative value would undo the reversal), got {self.lambda_max}")
        for name in ("momentum", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")


class NonFiniteLossError(DannError):
    """Training produced NaN or inf: stop rather than write garbage weights."""


class TrainingInterrupted(DannError):
    """Ctrl-C (SIGINT) or SIGTERM arrived; a checkpoint of the last finished step was written."""


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    images_per_second: float


class TrainState:
    """What the loop and its callbacks share: the method, optimisers, data, position and this step's numbers."""

    def __init__(
        self, method: Method, optimizers: dict[str, torch.optim.Optimizer], batches: PairedBatches,
        steps: int, batch_size: int, scaler: torch.amp.GradScaler, callbacks: Sequence[Callback],
    ) -> None:
        self.method, self.optimizers, self.batches, self.scaler = method, optimizers, batches, scaler
        self.steps, self.batch_size, self.callbacks = steps, batch_size, list(callbacks)
        self.is_main = distributed.current().is_main
        self.step = 0
        self.train_seconds = 0.0
        self.lr = self.lambda_ = 0.0
        self.metrics: dict[str, torch.Tensor] = {}
        self.last_checkpoint_step: int | None = None
        #: the weights to evaluate (a moving average replaces it)
        self.eval_model: Callable[[], Method] = lambda: method

    @property
    def images_per_second(self) -> float:
        """Source + target images drawn per second of training, counted the same way for every mode."""
        return 2 * self.step * self.batch_size / max(self.train_seconds, 1e-9)

    def snapshot(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit: weights, optimiser moments, data order, RNG, callbacks."""
        device = self.batches.device
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "method": self.method.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """The inverse of :meth:`snapshot`; a checkpoint of another run's shape is a one-line DataError."""
        try:
            self.method.load_state_dict(checkpoint["method"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(checkpoint["optimizers"][name])
            self.scaler.load_state_dict(checkpoint["scaler"])
            self.batches.load_state_dict(checkpoint["batches"])
            for cb in self.callbacks:
                cb.load_state_dict(checkpoint["callbacks"][type(cb).__name__])
            torch.set_rng_state(checkpoint["torch_rng"])
            if "cuda_rng" in checkpoint and self.batches.device.type == "cuda":
                torch.cuda.set_rng_state(checkpoint["cuda_rng"], self.batches.device)
            step, train_seconds = int(checkpoint["step"]), float(checkpoint["train_seconds"])
        except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise DataError(
                f"checkpoint does not fit this run ({_mismatch(err)}); it was written by another config or version: "
                "resume with the config it was written with, or delete it to train from the start"
            ) from None
        self.step, self.train_seconds = step, train_seconds


def _mismatch(err: Exception) -> str:
    """The informative line of a state-dict error: ``load_state_dict`` puts it after a generic header."""
    if isinstance(err, KeyError):
        return f"it has no {err}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def make_optimizer(params: list[torch.nn.Parameter] | list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or Adam over ``params``: parameters, or parameter groups (e.g. :func:`lr_scaled_groups`,
    whose ``lr_scale`` the loop multiplies into each group's learning rate every step)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # fused: one kernel for all parameters; 5x faster than the per-tensor loop on a 3.4M-parameter
    # deep domain head (measured on CPU), the same Adam update up to rounding
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay, fused=True)


@contextmanager
def signals_handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` while the block runs (only the main thread can)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _StopFlag:
    requested: str | None = None


@contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps, so a step is never cut in half."""
    flag = _StopFlag()

    def handler(signum: int, _frame: Any) -> None:
        flag.requested = signal.Signals(signum).name

    with signals_handled_by(handler):
        yield flag


def train(
    method: Method,
    batches: PairedBatches,
    cfg: TrainConfig,
    callbacks: Sequence[Callback] = (),
    name: str = "",
) -> TrainResult:
    """Train ``method`` for ``cfg.steps`` steps on ``batches`` (already on the method's device).

    Each step: one batch, then for each active stage a forward pass (under ``cfg.precision``'s
    autocast), a finite-loss check, backward and the stage's optimiser step. Everything else
    (moving average, evaluation, logging, progress, checkpoints and resume) is a callback.
    ``name`` is the user's name for the run, used in messages. Under torchrun every process
    calls this; DistributedDataParallel keeps their gradients in step.
    """
    reuse_freed_memory()  # no page faults on the per-step activation buffers
    device = batches.device
    optimizers = {stage: make_optimizer(_scaled_groups(method, params), cfg) for stage, params in method.parameter_groups().items()}
    state = TrainState(method, optimizers, batches, cfg.steps, cfg.batch_size, grad_scaler(device, cfg.precision), callbacks)
    for callback in state.callbacks:
        callback.on_train_start(state)
    module = distributed.wrap(method, distributed.current())
    method.train()
    with _stop_on_signals() as stop:
        for step in range(state.step, cfg.steps):
            started = time.perf_counter()
            progress = step / cfg.steps
            ctx = StepContext(step, progress, lambda_at(cfg.lambda_schedule, progress, cfg.lambda_max, cfg.gamma))
            state.lr, state.lambda_ = lr_at(cfg.lr_schedule, progress, cfg.lr), ctx.lambda_
            batch = batches.next()
            metrics: dict[str, torch.Tensor] = {}
            for stage in method.active_stages(ctx):
                optimizer = optimizers[stage]
                for param_group in optimizer.param_groups:  # a pretrained backbone's group learns slower
                    param_group["lr"] = state.lr * param_group.get("lr_scale", 1.0)
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, cfg.precision):
                    out = module(batch, ctx, stage)
                if not torch.isfinite(out.loss):
                    raise NonFiniteLossError(_non_finite(out.loss, out.metrics, step, stage, name, state.last_checkpoint_step))
                state.scaler.scale(out.loss).backward()
                state.scaler.step(optimizer)
                state.scaler.update()
                for key, value in out.metrics.items():
                    metrics[key] = metrics[key] + value if key in metrics else value
            state.metrics = metrics
            for callback in state.callbacks:
                callback.on_step(state)
            state.train_seconds += time.perf_counter() - started
            state.step = step + 1
            logs: dict[str, Any] = {}
            for callback in state.callbacks:
                callback.on_step_end(state, logs)
            if stop.requested:
                for callback in state.callbacks:
                    callback.on_interrupt(state)
                saved = "checkpoint saved" if state.last_checkpoint_step == state.step else "no checkpoint kept"
                raise TrainingInterrupted(f"{stop.requested} at step {state.step} of {name!r}; {saved}")
    for callback in state.callbacks:
        callback.on_train_end(state)
    method.eval()
    return TrainResult(cfg.steps, state.train_seconds, state.images_per_second)


def _scaled_groups(method: Method, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """One stage's parameters in groups by learning-rate scale: the model's backbone at its
    ``backbone_lr_scale``, the rest at 1.0 (one group, scale 1.0, for a network without a backbone)."""
    model = getattr(method, "model", None)
    if isinstance(model, DomainAdversarialNet):
        return lr_scaled_groups(params, model)
    return [{"params": params, "lr_scale": 1.0}]


def _non_finite(loss: torch.Tensor, metrics: dict[str, torch.Tensor], step: int, stage: str, name: str, kept: int | None) -> str:
    values = {k: round(float(v), 4) for k, v in metrics.items()}
    checkpoint = f"the checkpoint of step {kept} is kept" if kept is not None else "no checkpoint was written yet"
    return f"non-finite loss ({loss.item()}) at step {step} of {name!r}, stage {stage!r}; metrics {values}; {checkpoint}"
