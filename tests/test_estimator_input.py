"""The scikit-learn estimator refuses the nonsense the CLI refuses, as ValueError, and fits small data by default."""

from __future__ import annotations

import numpy as np
import pytest

from dann.sklearn import DANNClassifier


def small(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return rng.normal(size=(n, 3)) + 2 * y[:, None], y, rng.normal(size=(n + 5, 3)) + 1.0


def test_the_default_batch_size_fits_data_smaller_than_a_batch():
    X, y, Xt = small(30)
    est = DANNClassifier(steps=3, random_state=0).fit(X, y, X_target=Xt)
    assert est.predict(Xt).shape == (len(Xt),)


def test_a_batch_larger_than_a_domain_is_refused():
    X, y, Xt = small(30)
    with pytest.raises(ValueError, match=r"batch size 100 .* larger than the source_train split \(30 samples\)"):
        DANNClassifier(steps=3, batch_size=100, random_state=0).fit(X, y, X_target=Xt)
    with pytest.raises(ValueError, match=r"batch size 33 .* larger than the source_train split \(30 samples\)"):
        DANNClassifier(steps=3, batch_size=33, random_state=0).fit(X, y, X_target=Xt)
    DANNClassifier(steps=3, batch_size=30, random_state=0).fit(X, y, X_target=Xt)


@pytest.mark.parametrize("params, message", [
    ({"random_state": -1}, "random_state must be a seed of 0 or more"),
    ({"weight_decay": -0.1}, "weight_decay must be 0 or more"),
    ({"lambda_max": -1.0}, "lambda_max must be 0 or more"),
    ({"lr": float("nan")}, "must be a number, got NaN"),
    ({"lr": float("inf")}, "positive finite"),
    ({"hidden": ()}, "model.hidden must list at least one layer size"),
    ({"batch_size": "big"}, "'batch_size' must be an integer"),
])
def test_nonsense_parameters_are_value_errors(params, message):
    X, y, Xt = small(30)
    with pytest.raises(ValueError, match=message):
        DANNClassifier(steps=2, **{"random_state": 0, **params}).fit(X, y, X_target=Xt)
