"""The label-free selection score: what it rewards and what it refuses to reward."""

import math

import torch
from torch import nn

from dann.evaluate.metrics import information_maximisation
from helpers import make_method
from dann.models.network import DomainAdversarialNet


def _method_predicting(logits: torch.Tensor):
    """A method whose label predictor returns ``logits`` as they are (features are the logits)."""
    model = DomainAdversarialNet(nn.Identity(), nn.Identity(), nn.Linear(logits.shape[1], 1))
    return make_method("dann", model)


def test_information_maximisation_rewards_confident_balanced_predictions_only():
    confident_balanced = 50.0 * torch.eye(4).repeat(5, 1)  # every class, each one sure
    collapsed = 50.0 * torch.eye(4)[[0] * 20]  # sure, but always class 0
    uncertain = torch.zeros(20, 4)  # balanced on average, never sure
    score = {name: information_maximisation(_method_predicting(x), x)
             for name, x in [("good", confident_balanced), ("collapsed", collapsed), ("uncertain", uncertain)]}
    assert math.isclose(score["good"], math.log(4), rel_tol=1e-5)
    assert abs(score["collapsed"]) < 1e-5 and abs(score["uncertain"]) < 1e-5
