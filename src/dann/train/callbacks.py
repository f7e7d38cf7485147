"""Small objects the training loop calls at fixed points, so the loop itself stays short.

Hooks, in the order of the callback list:
``on_train_start(state)``; ``on_step(state)`` right after the optimiser steps (timed as training);
``on_step_end(state, logs)`` for bookkeeping (not timed; ``logs`` is a dict earlier callbacks
fill and later ones read, e.g. evaluation results for the metrics log); ``on_interrupt(state)``
when a signal stops training; ``on_train_end(state)``. A callback's ``state_dict()`` is saved in
each checkpoint and given back to ``load_state_dict`` on resume, so a resumed run continues exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from dann.errors import DataError
from dann.methods.base import Method
from dann.train.checkpoint import FINGERPRINT_KEY, load_checkpoint, save_checkpoint
from dann.train.metrics_log import MetricsLog

if TYPE_CHECKING:
    from dann.train.loop import TrainState


class Callback:
    """Base class: every hook does nothing."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_step(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState, logs: dict[str, Any]) -> None: ...

    def on_interrupt(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MovingAverage(Callback):
    """An exponential moving average of the weights, warmed up; evaluated, and the weights training ends with.

    Decay ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: the warm-up lets the average
    forget the random initial weights within a few dozen steps, so short runs are not evaluated
    on weights close to their initialisation. It smooths the oscillation of the adversarial game.
    """

    def __init__(self, method: Method, decay: float) -> None:
        self.averaged = AveragedModel(method, multi_avg_fn=_warm_ema(decay), use_buffers=True)

    def on_train_start(self, state: TrainState) -> None:
        state.eval_model = lambda: self.averaged.module

    def on_step(self, state: TrainState) -> None:
        self.averaged.update_parameters(state.method)

    def on_train_end(self, state: TrainState) -> None:
        state.method.load_state_dict(self.averaged.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


def _warm_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        count = float(n)
        if averaged[0].is_floating_point():  # AveragedModel calls this once per device and dtype
            torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + count) / (10.0 + count)))
        else:  # counters, e.g. BatchNorm's num_batches_tracked, are copied
            torch._foreach_copy_(averaged, current)

    return update


class PeriodicEvaluation(Callback):
    """Every ``every`` steps and at the end, ``evaluate(model)`` on the evaluation weights; results go into ``logs``.

    Runs on rank 0 only, in eval mode; its time is not training time.
    """

    def __init__(self, evaluate: Callable[[Method], dict[str, float]], every: int) -> None:
        self.evaluate, self.every = evaluate, every

    def on_step_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        if state.is_main and ((self.every and state.step % self.every == 0) or state.step == state.steps):
            logs.update(self.evaluate(state.eval_model()))
            state.method.train()


class KeepBest(Callback):
    """At every check, label-free scores of the evaluation weights; training ends with the weights that scored best.

    ``score(model)`` returns ``{validator: score}`` (higher is better) from held-out data without
    target labels; ``select_by`` names the one that chooses (None: only record, keep the last
    weights). The scores go into ``logs`` as ``val_<validator>``. The best weights and the score
    history are in the checkpoint, so a resumed run chooses exactly as an uninterrupted one.
    """

    def __init__(self, score: Callable[[Method], dict[str, float]], select_by: str | None, every: int) -> None:
        self.score, self.select_by, self.every = score, select_by, every
        self.history: list[dict[str, float]] = []
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_step_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        if not (self.every and state.is_main and (state.step % self.every == 0 or state.step == state.steps)):
            return
        model = state.eval_model()
        scores = self.score(model)
        state.method.train()
        if self.select_by is not None and self.select_by not in scores:
            raise DataError(f"train.select_by={self.select_by} gives no score on these held-out splits (too few samples?); hold out more (validation.*)")
        logs.update({f"val_{name}": value for name, value in scores.items()})
        self.history.append({"step": state.step, **scores})
        if self.select_by is not None and (self.best_step is None or scores[self.select_by] > self.best_score):
            self.best_step = state.step
            self.best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}

    @property
    def best_score(self) -> float:
        return next(row[self.select_by] for row in self.history if row["step"] == self.best_step)

    def on_train_end(self, state: TrainState) -> None:
        if self.best_state is not None:
            state.method.load_state_dict(self.best_state)

    def record(self) -> dict[str, Any]:
        """What was scored and chosen: ``{"validator", "step", "scores", "history"}``."""
        chosen = next((row for row in self.history if row["step"] == self.best_step), None)
        return {
            "validator": self.select_by,
            "step": self.best_step,
            "scores": {k: v for k, v in (chosen or (self.history[-1] if self.history else {})).items() if k != "step"},
            "history": self.history,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best_step": -1 if self.best_step is None else self.best_step, "best_state": self.best_state or {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state["history"]]
        self.best_step = None if int(state["best_step"]) < 0 else int(state["best_step"])
        self.best_state = dict(state["best_state"]) or None


class MetricsLogger(Callback):
    """Averages each logged quantity over ``every`` steps and writes a row (JSON lines and TensorBoard).

    A row also carries whatever earlier callbacks put in ``logs`` (evaluation results). On resume
    the rows after the checkpoint are forgotten: the resumed run logs them again.
    """

    def __init__(self, log: MetricsLog, every: int) -> None:
        self.log, self.every = log, every
        self.sums: dict[str, torch.Tensor] = {}
        self._rewound = False

    def on_step_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        done = state.step
        if not self._rewound and state.is_main:  # forget rows a resumed run is about to log again
            self.log.rewind(done - 1)
            self._rewound = True
        for key, value in state.metrics.items():
            self.sums[key] = self.sums.get(key, 0) + value
        if done % self.every == 0 or done == state.steps:
            count = self.every if done % self.every == 0 else done % self.every
            row = {"step": done, "lr": state.lr, "lambda": state.lambda_}
            row.update({key: float(total) / count for key, total in self.sums.items()})
            self.sums.clear()
            merged = {**row, **logs}
            logs.clear()
            logs.update(merged)
        if logs and state.is_main:
            self.log.write({"step": done, **logs})

    def on_train_end(self, state: TrainState) -> None:
        self.log.close()

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: torch.as_tensor(v) for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])


class ProgressBar(Callback):
    """Progress of one run on stderr, ending with one result line that stays.

    On a terminal: a tqdm bar with images/s and the latest losses (``line`` keeps side-by-side
    runs on their own lines), cleared at the end. Elsewhere (a log file, CI, a pipe), where
    carriage-return updates would pile up: a plain line every ``1 / lines`` of the run. Either
    way the run ends with ``name: N steps in S s (I img/s); losses``.
    """

    def __init__(self, name: str, line: int = 0, stream: TextIO | None = None, lines: int = 10) -> None:
        self.name, self.line, self.lines = name, line, lines
        self.stream = stream
        self.bar: tqdm | None = None
        self.latest: dict[str, float] = {}

    @property
    def out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr  # sys.stderr as it is now

    def on_step_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        if not state.is_main:
            return
        self.latest.update((k, float(v)) for k, v in logs.items() if k.endswith("loss"))
        if not _is_terminal(self.out):
            every = max(1, state.steps // max(1, self.lines))
            if state.step % every == 0 and state.step < state.steps:
                self.out.write(f"{self.name}: step {state.step}/{state.steps} ({100 * state.step // state.steps}%), "
                               f"{state.images_per_second:.0f} img/s{self._losses(', ')}\n")
                self.out.flush()
            return
        if self.bar is None:
            self.bar = tqdm(
                total=state.steps, initial=state.step - 1, unit="step", leave=False, dynamic_ncols=True,
                desc=self.name, position=self.line, file=self.out,
            )
        self.bar.update()
        if logs:
            self.bar.set_postfix({"img/s": f"{state.images_per_second:.0f}", **{k: f"{v:.3f}" for k, v in self.latest.items()}})

    def on_train_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
        if state.is_main:
            summary = (f"{self.name}: {state.steps} steps in {state.train_seconds:.1f} s "
                       f"({state.images_per_second:.0f} img/s){self._losses('; ')}")
            tqdm.write(summary, file=self.out)  # above any other run's bar still drawing

    def _losses(self, lead: str) -> str:
        return (lead + ", ".join(f"{k} {v:.3f}" for k, v in self.latest.items())) if self.latest else ""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Checkpoint(Callback):
    """Saves everything a resumed run needs every ``every`` steps, on a signal and at the end; resumes from it.

    Put it last: it saves after the other callbacks have done their step's work, and restores
    their states through ``load_state_dict``. Only rank 0 writes. ``fingerprint`` names the
    settings the run trains with (see :func:`dann.runfiles.fingerprint`); it is saved in every
    checkpoint, and a checkpoint saved under another one is refused rather than continued with
    settings it was not made with. A checkpoint without one (written by an older dann) is accepted.
    """

    def __init__(self, path: str | Path, every: int, fingerprint: str | None = None) -> None:
        self.path, self.every, self.fingerprint = Path(path), every, fingerprint

    def on_train_start(self, state: TrainState) -> None:
        if not self.path.exists():
            return
        checkpoint = load_checkpoint(self.path)
        saved = checkpoint.get(FINGERPRINT_KEY)
        if self.fingerprint is not None and saved is not None and saved != self.fingerprint:
            raise DataError(
                f"checkpoint {self.path} was written with other settings than this run's (config fingerprint "
                f"{str(saved)[:12]}, this run {self.fingerprint[:12]}); resume with the config it was written "
                "with, or delete it to train from the start"
            )
        try:
            state.restore(checkpoint)
        except DataError as err:
            raise DataError(f"{self.path}: {err}") from None
        state.last_checkpoint_step = state.step

    def on_step_end(self, state: TrainState, logs: dict[str, Any]) -> None:
        if self.every and state.step % self.every == 0 and state.step < state.steps:
            self.save(state)

    def on_interrupt(self, state: TrainState) -> None:
        self.save(state)

    def on_train_end(self, state: TrainState) -> None:
        self.save(state)

    def save(self, state: TrainState) -> None:
        if state.is_main:
            snapshot = state.snapshot()
            if self.fingerprint is not None:
                snapshot[FINGERPRINT_KEY] = self.fingerprint
            save_checkpoint(snapshot, self.path)
        state.last_checkpoint_step = state.step
