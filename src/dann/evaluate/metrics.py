"""Held-out evaluation: class accuracy per domain and a fresh linear probe of domain separability."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dann.data.domains import DomainData, Split
from dann.methods.base import Method
from dann.methods.losses import class_imbalance, entropy


@torch.no_grad()
def extract_features(
    method: Method, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
    domain: Literal["source", "target"], batch_size: int = 2048,
) -> torch.Tensor:
    """Features of every stored sample of ``x`` (model input once ``prepare``d), in eval mode, in chunks, on the CPU."""
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    chunks = [
        method.features(prepare(x[i : i + batch_size].to(device)), domain).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    method.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def class_accuracy(method: Method, features: torch.Tensor, labels: torch.Tensor) -> float:
    return float((_classify(method, features).argmax(1) == labels).float().mean())


def _classify(method: Method, features: torch.Tensor) -> torch.Tensor:
    """Class logits of CPU ``features`` from the method's label predictor, wherever it lives."""
    device = next(method.parameters()).device
    return method.model.classify(features.to(device)).float().cpu()


@torch.no_grad()
def information_maximisation(method: Method, features: torch.Tensor) -> float:
    """``H(mean_i p_i) - mean_i H(p_i)`` of the class predictions ``p_i``: a score that needs no labels.

    High when each prediction is confident (low ``H(p_i)``) *and* the classes are used evenly
    (high ``H`` of the average), so unlike entropy alone it does not reward collapse onto one
    class. Between ``0`` and ``log C``. Computed on unlabelled target images it ranks models
    for selection without target labels; Musgrave et al. (2022, "Three new validators and a
    large-scale benchmark ranking for unsupervised domain adaptation") found it among the
    better such validators. A ranking aid, not an accuracy: a confidently wrong model scores high.
    """
    logits = _classify(method, features)
    mean_prediction_entropy = math.log(logits.shape[1]) - class_imbalance(logits)
    return float(mean_prediction_entropy - entropy(logits).mean())


def domain_probe_accuracy(
    train_source: torch.Tensor,
    train_target: torch.Tensor,
    test_source: torch.Tensor,
    test_target: torch.Tensor,
    seed: int = 0,
) -> float:
    """Held-out accuracy of a logistic-regression domain classifier fitted on frozen features.

    A *fresh* probe, not the method's own domain classifier, so the number is comparable across
    modes: near 0.5 means the features hide the domain, near 1.0 means they reveal it.
    """
    x_train = torch.cat([train_source, train_target]).numpy()
    y_train = np.r_[np.zeros(len(train_source)), np.ones(len(train_target))]
    x_test = torch.cat([test_source, test_target]).numpy()
    y_test = np.r_[np.zeros(len(test_source)), np.ones(len(test_target))]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(x_train, y_train)
    return float(probe.score(x_test, y_test))


def _sample_rows(x: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    if limit <= 0 or len(x) <= limit:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]]


def evaluate(
    method: Method, data: DomainData, probe_samples: int = 0, seed: int = 0, test_samples: int = 0
) -> dict[str, float]:
    """``source_acc`` and ``target_acc`` on the test splits; ``domain_acc`` of a fresh linear probe;
    ``target_im``, the label-free :func:`information_maximisation` score of the target test predictions.
    Without target labels there is no ``target_acc``: nothing that needs them is computed.

    ``probe_samples`` caps the samples per split the probe is fitted and scored on (0: all),
    which keeps the probe cheap on large data sets. ``test_samples`` caps the test samples the
    accuracies are computed on (0: all): for cheap checks during training.
    """
    features, labels = {}, {}
    for name, split in data.splits().items():
        limit = test_samples if name.endswith("_test") else probe_samples  # the probe alone reads _train rows
        split = Split(_sample_rows(split.x, limit, seed), None if split.y is None else _sample_rows(split.y, limit, seed))
        features[name] = extract_features(method, split.x, data.prepare, "source" if name.startswith("source") else "target")
        labels[name] = split.y
    result = {"source_acc": class_accuracy(method, features["source_test"], labels["source_test"])}
    if labels["target_test"] is not None:  # evaluation only: nothing trains or selects on it
        result["target_acc"] = class_accuracy(method, features["target_test"], labels["target_test"])
    result["target_im"] = information_maximisation(method, features["target_test"])  # reads no labels
    probe = {name: _sample_rows(f, probe_samples, seed) for name, f in features.items()}
    result["domain_acc"] = domain_probe_accuracy(
        probe["source_train"], probe["target_train"], probe["source_test"], probe["target_test"], seed
    )
    return result
