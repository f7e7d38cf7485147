"""Benchmark MNIST -> MNIST-M on this machine; print ONE JSON line.

Per mode: final source/target test accuracy, training seconds, images/s, achieved GFLOP/s, and
the training seconds until the target test accuracy first reaches ``--threshold`` (checked every
``--eval-every`` steps; evaluation time is excluded, and training never reads that split). Also:
peak RSS, this CPU's float32 matmul GFLOP/s, and the ratio of training to matmul GFLOP/s. With
``--jobs 2`` the modes train in two one-thread processes side by side, as the study trains them.

    python benchmarks/mnist_mnistm.py --data-dir /work/shared/data               # default recipe
    python benchmarks/mnist_mnistm.py --subset 5000 --steps 200 --modes dann      # a quick look
    python benchmarks/mnist_mnistm.py --data-dir DATA --jobs 2                    # as the study trains
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from dann.config import parse_overrides
from dann.data.batches import PairedBatches
from dann.data.domains import DomainData
from dann.evaluate.metrics import class_accuracy, extract_features
from dann.experiments import resolve_config
from dann.experiments.mnist_mnistm import MnistStudyConfig, MnistToMnistM
from dann.experiments.workers import run_in_processes
from dann.fit import build_network, fit
from dann.methods import Method, StepContext, build_method, config_for


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` float32 ``torch.mm`` of two n x n matrices: what this CPU can do."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def step_flops(name: str, cfg: MnistStudyConfig, data: DomainData) -> int:
    """Forward + backward FLOPs of one training step of a fresh ``name`` (counted by PyTorch, not estimated)."""
    config = config_for(cfg.method, name)
    method = build_method(name, build_network(data, name, cfg.model, config), config)
    batch = PairedBatches.from_data(data, cfg.train.batch_size, 0, with_target_labels=method.uses_target_labels).next()
    with FlopCounterMode(display=False) as counter:
        method(batch, StepContext(0, 0.5, 0.5)).loss.backward()
    return counter.get_total_flops()


def target_accuracy(method: Method, data: DomainData) -> float:
    """Evaluation only: target test labels never steer training or selection here."""
    return class_accuracy(method, extract_features(method, data.target_test.x, data.prepare, "target"), data.target_test.y)


def run_mode(name: str, cfg: MnistStudyConfig, data: DomainData, threshold: float) -> dict[str, Any]:
    flops = step_flops(name, cfg, data)
    clock = {"eval": 0.0, "reached": None}
    curve = []

    def check(m: Method) -> dict[str, float]:
        paused = time.perf_counter()
        accuracy = target_accuracy(m, data)
        trained = paused - clock["start"] - clock["eval"]
        curve.append((round(trained, 1), round(accuracy, 4)))
        if clock["reached"] is None and accuracy >= threshold:
            clock["reached"] = trained
        clock["eval"] += time.perf_counter() - paused
        return {"target_acc": accuracy}

    clock["start"] = time.perf_counter()
    run = fit(data, name, model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed, evaluate=check)
    method = run.method
    source = class_accuracy(method, extract_features(method, data.source_test.x, data.prepare, "source"), data.source_test.y)
    print(f"{name}: target accuracy by training seconds {curve}", file=sys.stderr)
    return {
        "target_acc": round(target_accuracy(method, data), 4),
        "source_acc": round(source, 4),
        "train_seconds": round(run.train_seconds, 1),
        "images_per_second": round(run.images_per_second, 1),
        "gflops": round(flops * cfg.train.steps / run.train_seconds / 1e9, 1),
        f"seconds_to_{threshold}": None if clock["reached"] is None else round(clock["reached"], 1),
        "_flops": flops * cfg.train.steps,
    }


def _load(cfg: MnistStudyConfig, data_dir: str | None) -> tuple[MnistStudyConfig, DomainData]:
    return cfg, MnistToMnistM().data(cfg, data_dir)


def _run_in_worker(context: tuple[MnistStudyConfig, DomainData], name: str, line: int, threshold: float = 0.8) -> tuple[int, dict[str, Any]]:
    cfg, data = context
    return os.getpid(), run_mode(name, cfg, data, threshold)


def run_side_by_side(
    cfg: MnistStudyConfig, data_dir: str | None, threshold: float, jobs: int
) -> tuple[dict[str, dict[str, Any]], float]:
    """The modes in ``jobs`` one-thread processes, as ``dann run --set jobs=N`` trains them (the same worker pool).

    Returns the per-mode results and the slowest process's training seconds (its modes' sum).
    """
    task = functools.partial(_run_in_worker, threshold=threshold)
    done = run_in_processes(_load, (cfg, data_dir), task, cfg.modes, jobs, threads=1)
    results, seconds_by_process = {}, {}
    for name, (pid, result) in done.items():
        results[name] = result
        seconds_by_process[pid] = seconds_by_process.get(pid, 0.0) + result["train_seconds"]
    return {name: results[name] for name in cfg.modes}, max(seconds_by_process.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, default=0, help="training and test images per domain (0: all)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="training steps per mode (default: the recipe's)")
    length.add_argument("--epochs", type=float, help="passes over the source training set, instead of --steps")
    parser.add_argument("--modes", default="source_only,dann,dann_deep,target_only", help="comma-separated")
    parser.add_argument("--data-dir", help="holds mnist/ and bsds500/ (default: $DANN_DATA, else the cache)")
    parser.add_argument("--recipe", default="default", help="a recipe of mnist-mnistm (dann recipes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between time-to-accuracy checks")
    parser.add_argument("--threshold", type=float, default=0.80, help="target accuracy for time-to-accuracy")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="train the modes in this many one-thread processes side by side (the study's jobs setting)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = parse_overrides(args.overrides)
    overrides.update(recipe=args.recipe, modes=args.modes.split(","))
    data_cfg = overrides.setdefault("data", {})
    data_cfg.update(train_limit=args.subset, test_limit=args.subset)
    cfg = resolve_config(MnistToMnistM(), overrides)
    n_train = args.subset or 60000
    if args.steps or args.epochs:
        cfg.train.steps = args.steps or math.ceil(args.epochs * n_train / cfg.train.batch_size)
    cfg.train.progress_bar = False
    cfg.train.log_every = cfg.train.eval_every = args.eval_every

    data = MnistToMnistM().data(cfg, args.data_dir)  # in the workers too: built and cached here first
    peak_matmul = matmul_gflops()
    if args.jobs > 1:
        del data
        results, train_seconds = run_side_by_side(cfg, args.data_dir, args.threshold, args.jobs)
    else:
        results = {name: run_mode(name, cfg, data, args.threshold) for name in cfg.modes}
        train_seconds = sum(r["train_seconds"] for r in results.values())
    peak_matmul = max(peak_matmul, matmul_gflops())  # best of before and after: less exposed to load
    # with jobs > 1: all FLOPs over the slowest process's training time, a lower bound on the rate
    # the processes sustain together (a process that finishes early leaves the machine to the other)
    train_gflops = sum(r.pop("_flops") for r in results.values()) / train_seconds / 1e9
    print(json.dumps({
        "recipe": cfg.recipe,
        "subset": args.subset,
        "steps": cfg.train.steps,
        "batch_size": cfg.train.batch_size,
        "epochs": round(cfg.train.steps * cfg.train.batch_size / n_train, 2),
        "threads": 1 if args.jobs > 1 else torch.get_num_threads(),
        "jobs": args.jobs,
        "modes": results,
        "train_seconds": round(train_seconds, 1),
        # per process: this one, or the largest worker
        "peak_rss_mb": round(max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024, 1),
        "matmul_gflops": round(peak_matmul, 1),
        "train_gflops": round(train_gflops, 1),
        "train_to_matmul": round(train_gflops / peak_matmul, 3),
    }))


if __name__ == "__main__":
    main()
