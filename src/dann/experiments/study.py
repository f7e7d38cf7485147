"""The study runner: train every mode of an experiment the same way and write comparable outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
from dann.train.loop import train
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
    for mode in cfg.modes:
        get_mode(mode)
    return cfg


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """The terminal table: one row per mode."""
    width = max(len("mode"), *(len(mode) for mode in results))
    header = f"{'mode':<{width}} {'source_acc':>10} {'target_acc':>10} {'domain_acc':>10} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for mode, r in results.items():
        lines.append(
            f"{mode:<{width}} {r['source_acc']:>10.4f} {r['target_acc']:>10.4f} {r['domain_acc']:>10.4f} {r['train_seconds']:>8.1f}"
        )
    return "\n".join(lines)


def run_study(
    experiment: Experiment, cfg: StudyConfig, out_dir: Path, data_dir: str | None = None, resume: bool = False
) -> dict[str, Any] | None:
    """Train each mode in ``cfg.modes`` from the same seed; write config, metrics, plots and summary.

    Each mode checkpoints into ``checkpoints/<mode>.pt`` and, once evaluated, records its scores
    in ``results/<mode>.json``; with ``resume`` finished modes are skipped and the interrupted one
    continues from its checkpoint. Under torchrun every rank trains; rank 0 alone writes and
    returns the summary (other ranks return None).
    """
    group = distributed.current()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    plots_dir = out_dir / "plots"
    if group.is_main:
        plots_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            dump_yaml(cfg, out_dir / "config.yaml")

    data = experiment.load_data(cfg, data_dir)
    if group.is_main:
        experiment.plot_data(data, plots_dir)
    results: dict[str, dict[str, float]] = {}
    for name in cfg.modes:
        result_path = out_dir / "results" / f"{name}.json"
        if resume and result_path.exists():
            results[name] = json.loads(result_path.read_text())
            continue
        mode = get_mode(name)
        torch.manual_seed(cfg.seed)
        method = mode.method(experiment.build_model(cfg, mode, data), cfg.method)
        with MetricsLog(out_dir / "metrics" / f"{name}.jsonl", out_dir / "tb" / name) as log:
            run = train(
                method, data, cfg.train, cfg.seed, log,
                # the curves' checks: on probe_samples test images per domain, the final scores on all
                evaluate=lambda m: evaluate(m, data, cfg.probe_samples, cfg.seed, test_samples=cfg.probe_samples),
                checkpoint_path=out_dir / "checkpoints" / f"{name}.pt",
            )
        if not group.is_main:
            continue
        scores = evaluate(method, data, cfg.probe_samples, cfg.seed)
        results[name] = {**scores, "train_seconds": run.train_seconds, "images_per_second": run.images_per_second}
        result_path.parent.mkdir(exist_ok=True)
        result_path.write_text(json.dumps(results[name]) + "\n")
        plot_features(experiment, method, data, name, plots_dir, cfg.seed, experiment.embedding_samples)

    if not group.is_main:
        return None
    training_curves({name: read_metrics(out_dir / "metrics" / f"{name}.jsonl") for name in cfg.modes}, plots_dir / "curves.png")
    summary = {"experiment": experiment.name, "seed": cfg.seed, "results": results}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
