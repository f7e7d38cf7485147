"""Hyper-parameter sweeps that choose without target labels: ``dann sweep``.

A sweep draws configs from a search space (:func:`parse_space`) and trains each as a one-mode
study in ``DIR/trials/NNNN/``, with ``train.select_by`` set to the sweep's validator so every
trial ends with its best checkpoint. A trial's objective is that validator's score at the step
it chose; the sweep maximises it with Optuna. **The winner is the trial with the highest
validator score, and nothing else**: target labels, where they exist, are read only after the
search, to print an "oracle target_acc (evaluation only)" column beside each trial.

The Optuna study lives in ``DIR/sweep.db`` (SQLite), so running the same command again
continues it: finished trials are kept, an interrupted one is run again from its start, and
the rest are drawn. With ``jobs`` > 1 that many worker processes (one thread each, unless the
config says ``threads``) draw and run trials against the same database. Samplers: ``tpe``
(Optuna's default TPE), ``random``, and ``grid``, which runs every combination of the choices
in order (at most that many trials; ranges are refused).

The search space, a YAML mapping from dotted config keys (as for ``--set``) to one of::

    modes: [source_only, dann, cdan_e]     # a list: categorical, any YAML values as choices
    train.lambda_max: [0.5, 1, 3]          #   (lists too: [[dann], [cdan_e]])
    train.lr: {log_uniform: [1e-4, 1e-2]}  # a float, uniform in log(lr) between the bounds
    train.momentum: {uniform: [0.5, 0.95]} # a float, uniform between the bounds
    train.steps: {int: [500, 2000]}        # an integer, bounds included
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import torch
import yaml
from optuna.trial import TrialState

from dann.config import merge, to_dict
from dann.data.domains import DomainData
from dann.errors import ConfigError, DannError
from dann.experiments.base import Experiment, StudyConfig, get_experiment
from dann.experiments.configure import resolve_config
from dann.experiments.rundir import RunDirectory
from dann.experiments.study import run_study
from dann.experiments.workers import run_in_processes
from dann.methods import get_method
from dann.select import get_validator
from dann.train.loop import TrainingInterrupted

SAMPLERS = ("grid", "random", "tpe")
RANGES = ("uniform", "log_uniform", "int")
#: keys the sweep itself sets: the validator chooses (``--select-by``), a trial is one job
RESERVED = ("experiment", "train.select_by", "jobs")
STUDY_NAME = "dann-sweep"
EVALUATION_ONLY = "oracle target_acc (evaluation only)"


@dataclass(frozen=True)
class Dimension:
    """One key of the search space: categorical ``choices``, or a ``uniform``/``log_uniform``/``int`` range."""

    key: str
    kind: Literal["choice", "uniform", "log_uniform", "int"]
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    #: Optuna keeps only None, bool, int, float and str as choices: others travel as JSON text
    encoded: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value of this key, as the config takes it."""
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(self.key, self.optuna_choices()))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log_uniform")

    def optuna_choices(self) -> list[Any]:
        return [json.dumps(c) for c in self.choices] if self.encoded else list(self.choices)

    def decode(self, value: Any) -> Any:
        """An Optuna parameter value -> the config value."""
        return json.loads(value) if self.encoded and self.kind == "choice" else value

    def example(self) -> Any:
        """A value of this key, to check the space against the config before any trial."""
        return self.choices[0] if self.kind == "choice" else (int(self.low) if self.kind == "int" else self.low)


def parse_space(raw: Any) -> list[Dimension]:
    """The search space from its YAML mapping (format in the module docstring); mistakes are one-line ConfigErrors."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"a search space is a non-empty mapping of config keys to choices or ranges, got {raw!r}")
    keys = [str(key) for key in raw]
    for key in keys:
        if key in RESERVED:
            raise ConfigError(f"space key {key}: the sweep sets it itself (--select-by chooses, one job per trial)")
        if any(other.startswith(key + ".") for other in keys):
            raise ConfigError(f"space key {key} contains another space key; give the dotted keys inside it")
    return [_dimension(str(key), value) for key, value in raw.items()]


def _dimension(key: str, value: Any) -> Dimension:
    forms = "a list of choices or one of {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, {int: [lo, hi]}"
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"space key {key}: an empty list of choices")
        if any(value.count(choice) > 1 for choice in value):
            raise ConfigError(f"space key {key}: a choice is listed twice in {value!r}")
        plain = all(choice is None or isinstance(choice, (bool, int, float, str)) for choice in value)
        return Dimension(key, "choice", tuple(value), encoded=not plain)
    if not (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in RANGES):
        raise ConfigError(f"space key {key}: expected {forms}, got {value!r}")
    kind, bounds = next(iter(value.items()))
    if isinstance(bounds, list) and all(isinstance(b, str) for b in bounds):  # YAML 1.1 reads 1e-4 as text
        try:
            bounds = [float(b) for b in bounds]
        except ValueError:
            pass
    numbers = isinstance(bounds, list) and len(bounds) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds
    )
    if not numbers:
        raise ConfigError(f"space key {key}: {{{kind}: [lo, hi]}} needs two finite numbers, got {bounds!r}")
    low, high = bounds
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"space key {key}: {{int: [lo, hi]}} needs integer bounds, got {bounds!r}")
    if not low < high:
        raise ConfigError(f"space key {key}: {{{kind}: [lo, hi]}} needs lo < hi, got {bounds!r}")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"space key {key}: {{log_uniform: [lo, hi]}} needs lo > 0, got {bounds!r}")
    return Dimension(key, kind, low=float(low), high=float(high))


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 0.01}`` -> ``{"train": {"lr": 0.01}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


@dataclass
class Sweep:
    """What a sweep searches and how it chooses; stored with the study, so a resumed sweep is the same sweep.

    ``base`` is the config every trial starts from (a ``--config`` file with the ``--set``
    overrides on top); a trial's values go on top of it, then the sweep's own keys.
    """

    experiment: str
    validator: str
    space: dict[str, Any]
    base: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"

    def __post_init__(self) -> None:
        get_validator(self.validator)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        self.dimensions = parse_space(self.space)
        if self.sampler == "grid" and (ranges := [d.key for d in self.dimensions if d.kind != "choice"]):
            raise ConfigError(f"--sampler grid needs a list of choices for every key; {ranges[0]} is a range")

    def definition(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "validator": self.validator, "sampler": self.sampler, "space": self.space, "base": self.base}

    def grid_size(self) -> int | None:
        return math.prod(len(d.choices) for d in self.dimensions) if self.sampler == "grid" else None

    def config(self, values: Mapping[str, Any], threads: int) -> StudyConfig:
        """The resolved config of the trial with ``values`` (``{dotted key: value}``)."""
        experiment = get_experiment(self.experiment)
        layer = merge(self.base, nested(values))
        validators = layer.get("validation", {}).get("validators")
        if validators is None:  # score only what chooses, unless the config asks for more
            validators = [self.validator]
        elif self.validator not in validators:
            validators = [*validators, self.validator]
        # one line per trial instead of progress bars, which workers would draw over each other
        own = {"jobs": 1, "train": {"select_by": self.validator, "progress_bar": False}, "validation": {"validators": validators}}
        cfg = resolve_config(experiment, merge(layer, own))
        cfg.threads = cfg.threads or threads  # 0 (torch's default) would take every core in every worker
        if len(cfg.modes) != 1:
            raise ConfigError(f"a trial trains one mode, got modes={cfg.modes}: put modes in the space or --set modes=[dann]")
        if get_method(cfg.modes[0]).cls.uses_target_labels:
            raise ConfigError(f"{cfg.modes[0]} trains on target labels; a sweep chooses without them")
        return cfg

    def check(self, threads: int) -> None:
        """Resolve the config at every choice of every key (the others at their first), before any trial runs."""
        first = {d.key: d.example() for d in self.dimensions}
        for d in self.dimensions:
            for value in d.choices or (d.example(),):
                self.config({**first, d.key: value}, threads)


def storage_url(out: Path) -> str:
    return f"sqlite:///{(out / 'sweep.db').resolve()}"


def open_study(out: Path, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """The sweep's Optuna study in ``out/sweep.db`` (created on first use)."""
    # a generous lock timeout: several workers write to one SQLite file
    storage = optuna.storages.RDBStorage(storage_url(out), engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=sampler, load_if_exists=True)


def make_sampler(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler({d.key: d.optuna_choices() for d in sweep.dimensions}, seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def run_sweep(
    sweep: Sweep, trials: int, out: Path, jobs: int = 1, data_dir: str | None = None, plugins: Sequence[str] = ()
) -> dict[str, Any]:
    """Run the sweep in ``out`` until its study holds ``trials`` finished trials; return the leaderboard.

    A trial that failed (e.g. a loss that became NaN) counts as finished; one that was
    interrupted is run again. Writes ``out/leaderboard.json`` and the winner's ``out/best.yaml``.
    """
    if trials < 1 or jobs < 1:
        raise ConfigError(f"--trials and --jobs must be at least 1, got {trials} and {jobs}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, torch.get_num_threads() // jobs)
    sweep.check(threads)
    study = open_study(out)
    stored = study.user_attrs.get("definition")
    if stored is None:
        study.set_user_attr("definition", sweep.definition())
        (out / "sweep.yaml").write_text(yaml.safe_dump(sweep.definition(), sort_keys=False))
    elif stored != json.loads(json.dumps(sweep.definition())):
        raise ConfigError(f"{out} holds another sweep ({out / 'sweep.yaml'}); give the same experiment, config, space, validator and sampler, or another --out")
    if (size := sweep.grid_size()) is not None and trials > size:
        print(f"dann sweep: the grid has {size} points; running {size} trials, not {trials}")
        trials = size
    remaining = trials - len(_finished(_queue(study, sweep)))
    if remaining > 0:
        args = (sweep, out, data_dir, threads)
        slots = [str(i) for i in range(remaining)]
        if jobs == 1:
            context = _open_sweep(*args)
            for slot in slots:
                _run_trial(context, slot, 0)
        else:
            run_in_processes(_open_sweep, args, _run_trial, slots, min(jobs, remaining), threads, plugins)
    board = leaderboard(sweep, out)
    (out / "leaderboard.json").write_text(json.dumps(board, indent=2) + "\n")
    if board["winner"] is not None:
        winner = board["trials"][0]
        config = (out / winner["run_dir"] / "config.yaml").read_text()
        header = f"# the winner of the sweep in {out}: trial {winner['trial']}, chosen by {sweep.validator} alone (no target labels)\n"
        (out / "best.yaml").write_text(header + config)
    return board


def _queue(study: optuna.Study, sweep: Sweep) -> optuna.Study:
    """Queue what must run with given values: the trials an interrupted sweep left unfinished, and
    for a grid every point not yet finished or queued (so parallel workers never draw the same point)."""
    requeued = set(study.user_attrs.get("requeued", []))
    lost = [
        t for t in study.get_trials(deepcopy=False)
        if t.number not in requeued and (t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")))
    ]
    for t in lost:
        if t.state == TrialState.RUNNING:  # its process was killed before it could say so
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    if lost:
        study.set_user_attr("requeued", sorted(requeued | {t.number for t in lost}))
    if sweep.sampler == "grid":
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        taken = {_point(t.params) for t in [*_finished(study), *waiting]}
        keys = [d.key for d in sweep.dimensions]
        for values in itertools.product(*(d.optuna_choices() for d in sweep.dimensions)):
            params = dict(zip(keys, values))
            if _point(params) not in taken:
                study.enqueue_trial(params)
    else:
        for t in lost:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return study


def _point(params: Mapping[str, Any]) -> str:
    return json.dumps(sorted(params.items()))


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials and failed ones that will not be run again."""
    requeued = set(study.user_attrs.get("requeued", []))
    return [
        t for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and t.number not in requeued and not t.user_attrs.get("interrupted"))
    ]


@dataclass
class _Context:
    """What a process running trials keeps between them: the sweep, and the last data it loaded."""

    sweep: Sweep
    out: Path
    data_dir: str | None
    threads: int
    data_key: str = ""
    data: DomainData | None = None


def _open_sweep(sweep: Sweep, out: Path, data_dir: str | None, threads: int) -> _Context:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _Context(sweep, out, data_dir, threads)


def _trial_data(context: _Context, experiment: Experiment, cfg: StudyConfig) -> DomainData:
    """The data of ``cfg``, loaded again only when a key that can change it differs from the last trial's."""
    # how to train and what to score cannot change the data; everything else might
    kept = {k: v for k, v in to_dict(cfg).items() if k not in ("modes", "train", "method", "jobs", "threads", "probe_samples", "recipe")}
    kept["validation"] = {k: v for k, v in kept["validation"].items() if k != "validators"}
    key = json.dumps(kept, sort_keys=True)
    if key != context.data_key or context.data is None:
        context.data, context.data_key = None, ""  # free the old data before loading the new
        context.data, context.data_key = experiment.data(cfg, context.data_dir), key
    return context.data


def _run_trial(context: _Context, slot: str, line: int) -> int:
    """Draw one trial, train it, tell the study its score; returns the trial's number."""
    sweep, out = context.sweep, context.out
    study = open_study(out)
    # a fresh sampler per trial, seeded by the study's size and the worker: a resumed sweep does
    # not draw its first trials again, and workers that ask at once draw different values
    study.sampler = make_sampler(sweep, int(np.random.SeedSequence([len(study.get_trials(deepcopy=False)), line]).generate_state(1)[0]))
    trial = study.ask()
    run_dir = Path("trials") / f"{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    try:
        values = {d.key: d.suggest(trial) for d in sweep.dimensions}
        cfg = sweep.config(values, context.threads)
        experiment = get_experiment(sweep.experiment)
        if (out / run_dir).exists():  # left by a sweep whose database was removed: do not resume its checkpoint
            shutil.rmtree(out / run_dir)
        run = RunDirectory(out / run_dir)  # config.yaml, run.json and the lock, as `dann run` makes them
        run.create(cfg, context.data_dir, ())  # plugins: imported by the worker pool already
        try:
            summary = run_study(experiment, cfg, run.path, context.data_dir, data=_trial_data(context, experiment, cfg), plots=False)
        finally:
            run.close()
        selection = summary["results"][cfg.modes[0]]["selection"]
        score = selection["scores"][sweep.validator]
        trial.set_user_attr("step", selection["step"])
    except (TrainingInterrupted, KeyboardInterrupt):  # run again by the next `dann sweep` on this directory
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except DannError as err:  # this point of the space does not train (a NaN loss, a bad combination)
        trial.set_user_attr("error", str(err))
        study.tell(trial, state=TrialState.FAIL)
        print(f"dann sweep: trial {trial.number} failed: {err}", flush=True)
        return trial.number
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, score)
    shown = " ".join(f"{key}={_show(value)}" for key, value in values.items())
    print(f"dann sweep: trial {trial.number}: {sweep.validator}={score:.4f} at step {selection['step']} ({shown})", flush=True)
    return trial.number


def leaderboard(sweep: Sweep, out: Path) -> dict[str, Any]:
    """The completed trials sorted by the validator's score (best first), the winner first.

    ``oracle_target_acc`` (only where target labels exist) is the target test accuracy of each
    trial's chosen weights, read from its results after the search: evaluation only. It took no
    part in choosing anything.
    """
    study = open_study(out)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.value is None or math.isnan(t.value):
            continue
        values = {d.key: d.decode(t.params[d.key]) for d in sweep.dimensions if d.key in t.params}
        row = {"trial": t.number, "score": t.value, "step": t.user_attrs.get("step"), "params": values, "run_dir": t.user_attrs["run_dir"]}
        rows.append(row)
    rows.sort(key=lambda row: (-row["score"], row["trial"]))
    labelled = bool(rows)
    for row in rows:
        results = sorted((out / row["run_dir"] / "results").glob("*.json"))
        result = json.loads(results[0].read_text())["scores"] if results else {}
        if "target_acc" in result:
            row["oracle_target_acc"] = result["target_acc"]
        else:
            labelled = False
    if not labelled:
        for row in rows:
            row.pop("oracle_target_acc", None)
    failed = [t.number for t in _finished(study) if t.state == TrialState.FAIL]
    return {
        "experiment": sweep.experiment,
        "validator": sweep.validator,
        "chosen_by": f"{sweep.validator} alone: the highest score on held-out data without target labels",
        "sampler": sweep.sampler,
        "winner": rows[0]["trial"] if rows else None,
        "target_labels": labelled,
        "note": "oracle_target_acc reads target labels: evaluation only, it chose nothing" if labelled else "no target labels",
        "trials": rows,
        "failed": failed,
    }


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def format_leaderboard(board: Mapping[str, Any]) -> str:
    """The terminal table: best validator score first; ``*`` marks the winner (chosen by the validator alone)."""
    validator = board["validator"]
    oracle = board["target_labels"]
    header = f"  {'trial':>5} {validator:>10} {'step':>6}" + (f" {EVALUATION_ONLY:>35}" if oracle else "") + "  params"
    lines = [f"{board['experiment']}: trials by {validator}, higher is better; * = winner, chosen by {validator} alone", header, "-" * len(header)]
    for row in board["trials"]:
        mark = "*" if row["trial"] == board["winner"] else " "
        step = "-" if row["step"] is None else str(row["step"])
        cells = f"{mark} {row['trial']:>5} {row['score']:>10.4f} {step:>6}"
        if oracle:
            cells += f" {row['oracle_target_acc']:>35.4f}"
        lines.append(cells + "  " + " ".join(f"{k}={_show(v)}" for k, v in row["params"].items()))
    if board["failed"]:
        lines.append(f"failed trials: {', '.join(map(str, board['failed']))}")
    return "\n".join(lines)
