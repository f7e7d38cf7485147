"""A short study on a GPU with bf16 autocast; prints ONE JSON line (device, images/s, accuracies).

    python benchmarks/gpu_check.py --data-dir DATA            # MNIST -> MNIST-M subset on CUDA, bf16
    python benchmarks/gpu_check.py --device cpu --steps 20    # the same code path on a CPU (bf16 autocast)

Runs ``dann.fit`` exactly as ``dann run`` does, with ``train.device`` and ``train.precision`` set,
once in fp32 and once in the chosen precision, so the line compares both on one machine. Without
``--data-dir`` it uses Blobs (no download). Target accuracy is evaluation only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from dann.errors import DannError
from dann.evaluate.metrics import evaluate
from dann.experiments import get_experiment, resolve_config
from dann.fit import fit


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="holds mnist/ and bsds500/ (default: use Blobs, no download)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--steps", type=positive, default=300)
    parser.add_argument("--subset", type=positive, default=10000, help="MNIST training/test images per domain")
    parser.add_argument("--mode", default="dann")
    args = parser.parse_args(argv)
    try:
        experiment = get_experiment("mnist-mnistm" if args.data_dir else "blobs")
        overrides = {"modes": [args.mode], "train": {"steps": args.steps, "device": args.device, "progress_bar": False}}
        if args.data_dir:
            overrides["data"] = {"train_limit": args.subset, "test_limit": args.subset}
            overrides["probe_samples"] = 2000
        line = {"experiment": experiment.name, "mode": args.mode, "steps": args.steps, "torch": torch.__version__}
        for precision in dict.fromkeys(["fp32", args.precision]):
            overrides["train"]["precision"] = precision
            cfg = resolve_config(experiment, overrides)
            data = experiment.data(cfg, args.data_dir)
            started = time.perf_counter()
            fitted = fit(data, args.mode, model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed)
            wall = time.perf_counter() - started
            scores = evaluate(fitted.method, data, cfg.probe_samples, cfg.seed)
            device = next(fitted.method.parameters()).device
            line["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            line[precision] = {
                "images_per_second": round(fitted.images_per_second, 1),
                "train_seconds": round(fitted.train_seconds, 2),
                "wall_seconds": round(wall, 2),
                "source_acc": round(scores["source_acc"], 4),
                "target_acc": round(scores["target_acc"], 4),  # evaluation only
            }
    except DannError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
