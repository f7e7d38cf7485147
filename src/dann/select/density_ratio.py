"""Importance weights ``p_target(x) / p_source(x)`` of source samples, from a domain classifier."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dann.errors import DataError

#: domain probabilities are clipped to ``[EPS, 1 - EPS]`` so that no weight is 0 or infinite
EPS = 1e-6


def importance_weights(
    source_features: torch.Tensor, target_features: torch.Tensor, folds: int = 5, seed: int = 0
) -> torch.Tensor:
    """Density ratio ``w(x) = p_t(x) / p_s(x)`` at each source sample, shape ``(n_s,)``, float64.

    By Bayes, ``p_t(x) / p_s(x) = [P(target | x) / P(source | x)] * (n_s / n_t)`` for a domain
    classifier trained on ``n_s`` source and ``n_t`` target samples (You et al., ICML 2019).
    The classifier is a logistic regression on standardised features (``C = 1``). It is
    *cross-fitted*: source and target rows are split into ``folds`` stratified folds (seeded) and
    each source row is weighted by the classifier fitted on the other folds, with the class
    counts of that fit in the prior ratio, so no weight comes from a classifier that saw its sample.
    """
    n_s, n_t = len(source_features), len(target_features)
    if min(n_s, n_t) < folds:
        raise DataError(f"importance weights need at least {folds} source and target samples, got {n_s} and {n_t}")
    x = torch.cat([source_features, target_features]).detach().cpu().double().numpy()
    is_target = np.r_[np.zeros(n_s, dtype=int), np.ones(n_t, dtype=int)]
    weights = np.empty(n_s)
    for train, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, is_target):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        classifier.fit(x[train], is_target[train])
        source_rows = held_out[held_out < n_s]
        p_target = np.clip(classifier.predict_proba(x[source_rows])[:, 1], EPS, 1 - EPS)
        prior_ratio = (is_target[train] == 0).sum() / (is_target[train] == 1).sum()
        weights[source_rows] = p_target / (1 - p_target) * prior_ratio
    return torch.from_numpy(weights)
