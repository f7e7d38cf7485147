"""Keeping the best checkpoint by a label-free validator: recorded, and resumed bit for bit after SIGKILL."""

from __future__ import annotations

import json

import torch
from test_kill_resume import _assert_same_run, kill_after_first_checkpoint_then_resume

from dann.cli import main
from dann.train.checkpoint import load_checkpoint

SELECT = ["--set", "train.select_by=snd", "--set", "train.eval_every=100"]


def _args(steps: int) -> list[str]:
    return ["run", "blobs", "--set", "modes=[dann]", "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=100", *SELECT]


def test_select_by_writes_the_chosen_step_and_every_validators_scores(tmp_path):
    assert main([*_args(600), "--out", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]["dann"]
    selection = result["selection"]
    assert selection["validator"] == "snd" and selection["step"] in range(100, 601, 100)
    assert [row["step"] for row in selection["history"]] == list(range(100, 601, 100))
    chosen = next(row for row in selection["history"] if row["step"] == selection["step"])
    assert chosen["snd"] == max(row["snd"] for row in selection["history"])  # chosen by the validator alone
    assert {"source_acc", "im", "dev", "class_ami", "mixval"} <= set(selection["scores"])
    oracle = result["oracle"]  # evaluation only, beside the choice
    assert oracle["chosen_step"] == selection["step"] and oracle["best_target_acc"] >= oracle["chosen_target_acc"]
    # the run ends with the chosen weights: its final checkpoint holds them
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "dann.pt")
    best = final["callbacks"]["KeepBest"]["best_state"]
    assert all(torch.equal(final["method"][key], best[key]) for key in best)


def test_selection_survives_sigkill_and_resume_bit_for_bit(tmp_path):
    reference, out = kill_after_first_checkpoint_then_resume(tmp_path, _args(2000), "dann")
    _assert_same_run(reference, out)
    ref, got = (json.loads((d / "summary.json").read_text())["results"]["dann"]["selection"] for d in (reference, out))
    assert got == ref
