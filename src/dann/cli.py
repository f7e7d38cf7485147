"""``dann`` on the command line: run studies, fetch and build data."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import yaml

from dann import __version__
from dann.config import load_yaml, merge, parse_overrides, to_dict
from dann.data.mnist import fetch_mnist
from dann.data.mnistm import build_mnistm
from dann.errors import DannError
from dann.experiments import EXPERIMENTS, Experiment, StudyConfig, get_experiment, resolve_config
from dann.experiments.mnist_mnistm import write_mnist_folders
from dann.experiments.rundir import RunDirectory
from dann.experiments.study import format_table, run_study
from dann.methods import METHODS
from dann.models.registry import NETWORKS
from dann.runfiles import make_dirs
from dann.registry import Registry, import_plugins
from dann.train import distributed
from dann.train.loop import TrainingInterrupted, signals_handled_by


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, worded like every other dann error, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dann: error: {message} (see `{self.prog} --help`)\n")


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
    parser.add_argument("--version", action="version", version=f"dann {__version__}")
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
    _add_report_command(commands)
    _add_model_commands(commands)
    return parser


def _add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="write a run's report.html, or one page comparing several runs",
        description="One DIR: (re)write DIR/report.html. Several: one page with a table row per run and mode "
        "and their training curves (default comparison.html). Self-contained HTML: no network, no scripts.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories written by `dann run`")
    report.add_argument("--out", type=Path, metavar="FILE", help="where to write the page")


def _add_model_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict", help="classify new samples with a trained mode of a run; write a CSV",
        description="Rebuild MODE of RUN_DIR from its config and final checkpoint, and write one CSV row "
        "input,predicted_class,p_0..p_{C-1} per sample (the target path: ADDA's target encoder). "
        "--input: a .npy/.npz array, a CSV table of feature columns, or a folder of images of the run's size.",
    )
    export = commands.add_parser(
        "export", help="write a trained mode as a torch.export program (and ONNX when installed)",
        description="Write normalisation + encoder + label predictor of MODE as OUT/model.pt2 (torch.export), "
        "OUT/model.onnx (needs onnx and onnxscript) and OUT/model.json (the input the programs take: the samples "
        "as the run stores them, e.g. uint8 NCHW images; output: class logits).",
    )
    for sub in (predict, export):
        sub.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by `dann run`")
        sub.add_argument("--mode", help="which trained mode (default: the run's only mode)")
        sub.add_argument("--data-dir", help="where the run's input data lives (its normalisation is fitted on it)")
        sub.add_argument("--import", dest="plugins", action="append", default=[], metavar="MODULE",
                         help="import MODULE first (the run's plugin methods, networks or experiments)")
    predict.add_argument("--input", type=Path, required=True, metavar="PATH", help=".npy, .npz, .csv/.tsv, or an image folder")
    predict.add_argument("--out", type=Path, default=Path("predictions.csv"), metavar="FILE", help="default: predictions.csv")
    export.add_argument("--out", type=Path, metavar="DIR", help="default: RUN_DIR/export/MODE")


def _predict(args: argparse.Namespace) -> int:
    from dann.export import load_mode, predict

    import_plugins(args.plugins)
    trained = load_mode(args.run_dir, args.mode, args.data_dir)
    print(f"wrote {predict(trained, args.input, args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dann.export import export, load_mode

    import_plugins(args.plugins)
    trained = load_mode(args.run_dir, args.mode, args.data_dir)
    written = export(trained, args.out or args.run_dir / "export" / trained.mode)
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0


def _report(args: argparse.Namespace) -> int:
    from dann.report import write_comparison, write_report

    if len(args.runs) == 1:
        path = write_report(args.runs[0], args.out)
    else:
        path = write_comparison(args.runs, args.out or Path("comparison.html"))
    print(f"wrote {path}")
    return 0


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
    if not (out / "sweep.db").exists() and out.is_dir() and any(out.iterdir()):
        raise DannError(f"output directory {out} is not empty and holds no sweep; choose another --out")
    make_dirs(out)
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
    resume = args.resume is not None
    if resume:
        _check_resume_args(args)
    else:
        experiment, cfg = _fresh_config(args)  # every config mistake surfaces here, before a directory exists
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        out = args.out or Path("runs") / f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    data_dir = _readable_data_dir(args.data_dir)
    plugins = list(args.plugins)
    group = distributed.init_from_env()
    run = RunDirectory(distributed.broadcast(args.resume if resume else out, group))  # one directory, chosen by rank 0
    completed = False
    try:
        if resume:
            _on_main(group, run.reopen)
            experiment, cfg, record = run.load()
            if record is not None:
                data_dir = data_dir or record.data_dir
                plugins += [name for name in record.plugins if name not in plugins]
            if group.is_main:
                run.note_resume(cfg, record, data_dir, plugins)
        else:
            _on_main(group, lambda: run.create(cfg, data_dir, plugins))
        summary = run_study(experiment, cfg, run.path, data_dir, resume=resume, plugins=plugins)
        completed = True
    except TrainingInterrupted as stop:
        print(f"dann: interrupted by {stop}; continue with `{_resume_command(run.path, data_dir, plugins)}`", file=sys.stderr)
        return 130
    except BaseException:
        if group.is_main:
            run.discard_if_untrained()
        raise
    finally:
        run.close()
        distributed.finish(group, completed=completed)
    if summary is not None:
        print(format_table(summary["results"]))
        print(f"wrote {run.path}/ (report.html, summary.json, config.yaml, run.json, metrics/, plots/, tb/, checkpoints/)")
    return 0


def _check_resume_args(args: argparse.Namespace) -> None:
    """A resume takes everything from the run directory; a setting given beside it would be ignored, so it is refused."""
    given = [flag for flag, value in (
        ("EXPERIMENT", args.experiment), ("--set", args.overrides), ("--config", args.config), ("--out", args.out),
        ("--seed", args.seed), ("--recipe", args.recipe), ("--print-config", args.print_config),
    ) if value not in (None, [], False)]
    if given:
        raise DannError(
            f"--resume DIR takes its experiment and config from DIR/config.yaml; drop {', '.join(given)} "
            "(only --data-dir and --import may go with it)"
        )


def _fresh_config(args: argparse.Namespace) -> tuple[Experiment, StudyConfig]:
    """The experiment and resolved config of a fresh run: defaults, recipe, --config file, --set, --seed."""
    if not args.experiment:
        raise DannError("name an experiment, e.g. `dann run blobs` (see `dann run --list`)")
    experiment = get_experiment(args.experiment)
    overrides = parse_overrides(args.overrides)
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.recipe is not None:
        overrides["recipe"] = args.recipe
    return experiment, resolve_config(experiment, overrides, file=args.config)


def _on_main(group: distributed.ProcessGroup, action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0 and raise its error on every rank, so that no rank trains alone.

    Every rank waits for rank 0's check: a rank that ran ahead could write into the directory
    before the check and make it fail as "not empty".
    """
    failure: DannError | None = None
    if group.is_main:
        try:
            action()
        except DannError as err:
            failure = err
    problem = distributed.broadcast(None if failure is None else str(failure), group)
    if failure is not None:
        raise failure
    if problem is not None:
        raise DannError(problem)


def _readable_data_dir(data_dir: str | None) -> str | None:
    """``--data-dir`` as an absolute path (recorded for resumes), refused before training if it cannot be read."""
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser().absolute()
    if not path.exists():
        raise DannError(f"--data-dir {data_dir} does not exist; give the directory that holds the data (e.g. its mnist/ folder)")
    if not path.is_dir():
        raise DannError(f"--data-dir {data_dir} is a file; give the directory that holds the data")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DannError(f"--data-dir {data_dir} cannot be read (permission denied); give a directory you can read")
    return str(path)


def _resume_command(out: Path, data_dir: str | None, plugins: Sequence[str]) -> str:
    """The command that continues the run, as the user can paste it."""
    words = ["dann", "run", "--resume", str(out)]
    if data_dir is not None:
        words += ["--data-dir", data_dir]
    for name in plugins:
        words += ["--import", name]
    return shlex.join(words)


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each message (tests and wrappers replace it)."""

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None: ...


def configure_logging() -> None:
    """dann's library messages (``logging.getLogger("dann.…")``) reach the user: INFO and up, on
    stderr, as ``dann: message``. Called by :func:`main`; a program embedding dann sets its own."""
    logger = logging.getLogger("dann")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("dann: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        # SIGTERM (a scheduler, `kill`) stops dann like Ctrl-C: clean-ups run, temporary files go
        with signals_handled_by(signal.default_int_handler):
            commands = {"data": _data, "run": _run, "recipes": _recipes, "report": _report,
                        "predict": _predict, "export": _export, "sweep": _sweep}
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
