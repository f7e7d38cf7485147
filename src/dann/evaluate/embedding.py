"""2-D embeddings of learned features, for looking at what a method did to the domains."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE


def embed_2d(features: np.ndarray, how: Literal["pca", "tsne"], seed: int = 0) -> np.ndarray:
    """Project ``(N, F)`` features to ``(N, 2)`` with PCA (fast, linear) or t-SNE (local structure)."""
    if how == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    # PCA to 50 dims first: the usual t-SNE recipe, much faster on wide CNN features.
    if features.shape[1] > 50:
        features = PCA(n_components=50, random_state=seed).fit_transform(features)
    return TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(features)
