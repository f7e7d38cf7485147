"""How far each label-free validator can be trusted: weighted Spearman and regret over a fixed population.

    .venv/bin/python benchmarks/validators.py --jobs 2 --data-dir /path/with/mnist   # the table in docs/results/
    .venv/bin/python benchmarks/validators.py --shifts blobs-30 --quick              # a smoke test, seconds

**Population.** Per shift, every combination of method x learning rate x ``lambda_max`` x seed
(``source_only`` ignores ``lambda_max``, so it runs once per learning rate and seed) is trained
once from the experiment's defaults; the seed draws the data, the held-out splits and the
initialisation. Every ``eval_every`` steps and at the end, the evaluation weights of a run are
one *candidate*: each validator scores it on the held-out validation splits (no target labels),
and its target test accuracy is measured (evaluation only: it chooses nothing). See
``POPULATIONS`` and ``SHIFTS`` for the exact grid of each shift.

**Weighted Spearman** (Musgrave, Belongie & Lim, 2023, "Three new validators and a large-scale
benchmark ranking for unsupervised domain adaptation"): the Pearson correlation of the two
rankings (average ranks for ties) of the candidates' validator scores and target accuracies, each
candidate weighted by ``max(s_i, t_i) ** power`` (``--power``, default 2), where ``s_i`` and
``t_i`` are its *dense* ranks by validator score and by target accuracy divided by the largest
dense rank (so in ``(0, 1]``, 1 for the best). The weights make the correlation about the
candidates that either the validator or the truth puts near the top, the ones model selection
is about; this is how the authors' public benchmark code weights (one earlier version of it
weighted by the validator's rank alone). 1 is perfect, 0 no relation, < 0 misleading.

**Regret**: the best target accuracy in the population minus the target accuracy of the
candidate with the top validator score (the mean over candidates tied at the top). A
non-finite score counts as the worst.

Prints one JSON line per shift, then a summary line; ``--out`` writes the markdown table.

**From a sweep** (``--from-sweep DIR``): no training. The population is the checks of every
trial of a finished ``dann sweep`` whose trials scored every validator (``--set
validation.validators=[...]``); each check's validator scores and target test accuracy are read
from the trial's ``metrics/<mode>.jsonl``. Prints one JSON line for that population.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.stats import rankdata

from dann.config import merge
from dann.data.domains import DomainData
from dann.errors import DannError
from dann.evaluate.metrics import class_accuracy, extract_features
from dann.evaluate.validation import validation_scores
from dann.experiments import get_experiment, resolve_config
from dann.experiments.workers import run_in_processes
from dann.fit import fit
from dann.select import VALIDATORS
from dann.train.callbacks import Callback

#: shift -> (experiment, overrides of the experiment's defaults, population)
SHIFTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "blobs-30": ("blobs", {"data": {"rotation": 30.0}}, "blobs"),
    "blobs-60": ("blobs", {"data": {"rotation": 60.0}}, "blobs"),
    "blobs-90": ("blobs", {"data": {"rotation": 90.0}}, "blobs"),
    "mnist-mnistm": ("mnist-mnistm", {}, "digits"),
    "mnistm-mnist": ("mnistm-mnist", {}, "digits"),
    "mnist-mnistm-intermediate": ("mnist-mnistm", {"data": {"intermediate": 0.5}, "method": {"domain_loss": "ce"}}, "digits"),
}


@dataclass(frozen=True)
class Population:
    """The grid of runs on one shift and how long each trains."""

    methods: tuple[str, ...]
    lrs: tuple[float, ...]
    lambda_maxes: tuple[float, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    overrides: tuple[tuple[str, Any], ...] = ()  # dotted key -> value, for every run

    def runs(self) -> list[dict[str, Any]]:
        grid = []
        for method, lr, lambda_max, seed in itertools.product(self.methods, self.lrs, self.lambda_maxes, self.seeds):
            if method == "source_only" and lambda_max != self.lambda_maxes[0]:
                continue  # no adversary: lambda_max changes nothing
            grid.append({"method": method, "lr": lr, "lambda_max": lambda_max, "seed": seed})
        return grid

    def describe(self) -> str:
        extra = "".join(f", {key}={value}" for key, value in self.overrides)
        return (
            f"{{{', '.join(self.methods)}}} x lr {{{', '.join(map(str, self.lrs))}}} x lambda_max "
            f"{{{', '.join(map(str, self.lambda_maxes))}}} x seed {{{', '.join(map(str, self.seeds))}}} "
            f"({len(self.runs())} runs), {self.steps} steps, a candidate every {self.eval_every}{extra}"
        )


POPULATIONS = {
    "blobs": Population(("source_only", "dann", "cdan_e"), (0.003, 0.01, 0.03), (0.3, 1.0, 3.0), (0, 1), 600, 100),
    # reduced to fit a 2-core machine: 5,000 training and 1,000 test images per domain
    "digits": Population(
        ("source_only", "dann"), (0.0003, 0.001), (0.3, 1.0), (0,), 600, 200,
        (("data.train_limit", 5000), ("data.test_limit", 1000)),
    ),
}


def population_for(shift: str, quick: bool) -> Population:
    """The shift's population; ``quick``: two short runs on few images, a smoke test of this script, not a measurement."""
    population = POPULATIONS[SHIFTS[shift][2]]
    if not quick:
        return population
    small = tuple((key, 500 if key == "data.train_limit" else 200) for key, _ in population.overrides)
    return dataclasses.replace(population, methods=("source_only", "dann"), lrs=population.lrs[-1:], lambda_maxes=(1.0,), seeds=(0,), steps=40, eval_every=20, overrides=small)


def dotted(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


class Candidates(Callback):
    """At every check, each validator's score (no target labels) and the target test accuracy (evaluation only)."""

    def __init__(self, data: DomainData, validators: list[str], seed: int, every: int) -> None:
        self.data, self.validators, self.seed, self.every = data, validators, seed, every
        self.rows: list[dict[str, float]] = []

    def on_step_end(self, state, logs: dict[str, Any]) -> None:
        if not (state.step % self.every == 0 or state.step == state.steps):
            return
        model = state.eval_model()
        scores = validation_scores(model, self.data, self.validators, self.seed)
        features = extract_features(model, self.data.target_test.x, self.data.prepare, "target")
        target_acc = class_accuracy(model, features, self.data.target_test.y)
        state.method.train()
        self.rows.append({"step": state.step, "target_acc": target_acc, **scores})


@dataclass
class _Worker:
    data_dir: str | None
    quick: bool
    runs_file: Path | None
    key: str = ""
    data: DomainData | None = None


def _setup(data_dir: str | None, quick: bool, runs_file: Path | None) -> _Worker:
    return _Worker(data_dir, quick, runs_file)


def config_for_run(shift: str, run: dict[str, Any], population: Population):
    experiment_name, shift_overrides, _ = SHIFTS[shift]
    experiment = get_experiment(experiment_name)
    overrides = merge(shift_overrides, dotted(population.overrides))
    overrides = merge(overrides, {
        "seed": run["seed"], "modes": [run["method"]],
        "train": {"steps": population.steps, "eval_every": population.eval_every, "lr": run["lr"],
                  "lambda_max": run["lambda_max"], "select_by": "", "progress_bar": False},
        "validation": {"validators": list(VALIDATORS)},
    })
    return experiment, resolve_config(experiment, overrides)


def _train(worker: _Worker, item: str, line: int) -> dict[str, Any]:
    shift, run = json.loads(item)
    population = population_for(shift, worker.quick)
    experiment, cfg = config_for_run(shift, run, population)
    key = json.dumps([shift, run["seed"]])
    if key != worker.key:
        worker.data = None
        worker.data, worker.key = experiment.data(cfg, worker.data_dir), key
    candidates = Candidates(worker.data, list(VALIDATORS), cfg.seed, population.eval_every)
    started = time.perf_counter()
    fit(worker.data, run["method"], model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed, callbacks=[candidates])
    result = {"shift": shift, **run, "seconds": time.perf_counter() - started, "candidates": candidates.rows}
    if worker.runs_file is not None:  # one line per run, appended at once: an interrupted benchmark keeps it
        with open(worker.runs_file, "a") as file:
            file.write(json.dumps({"item": item, "result": result}) + "\n")
    return result


def runs_from_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every trial of a ``dann sweep`` directory as a run of the population, its checks the candidates."""
    if not (sweep_dir / "trials").is_dir():
        raise DannError(f"{sweep_dir} is not a sweep directory (no trials/ inside)")
    runs = []
    for trial in sorted((sweep_dir / "trials").iterdir()):
        config = yaml.safe_load((trial / "config.yaml").read_text())
        mode = config["modes"][0]
        results = trial / "results" / f"{mode}.json"
        if not results.exists():
            continue  # a trial that failed or was interrupted
        checks = [row for row in map(json.loads, (trial / "metrics" / f"{mode}.jsonl").read_text().splitlines()) if "val_source_acc" in row]
        if not checks:
            raise DannError(f"{trial} has no scored checks: run the sweep with --set train.eval_every=N")
        missing = [name for name in VALIDATORS if f"val_{name}" not in checks[0]]
        if missing:
            raise DannError(f"{trial} did not score {', '.join(missing)}: run the sweep with --set validation.validators=[{','.join(VALIDATORS)}]")
        candidates = [{"step": row["step"], "target_acc": row["target_acc"], **{name: row[f"val_{name}"] for name in VALIDATORS}} for row in checks]
        runs.append({"trial": trial.name, "method": mode, "seconds": json.loads(results.read_text())["scores"]["train_seconds"], "candidates": candidates})
    if not runs:
        raise DannError(f"{sweep_dir} holds no finished trials")
    return runs


def weighted_spearman(scores: np.ndarray, accuracies: np.ndarray, power: float = 2.0) -> float:
    """Weighted Pearson correlation of the average ranks, weights ``max(dense score rank, dense accuracy rank) ** power``
    with each dense rank divided by its largest (see the module docstring)."""
    scores = worst_for_non_finite(scores)
    top_s = rankdata(scores, method="dense")
    top_t = rankdata(accuracies, method="dense")
    weights = np.maximum(top_s / top_s.max(), top_t / top_t.max()) ** power
    x, y = rankdata(scores), rankdata(accuracies)
    mx, my = np.average(x, weights=weights), np.average(y, weights=weights)
    cov = np.average((x - mx) * (y - my), weights=weights)
    spread = math.sqrt(np.average((x - mx) ** 2, weights=weights) * np.average((y - my) ** 2, weights=weights))
    return float(cov / spread) if spread > 0 else 0.0


def regret(scores: np.ndarray, accuracies: np.ndarray) -> float:
    """Best accuracy minus the (mean) accuracy of the candidates with the top score."""
    scores = worst_for_non_finite(scores)
    return float(accuracies.max() - accuracies[scores == scores.max()].mean())


def worst_for_non_finite(scores: np.ndarray) -> np.ndarray:
    finite = np.isfinite(scores)
    return np.where(finite, scores, scores[finite].min() if finite.any() else 0.0)


def shift_report(shift: str, runs: list[dict[str, Any]], power: float) -> dict[str, Any]:
    rows = [row for run in runs for row in run["candidates"]]
    accuracies = np.array([row["target_acc"] for row in rows])
    report = {
        "shift": shift, "runs": len(runs), "candidates": len(rows),
        "best_target_acc": round(float(accuracies.max()), 4), "median_target_acc": round(float(np.median(accuracies)), 4),
        "train_seconds": round(sum(run["seconds"] for run in runs), 1), "validators": {},
    }
    for name in VALIDATORS:
        scores = np.array([row.get(name, math.nan) for row in rows], dtype=float)
        report["validators"][name] = {
            "weighted_spearman": round(weighted_spearman(scores, accuracies, power), 3), "regret": round(regret(scores, accuracies), 4),
        }
    return report


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    means = {
        name: {
            "weighted_spearman": round(float(np.mean([r["validators"][name]["weighted_spearman"] for r in reports])), 3),
            "regret": round(float(np.mean([r["validators"][name]["regret"] for r in reports])), 4),
        }
        for name in VALIDATORS
    }
    best = max(means, key=lambda name: (means[name]["weighted_spearman"], -means[name]["regret"]))
    return {"summary": True, "shifts": [r["shift"] for r in reports], "mean": means, "most_reliable": best}


def markdown(reports: list[dict[str, Any]], total: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = "python benchmarks/validators.py " + " ".join(sys.argv[1:])
    shifts = [r["shift"] for r in reports]
    lines = [
        "# Which validator to trust: weighted Spearman and regret",
        "",
        f"Date: {time.strftime('%Y-%m-%d')}. Commit: `{commit}`. Machine: 2 CPU cores shared with other jobs, no GPU; "
        f"{args.jobs} worker process(es), one thread each; {seconds / 60:.1f} minutes from start to table.",
        "",
        "Recipe: each experiment's `default` recipe, with the population's settings below.",
        "",
        f"Command: `{command}`",
        "",
        "Population per shift (every check of every run is one candidate; target accuracy is measured for this",
        "table only and chooses nothing):",
        "",
    ]
    for kind in dict.fromkeys(SHIFTS[s][2] for s in shifts):
        used = [s for s in shifts if SHIFTS[s][2] == kind]
        lines.append(f"- {', '.join(used)}: {population_for(used[0], args.quick).describe()}")
    lines += [
        "",
        "Cells: weighted Spearman (higher is better, 1 perfect) / regret (best target accuracy in the population",
        "minus that of the candidate the validator ranks first; lower is better). Weights: each candidate by",
        f"max(normalised dense rank by score, by target accuracy) ** {args.power}; see `benchmarks/validators.py`.",
        "",
        "| validator | " + " | ".join(shifts) + " | mean |",
        "|---|" + "---|" * (len(shifts) + 1),
    ]
    for name in VALIDATORS:
        cells = [f"{r['validators'][name]['weighted_spearman']:.2f} / {r['validators'][name]['regret']:.3f}" for r in reports]
        mean = total["mean"][name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean['weighted_spearman']:.2f} / {mean['regret']:.3f} |")
    lines.append("| (candidates; best / median target acc) | " + " | ".join(
        f"{r['candidates']}; {r['best_target_acc']:.3f} / {r['median_target_acc']:.3f}" for r in reports) + " | |")
    best = total["most_reliable"]
    lines += ["", f"Most reliable here (highest mean weighted Spearman): **{best}**."]
    digits = next((r for r in reports if r["shift"] == "mnist-mnistm"), None)
    if digits is not None:
        miss = digits["validators"][best]["regret"]
        verdict = "exceeds" if miss > 0.02 else "is within"
        lines.append(f"Its regret on MNIST -> MNIST-M is {miss:.3f}, which {verdict} the 0.02 goal.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shifts", default=",".join(SHIFTS), help=f"comma-separated, from {', '.join(SHIFTS)} (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own one-thread process")
    parser.add_argument("--power", type=float, default=2.0, help="the weights' exponent (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tiny population: a smoke test of the script, not a measurement")
    parser.add_argument("--data-dir", help="where MNIST and BSDS500 live (default: $DANN_DATA, else the user cache)")
    parser.add_argument("--runs", type=Path, help="JSON lines of finished runs: each run is appended as it ends, and runs already there are not trained again")
    parser.add_argument("--out", type=Path, help="write the markdown table here (e.g. docs/results/validators.md)")
    parser.add_argument("--from-sweep", type=Path, metavar="DIR", help="no training: the population is the checks of the finished sweep in DIR")
    return parser.parse_args(argv)


def train_population(args: argparse.Namespace, shifts: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Every run of the shifts' populations (``{item: result}``), trained or read back from ``--runs``."""
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        raise DannError(f"unknown shift {unknown[0]!r}; choose from {', '.join(SHIFTS)}")
    items = [json.dumps([shift, run]) for shift in shifts for run in population_for(shift, args.quick).runs()]
    for shift in shifts:  # check each shift's config, and build the data caches once, before the workers start
        population = population_for(shift, args.quick)
        experiment, cfg = config_for_run(shift, population.runs()[0], population)
        experiment.load_data(cfg, args.data_dir)
    done = {}
    if args.runs is not None and args.runs.exists():
        done = {row["item"]: row["result"] for row in map(json.loads, args.runs.read_text().splitlines()) if row["item"] in items}
    todo = [item for item in items if item not in done]
    if args.jobs > 1 and todo:
        done.update(run_in_processes(_setup, (args.data_dir, args.quick, args.runs), _train, todo, args.jobs, 1))
    elif todo:
        torch.set_num_threads(1)
        worker = _setup(args.data_dir, args.quick, args.runs)
        done.update({item: _train(worker, item, 0) for item in todo})
    return items, done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    shifts = [s.strip() for s in args.shifts.split(",") if s.strip()]
    try:
        if args.from_sweep is not None:
            print(json.dumps(shift_report(f"sweep {args.from_sweep.name}", runs_from_sweep(args.from_sweep), args.power)), flush=True)
            return 0
        items, done = train_population(args, shifts)
    except DannError as err:
        print(f"benchmarks/validators.py: error: {err}", file=sys.stderr)
        return 2
    reports = []
    for shift in shifts:
        report = shift_report(shift, [done[item] for item in items if json.loads(item)[0] == shift], args.power)
        print(json.dumps(report), flush=True)
        reports.append(report)
    total = summary(reports)
    print(json.dumps(total), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(reports, total, args, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
