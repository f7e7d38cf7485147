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

from dann.config import load_yaml, parse_overrides, to_dict
from dann.data.mnist import fetch_mnist
from dann.data.mnistm import build_mnistm
from dann.errors import DannError
from dann.experiments import EXPERIMENTS, get_experiment, resolve_config
from dann.experiments.mnist_mnistm import write_mnist_folders
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
    make = data_commands.add_parser(
        "make-folders",
        help="write MNIST (source/, class folders) and MNIST-M (target/ unlabelled, target_test/) as image folders",
        description="Example image folders for `dann run folders`: the images `dann run mnist-mnistm` trains on "
        "with the same --train-limit, --test-limit and --seed (MNIST-M is built and cached on first use).",
    )
    make.add_argument("--out", type=Path, required=True, help="where source/, target/ and target_test/ go")
    make.add_argument("--data-dir", help="holds mnist/ and bsds500/ (default: $DANN_DATA, else the user cache)")
    make.add_argument("--train-limit", type=int, default=0, help="training images per domain, a seeded subset (0: all)")
    make.add_argument("--test-limit", type=int, default=0, help="target test images, a seeded subset (0: all)")
    make.add_argument("--seed", type=int, default=0, help="the subset seed, as `dann run mnist-mnistm --seed`")
    return parser


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        print(f"MNIST is in {fetch_mnist(args.data_dir)}")
    elif args.data_command == "make-folders":
        if args.train_limit < 0 or args.test_limit < 0:
            raise DannError("--train-limit and --test-limit must be 0 (all images) or more")
        folders = write_mnist_folders(args.out, args.data_dir, args.train_limit, args.test_limit, args.seed)
        print(f"wrote {', '.join(str(path) for path in folders.values())}")
        print(f"try: dann run folders --set data.source={folders['source']} --set data.target={folders['target']} "
              f"--set data.target_test={folders['target_test']} --recipe digits")
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
    prepared: bool | None = None  # once rank 0 prepared a new run's directory: whether it created it
    try:
        out = distributed.broadcast(out, group)  # one directory, chosen by rank 0
        problem = None
        if group.is_main:
            try:
                existed = out.exists()
                prepare_output_dir(out, resume=bool(args.resume))
                prepared = None if args.resume else not existed
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
    except BaseException:
        if prepared is not None:
            discard_unstarted_run(out, created=prepared)
        raise
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


def discard_unstarted_run(out: Path, created: bool) -> None:
    """After a failure before any checkpoint (bad data, a bad network option), remove what the run
    wrote, so no half-made run directory is left for ``--resume`` to misread: the directory itself
    when this run created it, else its contents (it was empty when the run began)."""
    checkpoints = out / "checkpoints"
    if not out.is_dir() or (checkpoints.is_dir() and any(checkpoints.iterdir())):
        return
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"data": _data, "run": _run, "recipes": _recipes}
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
