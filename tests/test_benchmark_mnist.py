"""benchmarks/mnist_mnistm.py: its flags are checked, and its plain PyTorch comparison loop runs."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from dann.data.domains import DomainData, Split
from dann.experiments.mnist_mnistm import MnistStudyConfig, PerImage

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "mnist_mnistm.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mnist_mnistm", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval-every", "-1"], "argument --eval-every: must be at least 0, got -1"),
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--epochs", "0"], "argument --epochs: must be above 0, got 0"),
        (["--epochs", "nan"], "argument --epochs: must be above 0, got nan"),
        (["--subset", "-3"], "argument --subset: must be at least 0, got -3"),
        (["--threshold", "1.5"], "argument --threshold: must be above 0 and at most 1, got 1.5"),
        (["--threads", "two"], "argument --threads: 'two' is not an integer"),
        (["--jobs", "0"], "argument --jobs: must be at least 1, got 0"),
        (["--plain-steps", "-1"], "argument --plain-steps: must be at least 0, got -1"),
        (["--modes", "nosuch"], "unknown method 'nosuch'"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(bench, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        bench.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)


def test_eval_every_zero_checks_once_at_the_end(bench):
    cfg = MnistStudyConfig()
    bench.apply_eval_every(cfg, 0)
    assert cfg.train.eval_every == 0 and cfg.train.log_every == cfg.train.steps >= 1


def tiny_images(n: int = 64) -> DomainData:
    g = torch.Generator().manual_seed(0)
    split = lambda: Split(torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g))  # noqa: E731
    return DomainData(split(), split(), split(), split(), n_classes=10, prepare=PerImage(channels_last=True))


def test_plain_loop_trains_the_same_network_and_reports_images_per_second(bench):
    cfg = MnistStudyConfig()
    cfg.train.batch_size = 16
    rate = bench.plain_pytorch_images_per_second(cfg, tiny_images(), steps=3)
    assert math.isfinite(rate) and rate > 0
    versus = bench.compare_with_plain_pytorch({"dann": {"images_per_second": rate}}, cfg, tiny_images(), 3, jobs=1)
    assert set(versus) == {"vs_plain_pytorch", "dann_images_per_second", "plain_pytorch_images_per_second", "plain_pytorch_steps"}
    assert versus["vs_plain_pytorch"] > 0


@pytest.mark.parametrize(
    ("results", "steps", "jobs", "reason"),
    [({}, 5, 1, "mode dann was not benchmarked"), ({"dann": {}}, 0, 1, "--plain-steps 0"), ({"dann": {}}, 5, 2, "--jobs > 1")],
)
def test_comparison_says_why_it_was_skipped(bench, results, steps, jobs, reason):
    versus = bench.compare_with_plain_pytorch(results, MnistStudyConfig(), tiny_images(), steps, jobs)
    assert versus["vs_plain_pytorch"] is None and versus["vs_plain_pytorch_skipped"].startswith(reason)


def test_evaluation_every_zero_steps_still_runs_once_at_the_end():
    """What --eval-every 0 relies on (and TrainConfig.eval_every documents): 0 means at the end only."""
    from types import SimpleNamespace

    from dann.train.callbacks import PeriodicEvaluation

    calls = []
    check = PeriodicEvaluation(lambda m: calls.append(1) or {"target_acc": 0.5}, every=0)
    method = torch.nn.Linear(1, 1)
    state = SimpleNamespace(is_main=True, steps=5, step=0, eval_model=lambda: method, method=method)
    for step in range(1, 6):
        state.step, logs = step, {}
        check.on_step_end(state, logs)
    assert calls == [1] and logs == {"target_acc": 0.5}
