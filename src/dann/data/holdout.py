"""Seeded splits of a user's domain: the part held out for evaluation, and subsets for quick runs."""

from __future__ import annotations

import numpy as np

from dann.errors import ConfigError, DataError


def holdout_split(n: int, fraction: float, rng: np.random.Generator, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices ``(train, test)`` of ``n`` samples, ``test`` a random ``fraction`` of them (at least one), both sorted.

    ``fraction`` 0 gives ``(all, None)``: no held-out samples, evaluation reads the training ones.
    ``what`` names the domain in the error when it is too small to split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.holdout must be in [0, 1) (0: evaluate on the training samples), got {fraction}")
    if fraction == 0.0:
        return np.arange(n), None
    n_test = max(1, round(fraction * n))
    if n - n_test < 1:
        raise DataError(
            f"{what} has {n} sample(s), too few to hold out {fraction:g} of them for evaluation: "
            "add samples, give a test set, or set data.holdout=0"
        )
    order = rng.permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def limit(indices: np.ndarray, most: int, rng: np.random.Generator) -> np.ndarray:
    """A random subset of ``indices`` of size ``most`` (in their order), or all of them when ``most`` is 0 or not smaller."""
    if most <= 0 or len(indices) <= most:
        return indices
    return indices[np.sort(rng.choice(len(indices), most, replace=False))]
