"""The study runner: train every mode of an experiment the same way and write comparable outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dann.config import to_dict
from dann.data.domains import DomainData, Split
from dann.errors import ConfigError
from dann.evaluate.embedding import embed_2d
from dann.evaluate.metrics import evaluate, extract_features
from dann.evaluate.validation import validation_scores
from dann.experiments.base import Experiment, StudyConfig, get_experiment
from dann.experiments.provenance import write_provenance
from dann.experiments.rundir import config_fingerprint, load_result, save_result
from dann.experiments.workers import run_in_processes
from dann.fit import fit
from dann.methods import Method
from dann.models.frozen import backbone_features, is_frozen_backbone
from dann.plots.figures import scatter_domains, training_curves
from dann.report import write_report
from dann.runfiles import atomic_write_json, make_dirs
from dann.train import distributed
from dann.train.device import resolve_device
from dann.train.metrics_log import MetricsLog, read_metrics

COLUMNS = ("source_acc", "target_acc", "target_im", "domain_acc")


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """The terminal table: one row per mode; a score the run has not (no target labels: target_acc) is '-'."""
    width = max(len("mode"), *(len(mode) for mode in results))
    header = f"{'mode':<{width}} " + " ".join(f"{c:>10}" for c in COLUMNS) + f" {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for mode, r in results.items():
        cells = " ".join(f"{r[c]:>10.4f}" if c in r else f"{'-':>10}" for c in COLUMNS)
        lines.append(f"{mode:<{width}} {cells} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def run_study(
    experiment: Experiment, cfg: StudyConfig, out_dir: Path, data_dir: str | None = None, resume: bool = False,
    plugins: Sequence[str] = (), *, data: DomainData | None = None, plots: bool = True,
) -> dict[str, Any] | None:
    """Train each mode in ``cfg.modes`` from the same seed; write metrics, plots and summary.

    ``out_dir`` is made ready by :class:`~dann.experiments.rundir.RunDirectory` (which writes
    ``config.yaml``). Each mode checkpoints into ``checkpoints/<mode>.pt`` and, once evaluated,
    records its scores in ``results/<mode>.json``, both with the config's fingerprint; with
    ``resume`` finished modes are skipped and the interrupted one continues from its checkpoint. With ``cfg.jobs`` > 1, that many modes train at once, each in
    its own process (``plugins`` are imported there too). Under torchrun every rank trains; rank 0
    alone writes and returns the summary (other ranks return None).

    ``data``: the domains already loaded for this ``cfg`` (``experiment.data(cfg, data_dir)``),
    e.g. by a sweep that trains many configs on the same data; used only with one job.
    ``plots=False`` skips every figure (a sweep's trials: the winner can be re-run with them).
    """
    group = distributed.current()
    if cfg.jobs > 1 and group.distributed:
        raise ConfigError("jobs > 1 trains modes in parallel processes; under torchrun set jobs=1")
    plots_dir = out_dir / "plots"
    if group.is_main:
        make_dirs(plots_dir if plots else out_dir)

    finished = {}
    if resume:
        for name in cfg.modes:
            if (scores := load_result(out_dir, name, cfg)) is not None:
                finished[name] = scores
    pending = [name for name in cfg.modes if name not in finished]
    # threads per mode from the config alone, not from what is left to do: a resumed mode keeps
    # the thread count it started with (thread counts change the sums' rounding)
    threads = cfg.threads or max(1, torch.get_num_threads() // min(cfg.jobs, len(cfg.modes)))
    jobs = min(cfg.jobs, len(pending))
    if group.is_main:
        write_provenance(out_dir, cfg.train.device, threads, cfg.jobs, group.world_size, resume)
    if jobs > 1:
        # load (and on first use build and cache) the data once here, before the workers read it
        loaded = experiment.data(cfg, data_dir)
        if plots:
            experiment.plot_data(loaded, plots_dir)
        finished.update(run_in_processes(
            _load_study, (experiment.name, cfg, data_dir, out_dir, plots), _train_mode_in_worker, pending, jobs, threads, plugins
        ))
    else:
        torch.set_num_threads(threads)
        if data is None:
            data = experiment.data(cfg, data_dir)
        if group.is_main and plots:
            experiment.plot_data(data, plots_dir)
        data = model_inputs(data, cfg)
        for name in pending:
            finished[name] = train_mode(experiment, cfg, data, name, out_dir, plots=plots)

    if not group.is_main:
        return None
    results = {name: finished[name] for name in cfg.modes}
    if plots:
        training_curves({name: read_metrics(out_dir / "metrics" / f"{name}.jsonl") for name in cfg.modes}, plots_dir / "curves.png")
    summary = {"experiment": experiment.name, "seed": cfg.seed, "target_labels": data_has_target_labels(results), "results": results}
    atomic_write_json(out_dir / "summary.json", summary)
    write_report(out_dir)  # report.html, rebuilt from the files above (so also after a resume)
    return summary


def model_inputs(data: DomainData, cfg: StudyConfig) -> DomainData:
    """What every mode's network trains on: the data itself, or, when ``cfg.model`` freezes a
    torchvision backbone, that backbone's features of every image, computed once for all modes."""
    if not is_frozen_backbone(cfg.model):
        return data
    device = resolve_device(cfg.train.device, distributed.current().world_size)
    return backbone_features(data, cfg.model, cfg.seed, device)[0]


def data_has_target_labels(results: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether target accuracies exist: without target labels none are computed."""
    return all("target_acc" in r for r in results.values())


def train_mode(
    experiment: Experiment, cfg: StudyConfig, data: DomainData, name: str, out_dir: Path, progress_line: int = 0,
    plots: bool = True,
) -> dict[str, float]:
    """Train one mode (continuing from its checkpoint if there is one); on rank 0 score it, plot its
    features (``plots``) and save its scores to ``results/<name>.json``. Returns the scores ({} off rank 0)."""
    metrics_path = out_dir / "metrics" / f"{name}.jsonl"
    with MetricsLog(metrics_path, out_dir / "tb" / name, config={"mode": name, **to_dict(cfg)}) as log:
        fitted = fit(
            data, name, model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed, log=log,
            # the curves' checks: on probe_samples test images per domain, the final scores on all
            evaluate=lambda m: evaluate(m, data, cfg.probe_samples, cfg.seed, test_samples=cfg.probe_samples),
            validate=lambda m: validation_scores(m, data, cfg.validation.validators, cfg.seed),
            select_by=cfg.train.select_by or None,
            checkpoint=out_dir / "checkpoints" / f"{name}.pt", fingerprint=config_fingerprint(cfg), progress_line=progress_line,
        )
    if not distributed.current().is_main:
        return {}
    scores = evaluate(fitted.method, data, cfg.probe_samples, cfg.seed)
    result = {**scores, "train_seconds": fitted.train_seconds, "images_per_second": fitted.images_per_second}
    if fitted.selection is not None:
        result["selection"] = fitted.selection
        if data.target_labelled:  # evaluation only: the choice above never read these
            result["oracle"] = oracle_record(read_metrics(metrics_path), fitted.selection["step"])
    if plots:
        plot_features(experiment, fitted.method, data, name, out_dir / "plots", cfg.seed, experiment.embedding_samples)
    save_result(out_dir, name, cfg, result)  # last: a saved result means the mode's outputs are complete
    return result


def oracle_record(rows: Sequence[Mapping[str, Any]], chosen_step: int | None) -> dict[str, Any]:
    """Target accuracy (reads target labels: evaluation only) at the chosen step and at the best check.

    From the curves' checks (``probe_samples`` target test images each), so the regret of a
    validator's choice can be read off one run.
    """
    checks = {row["step"]: row["target_acc"] for row in rows if "target_acc" in row}
    if not checks:
        return {}
    best_step = max(checks, key=checks.__getitem__)
    return {
        "chosen_step": chosen_step, "chosen_target_acc": checks.get(chosen_step),
        "best_step": best_step, "best_target_acc": checks[best_step], "last_target_acc": checks[max(checks)],
    }


def _load_study(
    experiment_name: str, cfg: StudyConfig, data_dir: str | None, out_dir: Path, plots: bool
) -> tuple[Experiment, StudyConfig, DomainData, Path, bool]:
    experiment = get_experiment(experiment_name)
    return experiment, cfg, model_inputs(experiment.data(cfg, data_dir), cfg), out_dir, plots


def _train_mode_in_worker(context: tuple[Experiment, StudyConfig, DomainData, Path, bool], name: str, line: int) -> dict[str, float]:
    experiment, cfg, data, out_dir, plots = context
    return train_mode(experiment, cfg, data, name, out_dir, line, plots)


def plot_features(
    experiment: Experiment, method: Method, data: DomainData, mode: str, plots_dir: Path, seed: int, limit: int
) -> None:
    """The test features of both domains, embedded in 2-D, coloured by class (where known) and marked by domain."""
    points, labels = {}, {}
    for domain, split in (("source", data.source_test), ("target", data.target_test)):
        head = Split(split.x[:limit], None if split.y is None else split.y[:limit])
        points[domain] = extract_features(method, head.x, data.prepare, domain).numpy()
        labels[domain] = None if head.y is None else head.y.numpy()
    embedded = embed_2d(np.concatenate([points["source"], points["target"]]), experiment.embedding, seed)
    n = len(points["source"])
    scatter_domains(
        {"source": embedded[:n], "target": embedded[n:]},
        labels,
        plots_dir / f"{experiment.embedding}_{mode}.png",
        f"{mode}: {experiment.embedding.upper()} of learned features",
    )
