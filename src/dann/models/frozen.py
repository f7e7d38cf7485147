"""A frozen backbone is a fixed function: run it once over the data, then train only the heads.

With ``model.freeze_backbone=true`` the backbone's features of every image never change, so
:func:`backbone_features` computes them once (in memory) and returns data whose samples are those
features; the same network, asked for those inputs, builds only its heads
(:func:`~dann.models.backbones.heads_only`). Training a ResNet-50's heads on a CPU then takes
minutes instead of hours, and gives what training the frozen network on the images would give,
but for the order of floating-point sums.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dann.data.domains import DomainData, ExtraDomain, Split, identity
from dann.errors import ConfigError
from dann.models.backbones import cache_backbone_features
from dann.models.registry import BackboneOptions, ModelConfig, NetworkRequest


def is_frozen_backbone(model: object) -> bool:
    """Whether ``model`` (a :class:`ModelConfig`, or anything else) asks for a frozen torchvision backbone."""
    return isinstance(model, ModelConfig) and isinstance(model.options, BackboneOptions) and model.options.freeze_backbone


class BackboneFeatures:
    """Images -> frozen backbone features ``(N, F)``: the data's ``prepare``, then the backbone, in batches without gradients."""

    def __init__(self, backbone: torch.nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256) -> None:
        self.backbone, self.prepare, self.batch_size = backbone, prepare, batch_size

    @property
    def n_features(self) -> int:
        return self.backbone.n_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return cache_backbone_features(self.backbone, x, self.prepare, self.batch_size)


def frozen_backbone(data: DomainData, model: ModelConfig, seed: int = 0, device: torch.device | str = "cpu") -> BackboneFeatures:
    """The backbone :func:`dann.fit.fit` would build for ``data`` with ``seed`` (the same random
    initialisation where no weights are loaded), on ``device``, behind ``data.prepare``."""
    request = NetworkRequest(data.input_shape, data.n_classes, 1, tuple(model.domain_hidden))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # as fit() seeds before it builds the network
        network = model.build(request)
    return BackboneFeatures(network.backbone.to(device), data.prepare)


def backbone_features(
    data: DomainData, model: ModelConfig, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[DomainData, BackboneFeatures]:
    """``data`` with every split's images replaced by the frozen backbone's features, and the encoder used.

    Each distinct image tensor is encoded once (splits that share one, e.g. a test split that is
    the training split, share the features). The result has no ``prepare`` (the encoder applied
    it) and no ``augment``: features are computed once, so ``data`` must have no augmentation (a
    ConfigError otherwise).
    """
    if data.augment is not identity:
        raise ConfigError(
            "model.freeze_backbone=true computes each image's features once, so training images cannot be "
            "augmented: turn augmentation off (data.augment=none), or train the backbone (model.freeze_backbone=false)"
        )
    encode = frozen_backbone(data, model, seed, device)
    cache: dict[int, torch.Tensor] = {}

    def features(split: Split) -> Split:
        key = id(split.x)
        if key not in cache:
            cache[key] = encode(split.x)
        return Split(cache[key], split.y)

    extra = [ExtraDomain(d.name, features(d.train), d.labelled) for d in data.extra_domains]
    held_out = {name: None if split is None else features(split) for name, split in (("source_val", data.source_val), ("target_val", data.target_val))}
    encoded = DomainData(
        features(data.source_train), features(data.source_test), features(data.target_train), features(data.target_test),
        data.n_classes, prepare=identity, augment=identity, extra_domains=extra, **held_out,
    )
    return encoded, encode
