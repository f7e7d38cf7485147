"""Validators as scikit-learn scorers, for ``GridSearchCV(scoring=...)`` and ``cross_val_score``.

Unlabelled (target) rows travel inside ``X`` and are marked in ``y`` by ``unlabeled_label``, the
way scikit-learn's semi-supervised estimators mark them: rows with ``y == unlabeled_label`` are
the target split, every other row is a labelled source row. A target row's ``y`` is only the
marker, so no validator can read a target label through the scorer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dann.errors import DataError
from dann.select.outputs import LabelledOutputs, Outputs
from dann.select.validators import SOURCE_VAL, TARGET_VAL, get_validator

#: ``scorer(estimator, X, y=None) -> float``, the signature scikit-learn calls
Scorer = Callable[..., float]

#: probabilities are clipped here before the log, so a certain prediction has finite logits
MIN_PROBABILITY = 1e-12


def _logits(estimator: Any, x: np.ndarray) -> torch.Tensor:
    """``log predict_proba(x)``: logits whose softmax is the estimator's probabilities."""
    return torch.from_numpy(np.log(np.clip(estimator.predict_proba(x), MIN_PROBABILITY, None)))


def make_scorer(name: str, unlabeled_label: Any = -1, **options: Any) -> Scorer:
    """A scorer computing validator ``name`` (built with ``options``) on a fitted classifier.

    The estimator needs ``predict_proba`` and ``classes_``, and ``transform`` (the features the
    classifier reads) for the feature-based validators (``dev``, ``devn``, ``class_ami``).
    ``y=None`` means every row is a target row. ``source_acc`` and DEV read the labelled rows,
    whose labels must be among ``estimator.classes_``; MixVal probes the estimator with mixed rows of ``X``.
    """
    validator = get_validator(name, **options)

    def scorer(estimator: Any, X: Any, y: Any = None) -> float:
        x = np.asarray(X)
        is_target = np.ones(len(x), dtype=bool) if y is None else np.asarray(y) == unlabeled_label
        source = target = None
        if TARGET_VAL in validator.splits:
            if not is_target.any():
                raise DataError(f"{name} scores target rows, and no row has y == {unlabeled_label!r}")
            x_target = x[is_target]
            features = torch.from_numpy(np.asarray(estimator.transform(x_target))) if validator.needs_features else None
            inputs = torch.from_numpy(x_target) if validator.needs_predict else None
            target = Outputs(_logits(estimator, x_target), features, inputs)
        if SOURCE_VAL in validator.splits:
            if is_target.all():
                raise DataError(f"{name} needs labelled source rows, and every row has y == {unlabeled_label!r}")
            x_source, y_source = x[~is_target], np.asarray(y)[~is_target]
            column = {label: k for k, label in enumerate(np.asarray(estimator.classes_).tolist())}
            unknown = sorted({label for label in y_source.tolist() if label not in column}, key=str)
            if unknown:
                raise DataError(f"{name}: labels {unknown[:5]} are not among the estimator's classes {list(column)}")
            features = torch.from_numpy(np.asarray(estimator.transform(x_source))) if validator.needs_features else None
            labels = torch.tensor([column[label] for label in y_source.tolist()], dtype=torch.long)
            source = LabelledOutputs(_logits(estimator, x_source), features, labels=labels)

        def predict(inputs: torch.Tensor) -> torch.Tensor:
            return _logits(estimator, inputs.numpy())

        return validator(source, target, predict)

    scorer.__name__ = f"{name}_scorer"
    return scorer
