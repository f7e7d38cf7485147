"""``dann`` on the command line: run studies, fetch and build data."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch

from dann.config import load_yaml, merge, parse_overrides
from dann.errors import DannError
from dann.experiments import EXPERIMENTS, get_experiment
from dann.experiments.study import format_table, resolve_config, run_study
from dann.methods import MODES


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _list() -> str:
    lines = ["experiments:"]
    lines += [f"  {name:<14} {e.description}" for name, e in EXPERIMENTS.items()]
    lines += ["modes (--set modes=[...]):"]
    lines += [f"  {name:<14} {mode.description}" for name, mode in MODES.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dann", description="Domain-adversarial training: run studies, prepare data.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="train every mode of an experiment and write a comparison",
        description="Train the experiment's modes from one seed; write config.yaml, summary.json, "
        "metrics/, plots/ and tb/ into the output directory.",
        epilog=_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("experiment", nargs="?", help="which experiment (see --list)")
    run.add_argument("--list", action="store_true", help="list experiments and modes, then exit")
    run.add_argument("--out", type=Path, help="output directory (default: runs/EXPERIMENT-TIMESTAMP)")
    run.add_argument("--seed", type=int, help="random seed (same seed, same results)")
    run.add_argument("--config", type=Path, help="start from a config.yaml written by an earlier run")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=500 --set modes=[dann,source_only]",
    )
    run.add_argument("--data-dir", help="where input data lives (default: $DANN_DATA, else the user cache)")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.list:
        print(_list())
        return 0
    if not args.experiment:
        raise DannError("name an experiment, e.g. `dann run blobs` (see `dann run --list`)")
    experiment = get_experiment(args.experiment)
    overrides = load_yaml(args.config) if args.config else {}
    overrides = merge(overrides, parse_overrides(args.overrides))
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = resolve_config(experiment, overrides)

    out = args.out or Path("runs") / f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise DannError(f"output directory {out} is not empty; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DannError(f"cannot create output directory {out}: {err.strerror}") from None
    if args.threads:
        torch.set_num_threads(args.threads)

    summary = run_study(experiment, cfg, out, args.data_dir)
    print(format_table(summary["results"]))
    print(f"wrote {out}/ (summary.json, config.yaml, metrics/, plots/)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except DannError as err:
        print(f"dann: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dann: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
