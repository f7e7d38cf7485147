"""Blobs: a deterministic 2-D two-domain problem where domain shift is visible by eye."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dann.data.domains import DomainData, ExtraDomain, Split
from dann.errors import ConfigError


@dataclass
class BlobsConfig:
    """Gaussian class blobs on a circle (source); the target is the same blobs rotated then shifted."""

    n_classes: int = 3
    train_per_class: int = 200
    test_per_class: int = 200
    radius: float = 1.5  # distance of the class centres from the origin
    spread: float = 0.25  # standard deviation of each blob
    rotation: float = 30.0  # degrees, source -> target
    shift: list[float] = field(default_factory=lambda: [1.0, -1.0])  # translation, source -> target
    # > 0: one more unlabelled training domain, this fraction of the way (rotation and shift) to the target
    intermediate: float = 0.0

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ConfigError(f"data.n_classes must be at least 2, got {self.n_classes}")
        if min(self.train_per_class, self.test_per_class) < 1:
            raise ConfigError("data.train_per_class and data.test_per_class must be at least 1")
        if self.spread <= 0:
            raise ConfigError(f"data.spread must be positive, got {self.spread}")
        if len(self.shift) != 2:
            raise ConfigError(f"data.shift must be two numbers [dx, dy], got {self.shift}")
        if not 0.0 <= self.intermediate < 1.0:
            raise ConfigError(f"data.intermediate must be in [0, 1) (0: no intermediate domain), got {self.intermediate}")


def _blobs(cfg: BlobsConfig, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    angles = 2 * math.pi * np.arange(cfg.n_classes) / cfg.n_classes
    centres = cfg.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.repeat(np.arange(cfg.n_classes), per_class)
    points = centres[labels] + cfg.spread * rng.standard_normal((len(labels), 2))
    return points, labels


def to_target_domain(points: np.ndarray, cfg: BlobsConfig, fraction: float = 1.0) -> np.ndarray:
    """Apply ``fraction`` of the domain shift: rotate about the origin by ``fraction * cfg.rotation`` degrees, then translate."""
    theta = math.radians(fraction * cfg.rotation)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return points @ rotation.T + fraction * np.asarray(cfg.shift)


def _split(points: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.tensor(points, dtype=torch.float32), torch.tensor(labels, dtype=torch.long))


def make_blobs_domains(cfg: BlobsConfig, seed: int = 0) -> DomainData:
    """Source and target, train and test; every split drawn independently from one seeded generator."""
    rng = np.random.default_rng(seed)
    splits = []
    for per_class, to_target in (
        (cfg.train_per_class, False),
        (cfg.test_per_class, False),
        (cfg.train_per_class, True),
        (cfg.test_per_class, True),
    ):
        points, labels = _blobs(cfg, per_class, rng)
        if to_target:
            points = to_target_domain(points, cfg)
        splits.append(_split(points, labels))
    extra = []
    if cfg.intermediate:  # drawn last, so the four main splits do not depend on it
        points, labels = _blobs(cfg, cfg.train_per_class, rng)
        extra.append(ExtraDomain("intermediate", _split(to_target_domain(points, cfg, cfg.intermediate), labels)))
    return DomainData(*splits, n_classes=cfg.n_classes, extra_domains=extra)
