"""Every method on one experiment, the same config and seed for all: one JSON line per method.

    .venv/bin/python benchmarks/methods.py                       # Blobs, every mode
    .venv/bin/python benchmarks/methods.py --experiment mnist-mnistm --budget-steps 1000 \\
        --subset 10000 --data-dir /path/with/mnist --modes source_only,dann,cdan

``--budget-steps`` replaces ``train.steps``; ``--subset N`` keeps N training and N test images
per domain (``data.train_limit`` / ``data.test_limit``, experiments that have them).
Only ``evaluate`` reads target labels, after training: no method selects a model with them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from dann.config import merge, parse_overrides
from dann.errors import DannError
from dann.evaluate.metrics import evaluate
from dann.experiments import get_experiment, resolve_config
from dann.fit import fit
from dann.methods import METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="blobs", help="blobs (default) or mnist-mnistm")
    parser.add_argument("--modes", default=",".join(METHODS), help="comma-separated modes (default: all)")
    parser.add_argument("--budget-steps", type=int, help="training steps per method (default: the experiment's)")
    parser.add_argument("--subset", type=int, help="training and test images per domain (mnist-mnistm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the experiment's setting)")
    parser.add_argument("--data-dir", help="where input data lives (default: $DANN_DATA, else the user cache)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any config override, as for `dann run`")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    experiment = get_experiment(args.experiment)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    overrides: dict[str, Any] = merge(parse_overrides(args.overrides), {"seed": args.seed, "modes": modes})
    if args.budget_steps is not None:
        overrides = merge(overrides, {"train": {"steps": args.budget_steps}})
    if args.subset is not None:
        overrides = merge(overrides, {"data": {"train_limit": args.subset, "test_limit": args.subset}})
    cfg = resolve_config(experiment, overrides)
    threads = args.threads if args.threads is not None else cfg.threads
    if threads:
        torch.set_num_threads(threads)
    data = experiment.data(cfg, args.data_dir)
    for name in cfg.modes:
        result = fit(data, name, model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed)
        scores = evaluate(result.method, data, cfg.probe_samples, cfg.seed)
        row = {
            "experiment": experiment.name,
            "mode": name,
            "seed": cfg.seed,
            "steps": result.steps,
            "target_acc": round(scores["target_acc"], 4) if "target_acc" in scores else None,  # evaluation only
            "source_acc": round(scores["source_acc"], 4),
            "domain_acc": round(scores["domain_acc"], 4),
            "target_im": round(scores["target_im"], 4),
            "train_seconds": round(result.train_seconds, 2),
            "images_per_second": round(result.images_per_second, 1),
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except DannError as err:
        print(f"benchmarks/methods.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
