"""Benchmark MNIST -> MNIST-M on this machine; print ONE JSON line.

Per mode: final source/target test accuracy, training seconds, images/s, achieved GFLOP/s, and
the training seconds until the target test accuracy first reaches ``--threshold`` (checked every
``--eval-every`` steps; evaluation time is excluded, and training never reads that split). Also:
peak RSS, and dann's overhead measured in the same run: the images/s of mode ``dann`` trained by
``dann.fit`` against a hand-written plain PyTorch loop of the same network, batch size, optimiser,
schedules and batches (``vs_plain_pytorch``: dann's images/s over the plain loop's; 1.0 means no
overhead). With ``--jobs 2`` the modes train in two one-thread processes side by side, as the
study trains them (the plain loop is then not compared: it would run alone, dann's modes in pairs).

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
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dann.config import parse_overrides
from dann.data.batches import PairedBatches
from dann.data.domains import DomainData
from dann.errors import DannError
from dann.evaluate.metrics import class_accuracy, extract_features
from dann.experiments import resolve_config
from dann.experiments.mnist_mnistm import MnistStudyConfig, MnistToMnistM
from dann.experiments.workers import run_in_processes
from dann.fit import build_network, fit
from dann.methods import Method, StepContext, build_method, config_for
from dann.train.device import resolve_device


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


class _Reverse(torch.autograd.Function):
    """The gradient reversal layer, written out as a user of plain PyTorch would."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad, None


def plain_pytorch_images_per_second(cfg: MnistStudyConfig, data: DomainData, steps: int) -> float:
    """Source + target images/s of DANN as a plain PyTorch loop: the work dann's loop does for mode
    ``dann`` (same network and initialisation, batch size, optimiser, schedules, prepare + augment,
    moving average), without dann's loop, callbacks or method objects. Timed like dann's: per step."""
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    config = config_for(cfg.method, "dann")
    net = build_network(data, "dann", cfg.model, config).to(device).train()
    params, t, b = list(net.parameters()), cfg.train, cfg.train.batch_size
    opt = (torch.optim.Adam(params, lr=t.lr, betas=(t.momentum, 0.999), weight_decay=t.weight_decay, fused=True)
           if t.optimizer == "adam" else torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay))
    averaged = [p.detach().clone() for p in params] if t.ema_decay else None
    xs, ys, xt = data.source_train.x, data.source_train.y, data.target_train.x
    domain = torch.cat([torch.zeros(b), torch.ones(b)]).to(device)
    rng, seconds = torch.Generator().manual_seed(cfg.seed), 0.0
    for step in range(steps):
        started = time.perf_counter()
        p = step / steps
        lr = t.lr / (1 + 10 * p) ** 0.75 if t.lr_schedule == "paper" else t.lr
        lambda_ = t.lambda_max * ((2 / (1 + math.exp(-t.gamma * p)) - 1) if t.lambda_schedule == "paper" else 1.0)
        i, j = torch.randint(len(xs), (b,), generator=rng), torch.randint(len(xt), (b,), generator=rng)
        x = torch.cat([data.augment(data.prepare(xs[i].to(device))), data.augment(data.prepare(xt[j].to(device)))])
        features = net.feature_extractor(x)
        label_loss = F.cross_entropy(net.label_predictor(features[:b]), ys[i].to(device), label_smoothing=cfg.method.label_smoothing)
        domain_loss = F.binary_cross_entropy_with_logits(net.domain_classifier(_Reverse.apply(features, lambda_))[:, 0], domain)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = label_loss + cfg.method.transfer_weight * domain_loss
        if not torch.isfinite(loss):  # as dann checks every step (on a GPU this waits for the step)
            raise RuntimeError(f"plain loop: non-finite loss at step {step}")
        loss.backward()
        opt.step()
        if averaged is not None:
            torch._foreach_lerp_(averaged, [q.detach() for q in params], 1 - min(t.ema_decay, (1 + step) / (10 + step)))
        seconds += time.perf_counter() - started
    return 2 * steps * b / seconds


def compare_with_plain_pytorch(
    results: dict[str, dict[str, Any]], cfg: MnistStudyConfig, data: DomainData, steps: int, jobs: int
) -> dict[str, Any]:
    """``vs_plain_pytorch``: mode dann's images/s (its fit run above) over the plain loop's, measured now."""
    m = cfg.method
    reason = (
        "mode dann was not benchmarked" if "dann" not in results
        else "--plain-steps 0" if steps == 0
        else "--jobs > 1: dann's modes trained in pairs, the plain loop would train alone" if jobs > 1
        else "the plain loop has no extra domains or target regularisers" if (
            data.extra_domains or m.domain_loss != "bce" or m.entropy_weight or m.class_balance_weight or m.self_training)
        else None
    )
    if reason is not None:
        return {"vs_plain_pytorch": None, "vs_plain_pytorch_skipped": reason}
    dann = results["dann"]["images_per_second"]
    plain = plain_pytorch_images_per_second(cfg, data, steps)
    return {"vs_plain_pytorch": round(dann / plain, 3), "dann_images_per_second": dann,
            "plain_pytorch_images_per_second": round(plain, 1), "plain_pytorch_steps": steps}


def _bounded(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Any:
    """An argparse type: a ``kind`` number at least ``low`` (above it when ``low_open``), at most ``high``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or (high is not None and value > high):
            bound = f"{'above' if low_open else 'at least'} {low}" + (f" and at most {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags, each checked: a bad value is a one-line usage error, never a traceback."""
    count, positive = _bounded(int, 0), _bounded(int, 1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=count, default=0, help="training and test images per domain (0: all)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive, help="training steps per mode (default: the recipe's)")
    length.add_argument("--epochs", type=_bounded(float, 0, low_open=True), help="passes over the source training set, instead of --steps")
    parser.add_argument("--modes", default="source_only,dann,dann_deep,target_only", help="comma-separated")
    parser.add_argument("--data-dir", help="holds mnist/ and bsds500/ (default: $DANN_DATA, else the cache)")
    parser.add_argument("--recipe", default="default", help="a recipe of mnist-mnistm (dann recipes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--eval-every", type=count, default=100, help="steps between time-to-accuracy checks (0: at the end only)")
    parser.add_argument("--threshold", type=_bounded(float, 0, 1, low_open=True), default=0.80, help="target accuracy for time-to-accuracy")
    parser.add_argument("--threads", type=count, default=0, help="torch threads (0: torch's choice)")
    parser.add_argument(
        "--jobs", type=positive, default=1,
        help="train the modes in this many one-thread processes side by side (the study's jobs setting)",
    )
    parser.add_argument(
        "--plain-steps", type=count, help="steps of the plain PyTorch loop dann is compared with (default: --steps; 0: skip)"
    )
    return parser


def apply_eval_every(cfg: MnistStudyConfig, every: int) -> None:
    """Check and log every ``every`` steps; 0: once, at the end."""
    cfg.train.eval_every = every
    cfg.train.log_every = every or cfg.train.steps


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        overrides = parse_overrides(args.overrides)
        overrides.update(recipe=args.recipe, modes=args.modes.split(","))
        data_cfg = overrides.setdefault("data", {})
        data_cfg.update(train_limit=args.subset, test_limit=args.subset)
        cfg = resolve_config(MnistToMnistM(), overrides)
    except DannError as err:
        parser.error(str(err))
    n_train = args.subset or 60000
    if args.steps or args.epochs:
        cfg.train.steps = args.steps or math.ceil(args.epochs * n_train / cfg.train.batch_size)
    cfg.train.progress_bar = False
    apply_eval_every(cfg, args.eval_every)

    data = MnistToMnistM().data(cfg, args.data_dir)  # in the workers too: built and cached here first
    if args.jobs > 1:
        data = None  # the workers load their own; free this copy for them
        results, train_seconds = run_side_by_side(cfg, args.data_dir, args.threshold, args.jobs)
    else:
        results = {name: run_mode(name, cfg, data, args.threshold) for name in cfg.modes}
        train_seconds = sum(r["train_seconds"] for r in results.values())
    plain_steps = cfg.train.steps if args.plain_steps is None else args.plain_steps
    versus = compare_with_plain_pytorch(results, cfg, data, plain_steps, args.jobs)
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
        "train_gflops": round(train_gflops, 1),
        **versus,
    }))


if __name__ == "__main__":
    main()
