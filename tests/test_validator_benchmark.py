"""The statistics of ``benchmarks/validators.py``: weighted Spearman and regret."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("validator_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "validators.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclasses look their module up
spec.loader.exec_module(bench)


def test_weighted_spearman_bounds_and_weights():
    accuracy = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert bench.weighted_spearman(accuracy * 3, accuracy) == pytest.approx(1.0)
    assert bench.weighted_spearman(-accuracy, accuracy) == pytest.approx(-1.0)
    # a swap at the top costs more than the same swap at the bottom: the top carries the weight
    top = bench.weighted_spearman(np.array([1, 2, 3, 5, 4.0]), accuracy)
    bottom = bench.weighted_spearman(np.array([2, 1, 3, 4, 5.0]), accuracy)
    assert top < bottom < 1


def test_weighted_spearman_is_a_weighted_pearson_of_ranks():
    rng = np.random.default_rng(0)
    scores, accuracy = rng.normal(size=30), rng.uniform(size=30)
    s, t = np.argsort(np.argsort(scores)) + 1.0, np.argsort(np.argsort(accuracy)) + 1.0  # no ties: ranks = dense ranks
    w = np.maximum(s / 30, t / 30) ** 2
    expected = np.cov(s, t, aweights=w)[0, 1] / np.sqrt(np.cov(s, s, aweights=w)[0, 1] * np.cov(t, t, aweights=w)[0, 1])
    assert bench.weighted_spearman(scores, accuracy) == pytest.approx(expected)


def test_regret_averages_ties_and_counts_non_finite_as_worst():
    accuracy = np.array([0.5, 0.9, 0.7, 0.8])
    assert bench.regret(np.array([1.0, 3.0, 2.0, 0.0]), accuracy) == pytest.approx(0.0)
    assert bench.regret(np.array([3.0, 1.0, 3.0, np.nan]), accuracy) == pytest.approx(0.9 - 0.6)
    assert bench.regret(np.array([np.inf, 1.0, 0.0, 0.5]), accuracy) == pytest.approx(0.0)  # inf is not finite: worst


def test_every_population_is_a_valid_config():
    for shift in bench.SHIFTS:
        population = bench.population_for(shift, quick=False)
        runs = population.runs()
        assert len({(r["method"], r["lr"], r["lambda_max"], r["seed"]) for r in runs}) == len(runs)
        for run in runs[:2]:
            bench.config_for_run(shift, run, population)


def _trial(root: Path, name: str, mode: str, checks: list[dict], finished: bool = True) -> None:
    trial = root / "trials" / name
    (trial / "metrics").mkdir(parents=True)
    (trial / "config.yaml").write_text(f"modes: [{mode}]\n")
    rows = [{"step": 25, "label_loss": 0.3}] + checks  # a row between checks has no scores
    (trial / "metrics" / f"{mode}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if finished:
        (trial / "results").mkdir()
        (trial / "results" / f"{mode}.json").write_text(json.dumps({"scores": {"train_seconds": 12.5}}))


def _check(step: int, target_acc: float, score: float) -> dict:
    return {"step": step, "target_acc": target_acc, **{f"val_{name}": score for name in bench.VALIDATORS}}


def test_a_sweep_is_read_as_a_population_of_its_checks(tmp_path):
    _trial(tmp_path, "0000", "dann", [_check(50, 0.6, 0.1), _check(100, 0.9, 0.3)])
    _trial(tmp_path, "0001", "source_only", [_check(50, 0.7, 0.2), _check(100, 0.8, 0.4)])
    _trial(tmp_path, "0002", "cdan_e", [_check(50, 0.99, 9.0)], finished=False)  # interrupted: not a candidate
    runs = bench.runs_from_sweep(tmp_path)
    assert [(r["trial"], r["method"], len(r["candidates"])) for r in runs] == [("0000", "dann", 2), ("0001", "source_only", 2)]
    report = bench.shift_report("sweep", runs, 2.0)
    assert report["candidates"] == 4 and report["best_target_acc"] == 0.9
    assert report["validators"]["snd"]["regret"] == pytest.approx(0.9 - 0.8)  # the top score (0.4) is the 0.8 check


def test_a_sweep_that_did_not_score_every_validator_is_refused(tmp_path):
    check = _check(50, 0.6, 0.1)
    del check["val_mixval"]
    _trial(tmp_path, "0000", "dann", [check])
    with pytest.raises(bench.DannError, match="did not score mixval"):
        bench.runs_from_sweep(tmp_path)


def test_a_sweep_without_scored_checks_is_refused(tmp_path):
    _trial(tmp_path, "0000", "dann", [])
    with pytest.raises(bench.DannError, match="no scored checks"):
        bench.runs_from_sweep(tmp_path)


def test_a_directory_that_is_not_a_sweep_is_a_one_line_error(tmp_path, capsys):
    assert bench.main(["--from-sweep", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"benchmarks/validators.py: error: {tmp_path} is not a sweep directory (no trials/ inside)"
