"""The study runner: train every mode of an experiment the same way and write comparable outputs."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dann.config import dump_yaml, from_dict, merge, to_dict
from dann.data.domains import DomainData, Split
from dann.errors import ConfigError
from dann.evaluate.embedding import embed_2d
from dann.evaluate.metrics import evaluate, extract_features
from dann.experiments.base import Experiment, StudyConfig
from dann.methods import Method, get_mode
from dann.plots.figures import scatter_domains, training_curves
from dann.train import distributed
from dann.train.loop import TrainingInterrupted, signals_handled_by, train
from dann.train.metrics_log import MetricsLog, read_metrics


def resolve_config(experiment: Experiment, overrides: Mapping[str, Any]) -> StudyConfig:
    """Defaults, then the chosen protocol's settings, then the user's overrides; all checked."""
    protocol = overrides.get("protocol", "default")
    if protocol not in experiment.protocols:
        raise ConfigError(
            f"unknown protocol {protocol!r} for {experiment.name}; choose from {', '.join(experiment.protocols)}"
        )
    if overrides.get("experiment", experiment.name) != experiment.name:
        raise ConfigError(f"config is for experiment {overrides['experiment']!r}, not {experiment.name!r}")
    # Start from the experiment's own defaults: a partial section (``--set train.steps=10``) must
    # keep the experiment's other train settings, not fall back to the bare TrainConfig defaults.
    values = to_dict(experiment.config_cls())
    for layer in (experiment.protocols[protocol], overrides, {"experiment": experiment.name}):
        values = merge(values, layer)
    cfg = from_dict(experiment.config_cls, values)
    if not cfg.modes:
        raise ConfigError("modes must name at least one mode")
    if repeated := sorted({mode for mode in cfg.modes if cfg.modes.count(mode) > 1}):
        raise ConfigError(f"modes lists {', '.join(repeated)} more than once; each mode writes its own outputs")
    for mode in cfg.modes:
        get_mode(mode)
    if cfg.method.self_training:  # refused before any mode trains, not when the first such mode starts
        refused = [mode for mode in cfg.modes if not get_mode(mode).method.supports_self_training]
        if refused:
            raise ConfigError(
                f"method.self_training needs one-stage modes that take it; {', '.join(refused)} do not "
                "(drop them from modes, or run them separately)"
            )
    return cfg


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """The terminal table: one row per mode."""
    width = max(len("mode"), *(len(mode) for mode in results))
    header = f"{'mode':<{width}} {'source_acc':>10} {'target_acc':>10} {'target_im':>10} {'domain_acc':>10} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for mode, r in results.items():
        lines.append(
            f"{mode:<{width}} {r['source_acc']:>10.4f} {r['target_acc']:>10.4f} {r['target_im']:>10.4f} {r['domain_acc']:>10.4f} {r['train_seconds']:>8.1f}"
        )
    return "\n".join(lines)


def run_study(
    experiment: Experiment, cfg: StudyConfig, out_dir: Path, data_dir: str | None = None, resume: bool = False
) -> dict[str, Any] | None:
    """Train each mode in ``cfg.modes`` from the same seed; write config, metrics, plots and summary.

    Each mode checkpoints into ``checkpoints/<mode>.pt`` and, once evaluated, records its scores
    in ``results/<mode>.json``; with ``resume`` finished modes are skipped and the interrupted one
    continues from its checkpoint. With ``cfg.jobs`` > 1, that many modes train at once, each in
    its own process. Under torchrun every rank trains; rank 0 alone writes and returns the summary
    (other ranks return None).
    """
    group = distributed.current()
    if cfg.jobs > 1 and group.distributed:
        raise ConfigError("jobs > 1 trains modes in parallel processes; under torchrun set jobs=1")
    plots_dir = out_dir / "plots"
    if group.is_main:
        plots_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            dump_yaml(cfg, out_dir / "config.yaml")

    finished = {}
    if resume:
        for name in cfg.modes:
            if (path := out_dir / "results" / f"{name}.json").exists():
                finished[name] = json.loads(path.read_text())
    pending = [name for name in cfg.modes if name not in finished]
    # threads per mode from the config alone, not from what is left to do: a resumed mode keeps
    # the thread count it started with (thread counts change the sums' rounding)
    threads = cfg.threads or max(1, torch.get_num_threads() // min(cfg.jobs, len(cfg.modes)))
    jobs = min(cfg.jobs, len(pending))
    if jobs > 1:
        # load (and on first use build and cache) the data once here, before the workers read it
        experiment.plot_data(experiment.load_data(cfg, data_dir), plots_dir)
        finished.update(_train_in_processes(experiment, cfg, out_dir, data_dir, pending, jobs, threads))
    else:
        torch.set_num_threads(threads)
        data = experiment.load_data(cfg, data_dir)
        if group.is_main:
            experiment.plot_data(data, plots_dir)
        for name in pending:
            finished[name] = train_mode(experiment, cfg, data, name, out_dir)

    if not group.is_main:
        return None
    results = {name: finished[name] for name in cfg.modes}
    training_curves({name: read_metrics(out_dir / "metrics" / f"{name}.jsonl") for name in cfg.modes}, plots_dir / "curves.png")
    summary = {"experiment": experiment.name, "seed": cfg.seed, "results": results}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def train_mode(
    experiment: Experiment, cfg: StudyConfig, data: DomainData, name: str, out_dir: Path, progress_line: int = 0
) -> dict[str, float]:
    """Train one mode (continuing from its checkpoint if there is one); on rank 0 score it, save
    its scores to ``results/<name>.json`` and plot its features. Returns the scores ({} off rank 0)."""
    mode = get_mode(name)
    torch.manual_seed(cfg.seed)
    method = mode.method(experiment.build_model(cfg, mode, data), cfg.method)
    with MetricsLog(out_dir / "metrics" / f"{name}.jsonl", out_dir / "tb" / name) as log:
        run = train(
            method, data, cfg.train, cfg.seed, log,
            # the curves' checks: on probe_samples test images per domain, the final scores on all
            evaluate=lambda m: evaluate(m, data, cfg.probe_samples, cfg.seed, test_samples=cfg.probe_samples),
            checkpoint_path=out_dir / "checkpoints" / f"{name}.pt", progress_line=progress_line,
        )
    if not distributed.current().is_main:
        return {}
    scores = evaluate(method, data, cfg.probe_samples, cfg.seed)
    result = {**scores, "train_seconds": run.train_seconds, "images_per_second": run.images_per_second}
    result_path = out_dir / "results" / f"{name}.json"
    result_path.parent.mkdir(exist_ok=True)
    result_path.write_text(json.dumps(result) + "\n")
    plot_features(experiment, method, data, name, out_dir / "plots", cfg.seed, experiment.embedding_samples)
    return result


def _train_in_processes(
    experiment: Experiment, cfg: StudyConfig, out_dir: Path, data_dir: str | None, modes: list[str], jobs: int, threads: int
) -> dict[str, dict[str, float]]:
    """Train ``modes`` in ``jobs`` worker processes of ``threads`` threads each.

    Why: oneDNN's threads wait on each other on a small CNN's convolutions, one-thread processes
    do not. On the paper's MNIST network two one-thread processes ran 1.12x (quiet machine) to
    1.45x (loaded machine) the GFLOP/s of one two-thread process. Ctrl-C or SIGTERM reaches
    every worker, which checkpoints and stops.
    """
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()  # set on a signal: a worker then starts no further mode
    workers_started = context.Value("i", 0)  # numbers the workers: one progress-bar line each
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker,
        initargs=(experiment.name, cfg, data_dir, threads, stopping, workers_started),
    )
    results: dict[str, dict[str, float]] = {}
    with pool, _forward_signals_to_workers(stopping):
        futures = {pool.submit(_train_in_worker, name, out_dir): name for name in modes}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # let the others write their checkpoints
            if stopping.is_set():
                raise TrainingInterrupted("a signal; every mode in training saved a checkpoint") from None
            raise
    return results


_worker: dict[str, Any] = {}  # what a worker process keeps between the modes it trains


def _start_worker(
    experiment_name: str, cfg: StudyConfig, data_dir: str | None, threads: int, stopping: EventType, started: Synchronized
) -> None:
    from dann.experiments import get_experiment  # the registry imports this module

    torch.set_num_threads(threads)
    with started.get_lock():
        line, started.value = started.value, started.value + 1
    experiment = get_experiment(experiment_name)
    _worker.update(experiment=experiment, cfg=cfg, stopping=stopping, line=line, data=experiment.load_data(cfg, data_dir))


def _train_in_worker(name: str, out_dir: Path) -> dict[str, float]:
    if _worker["stopping"].is_set():
        raise TrainingInterrupted(f"a signal before mode {name!r} started")
    return train_mode(_worker["experiment"], _worker["cfg"], _worker["data"], name, out_dir, _worker["line"])


def _forward_signals_to_workers(stopping: EventType) -> AbstractContextManager[None]:
    """Pass SIGINT/SIGTERM on to the worker processes, whose training loops stop at a checkpoint."""

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    return signals_handled_by(forward)


def plot_features(
    experiment: Experiment, method: Method, data: DomainData, mode: str, plots_dir: Path, seed: int, limit: int
) -> None:
    """The test features of both domains, embedded in 2-D, coloured by class and marked by domain."""
    points, labels = {}, {}
    for domain, split in (("source", data.source_test), ("target", data.target_test)):
        head = Split(split.x[:limit], split.y[:limit])
        points[domain] = extract_features(method, head, data, domain).numpy()
        labels[domain] = head.y.numpy()
    embedded = embed_2d(np.concatenate([points["source"], points["target"]]), experiment.embedding, seed)
    n = len(points["source"])
    scatter_domains(
        {"source": embedded[:n], "target": embedded[n:]},
        labels,
        plots_dir / f"{experiment.embedding}_{mode}.png",
        f"{mode}: {experiment.embedding.upper()} of learned features",
    )
