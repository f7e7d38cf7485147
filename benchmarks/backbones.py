"""Training speed of torchvision backbones on image folders: one JSON line.

    python benchmarks/backbones.py [--steps 10] [--batch-size 16] [--size 64] [--threads 2]

Writes generated ``--size`` px image folders (three classes; labelled source, unlabelled target)
to a temporary directory, reads them through the ``folders`` experiment, and trains ``dann``
(random weights) on ResNet-18 end to end and on a frozen ResNet-50, whose features are computed
once before its heads train. ``images_per_second`` counts the source + target images a training
step draws; for the frozen network ``features_images_per_second`` is the one pass of the backbone
over every image and ``end_to_end_images_per_second`` charges that pass to training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dann.errors import DannError
from dann.experiments import get_experiment, resolve_config
from dann.fit import fit
from dann.models.frozen import backbone_features


def write_folders(root: Path, size: int, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for domain, shift in (("source", 0), ("target", 40)):
        for label in range(3):
            folder = root / domain / f"class{label}" if domain == "source" else root / domain
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8) + shift
                pixels[:, label * size // 3 : (label + 1) * size // 3] = 200
                Image.fromarray(pixels).save(folder / f"{label}_{i}.png")


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    experiment = get_experiment("folders")
    row: dict = {"benchmark": "backbones", "size": args.size, "steps": args.steps, "batch_size": args.batch_size,
                 "threads": torch.get_num_threads(), "weights": None}
    with tempfile.TemporaryDirectory() as tmp:
        write_folders(Path(tmp), args.size, args.per_class)
        for key, network, frozen in (("resnet18", "resnet18", False), ("resnet50_frozen", "resnet50", True)):
            cfg = resolve_config(experiment, {
                "modes": ["dann"],
                "data": {"source": f"{tmp}/source", "target": f"{tmp}/target", "holdout": 0},
                "model": {"network": network, "freeze_backbone": frozen},
                "train": {"steps": args.steps, "batch_size": args.batch_size, "progress_bar": False, "ema_decay": 0.0},
            })
            data = experiment.load_data(cfg, None)
            row["images_per_domain"] = len(data.source_train)
            result: dict = {}
            if frozen:
                started = time.perf_counter()
                data, _ = backbone_features(data, cfg.model, cfg.seed)
                seconds = time.perf_counter() - started
                result["features_images_per_second"] = round((len(data.source_train) + len(data.target_train)) / seconds, 1)
                result["features_seconds"] = round(seconds, 2)
            fitted = fit(data, "dann", model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed)
            result["images_per_second"] = round(fitted.images_per_second, 1)
            result["train_seconds"] = round(fitted.train_seconds, 2)
            if frozen:
                drawn = 2 * fitted.steps * args.batch_size
                result["end_to_end_images_per_second"] = round(drawn / (fitted.train_seconds + result["features_seconds"]), 1)
            row[key] = result
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--per-class", type=int, default=20, help="images per class and domain")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(args)), flush=True)
    except DannError as error:
        print(f"backbones: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
