"""``dann`` on the command line: run studies, fetch and build data."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn


import yaml

from dann.config import load_yaml, merge, parse_overrides, to_dict
from dann.data.mnist import fetch_mnist
from dann.data.mnistm import build_mnistm
from dann.errors import DannError
from dann.experiments import EXPERIMENTS, get_experiment, resolve_config
from dann.experiments.study import format_table, run_study
from dann.methods import METHODS
from dann.models.registry import NETWORKS
from dann.registry import Registry, import_plugins
from dann.train import distributed
from dann.train.loop import TrainingInterrupted


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _list() -> str:
    """Everything registered, marked by where it came from (built-in or the plugin module)."""
    sections: list[tuple[str, Registry]] = [
        ("experiments (dann run NAME)", EXPERIMENTS), ("methods (--set modes=[...])", METHODS),
        ("networks (--set model.network=NAME)", NETWORKS),
    ]
    width = max(len(name) for _, registry in sections for name in registry)
    lines = []
    for title, registry in sections:
        lines.append(f"{title}:")
        for name, entry in registry.items():
            origin = registry.origin(name)
            mark = "" if origin == "built-in" else f"  [{origin}]"
            lines.append(f"  {name:<{width}} {entry.description}{mark}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dann", description="Domain-adversarial training: run studies, prepare data.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="train every mode of an experiment and write a comparison",
        description="Train the experiment's modes from one seed; write config.yaml, summary.json, "
        "metrics/, plots/ and tb/ into the output directory. `dann run --list` lists experiments, methods and networks.",
    )
    run.add_argument("experiment", nargs="?", help="which experiment (see --list)")
    run.add_argument("--list", action="store_true", help="list experiments and modes, then exit")
    run.add_argument("--out", type=Path, help="output directory (default: runs/EXPERIMENT-TIMESTAMP)")
    run.add_argument("--seed", type=int, help="random seed (same seed, same results)")
    run.add_argument("--config", type=Path, help="start from a config.yaml written by an earlier run")
    run.add_argument("--recipe", help="a named recipe of the experiment (see `dann recipes`)")
    run.add_argument(
        "--import", dest="plugins", action="append", default=[], metavar="MODULE",
        help="import MODULE first, so the methods, networks and experiments it registers exist (repeatable)",
    )
    run.add_argument("--print-config", action="store_true", help="print the resolved config and exit without training")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue an interrupted run in DIR from its last checkpoint")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=500 --set modes=[dann,source_only]",
    )
    run.add_argument("--data-dir", help="where input data lives (default: $DANN_DATA, else the user cache)")

    _add_sweep_parser(commands)

    recipes = commands.add_parser("recipes", help="list the named recipes of each experiment")
    recipes.add_argument("experiment", nargs="?", help="only this experiment's")
    recipes.add_argument("--import", dest="plugins", action="append", default=[], metavar="MODULE")

    data = commands.add_parser("data", help="fetch or build input data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    fetch = data_commands.add_parser("fetch", help="download MNIST (checksum-verified) into DATA_DIR/mnist/")
    fetch.add_argument("dataset", choices=["mnist"])
    fetch.add_argument("--data-dir", help="where to put it (default: $DANN_DATA, else the user cache)")
    build = data_commands.add_parser("build", help="build MNIST-M from MNIST + BSDS500 into the cache")
    build.add_argument("dataset", choices=["mnistm"])
    build.add_argument("--data-dir", help="holds mnist/ and bsds500/ (default: $DANN_DATA, else the user cache)")
    build.add_argument("--cache-dir", help="where the built data set goes (default: $DANN_CACHE, else ~/.cache/dann)")
    build.add_argument("--seed", type=int, default=0, help="MNIST-M seed: the same seed builds the same images")
    build.add_argument("--force", action="store_true", help="rebuild even if the cache file exists")
    return parser


def _add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="search hyper-parameters, choosing by a label-free validator alone",
        description="Train one single-mode run per trial over a search space (see dann.experiments.sweep for the "
        "SPACE.yaml format); each trial keeps its best checkpoint by VALIDATOR, scored on held-out data without "
        "target labels, and that score is the trial's objective. The winner is the top trial by VALIDATOR alone; "
        "target accuracy, where target labels exist, is printed for evaluation only. Writes DIR/sweep.db, "
        "DIR/trials/NNNN/, DIR/leaderboard.json and DIR/best.yaml; the same command again continues the sweep.",
    )
    sweep.add_argument("experiment", help="which experiment (see `dann run --list`)")
    sweep.add_argument("--space", type=Path, required=True, help="YAML: dotted config key -> a list of choices, or {uniform|log_uniform|int: [lo, hi]}")
    sweep.add_argument("--trials", type=int, required=True, help="run until the sweep holds this many finished trials")
    sweep.add_argument("--select-by", required=True, metavar="VALIDATOR", help="the label-free validator that scores and chooses (e.g. im)")
    sweep.add_argument("--sampler", choices=["grid", "random", "tpe"], default="tpe", help="how trials are drawn (default: tpe)")
    sweep.add_argument("--jobs", type=int, default=1, help="trials at once, each in its own one-thread process (default: 1)")
    sweep.add_argument("--config", type=Path, help="the config every trial starts from (before --set and the space)")
    sweep.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key of every trial, e.g. --set train.steps=500",
    )
    sweep.add_argument("--out", type=Path, help="sweep directory (default: runs/sweep-EXPERIMENT-TIMESTAMP); an existing sweep there continues")
    sweep.add_argument("--data-dir", help="where input data lives (default: $DANN_DATA, else the user cache)")
    sweep.add_argument("--import", dest="plugins", action="append", default=[], metavar="MODULE", help="import MODULE first (repeatable)")


def _sweep(args: argparse.Namespace) -> int:
    try:  # Optuna loads only for sweeps
        from dann.experiments.sweep import Sweep, format_leaderboard, run_sweep
    except ModuleNotFoundError as err:
        if err.name != "optuna":
            raise
        raise DannError("dann sweep needs Optuna: pip install 'dann[sweep]'") from None

    import_plugins(args.plugins)
    experiment = get_experiment(args.experiment)
    base = merge(load_yaml(args.config) if args.config else {}, parse_overrides(args.overrides))
    sweep = Sweep(experiment.name, args.select_by, load_yaml(args.space), base, args.sampler)
    out = args.out or Path("runs") / f"sweep-{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not (out / "sweep.db").exists():
        prepare_output_dir(out, resume=False)
    try:
        board = run_sweep(sweep, args.trials, out, args.jobs, args.data_dir, args.plugins)
    except TrainingInterrupted as stop:
        print(f"dann: interrupted by {stop}; the same command continues the sweep in {out}", file=sys.stderr)
        return 130
    print(format_leaderboard(board))
    print(f"wrote {out}/ (leaderboard.json, sweep.db, trials/" + (", best.yaml)" if board["winner"] is not None else ")"))
    if board["winner"] is not None:
        print(f"the winner again, with plots: dann run {experiment.name} --config {out}/best.yaml")
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        print(f"MNIST is in {fetch_mnist(args.data_dir)}")
    else:
        print(f"MNIST-M is in {build_mnistm(args.data_dir, args.cache_dir, args.seed, args.force)}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    import_plugins(args.plugins)
    names = [args.experiment] if args.experiment else list(EXPERIMENTS)
    for name in names:
        experiment = get_experiment(name)
        print(f"{name}:")
        for recipe, path in experiment.recipes().items():
            about = "the experiment's defaults" if path is None else path.read_text().splitlines()[0].lstrip("# ")
            print(f"  {recipe:<10} {about}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import_plugins(args.plugins)
    if args.list:
        print(_list())
        return 0
    if args.resume:
        if args.experiment or args.overrides or args.config or args.out or args.seed is not None or args.recipe:
            raise DannError("--resume DIR takes its experiment and config from DIR/config.yaml; give nothing else")
        saved = args.resume / "config.yaml"
        experiment = get_experiment(str(load_yaml(saved).get("experiment")))
        cfg, out = resolve_config(experiment, file=saved), args.resume
    else:
        if not args.experiment:
            raise DannError("name an experiment, e.g. `dann run blobs` (see `dann run --list`)")
        experiment = get_experiment(args.experiment)
        overrides = parse_overrides(args.overrides)
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.recipe is not None:
            overrides["recipe"] = args.recipe
        cfg = resolve_config(experiment, overrides, file=args.config)
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        out = args.out or Path("runs") / f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    group = distributed.init_from_env()
    try:
        out = distributed.broadcast(out, group)  # one directory, chosen by rank 0
        problem = None
        if group.is_main:
            try:
                prepare_output_dir(out, resume=bool(args.resume))
            except DannError as err:
                problem = str(err)
        # every rank waits for rank 0's check: a rank that ran ahead could write into the
        # directory before the check and make it fail as "not empty"
        problem = distributed.broadcast(problem, group)
        if problem is not None:
            raise DannError(problem)
        summary = run_study(experiment, cfg, out, args.data_dir, resume=bool(args.resume), plugins=args.plugins)
    except TrainingInterrupted as stop:
        print(f"dann: interrupted by {stop}; continue with `dann run --resume {out}`", file=sys.stderr)
        return 130
    finally:
        distributed.finish(group)
    if summary is not None:
        print(format_table(summary["results"]))
        print(f"wrote {out}/ (summary.json, config.yaml, metrics/, plots/, tb/, checkpoints/)")
    return 0


def prepare_output_dir(out: Path, resume: bool, min_free_bytes: int = 100 * 2**20) -> None:
    """Fail before training, not after it, when results could not be written."""
    if resume:
        if not (out / "config.yaml").exists():
            raise DannError(f"cannot resume: {out} has no config.yaml (is it a dann run directory?)")
    elif out.exists() and any(out.iterdir()):
        raise DannError(f"output directory {out} is not empty; choose another --out or use --resume {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise DannError(f"cannot write to output directory {out}: {err.strerror}") from None
    free = shutil.disk_usage(out).free
    if free < min_free_bytes:
        raise DannError(f"only {free // 2**20} MiB free on the disk of {out}; need at least {min_free_bytes // 2**20} MiB")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"data": _data, "run": _run, "recipes": _recipes, "sweep": _sweep}
        return commands[args.command](args)
    except DannError as err:
        print(f"dann: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside training (data loading, plotting): nothing to save
        print("dann: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `dann run --list | head`: the reader left, nothing to report
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
