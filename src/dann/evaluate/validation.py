"""Label-free scores of a trained method on the held-out validation splits (``source_val``, ``target_val``).

The glue between a method and :mod:`dann.select`: it runs the method on the held-out splits and
hands each validator what it reads. The target's labels are never passed on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch

from dann.data.domains import DomainData
from dann.evaluate.metrics import extract_features
from dann.methods.base import Method
from dann.errors import DataError
from dann.select import LabelledOutputs, Outputs, Validator, get_validator

log = logging.getLogger(__name__)


@torch.no_grad()
def validation_scores(method: Method, data: DomainData, names: Sequence[str], seed: int = 0) -> dict[str, float]:
    """``{validator: score}`` for each of ``names`` whose splits this data holds out; higher is better."""
    validators = [_seeded(get_validator(name), seed) for name in names]
    held = {"source_val": data.source_val is not None, "target_val": data.target_val is not None}
    validators = [v for v in validators if all(held[split] for split in v.splits)]
    if not validators:
        return {}
    device = next(method.parameters()).device
    source = target = None
    if data.source_val is not None:
        features = extract_features(method, data.source_val.x, data.prepare, "source")
        source = LabelledOutputs(_logits(method, features, device), features, labels=data.source_val.y)
    if data.target_val is not None:
        features = extract_features(method, data.target_val.x, data.prepare, "target")
        inputs = data.prepare(data.target_val.x.to(device)).float().cpu()
        target = Outputs(_logits(method, features, device), features, inputs)

    def predict(x: torch.Tensor) -> torch.Tensor:
        was_training = method.training
        method.eval()
        logits = method.model.classify(method.features(x.to(device), "target")).float().cpu()
        method.train(was_training)
        return logits

    scores = {}
    for validator in validators:
        try:
            scores[validator.name] = float(validator(source_val=source, target_val=target, predict=predict))
        except DataError as err:  # e.g. too few held-out samples for DEV's folds: no score, not a failed run
            log.warning("validator %s gives no score here: %s", validator.name, err)
    return scores


def _logits(method: Method, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    return method.model.classify(features.to(device)).float().cpu()


def _seeded(validator: Validator, seed: int) -> Validator:
    """The validator with the run's seed, where it draws samples or folds."""
    return dataclasses.replace(validator, seed=seed) if hasattr(validator, "seed") else validator
