"""The three-part model: feature extractor -> label predictor, and a domain classifier behind the reversal."""

from __future__ import annotations

import torch
from torch import nn

from dann.errors import ConfigError
from dann.models.grl import grad_reverse


class DomainAdversarialNet(nn.Module):
    """Feature extractor ``G_f``, label predictor ``G_y`` and domain classifier ``G_d``.

    Any of the three parts can be swapped; methods decide how they are combined in a loss.

    Shape:
        - input: ``(N, *)`` whatever the feature extractor takes
        - features: ``(N, F)``; class logits: ``(N, C)``; domain logits: ``(N, D)``
          (``D = 1`` for a binary cross-entropy domain loss, else one output per domain)

    ``backbone`` (optional) names a pretrained part of the feature extractor, so a training loop
    can give it a smaller learning rate than the freshly initialised rest: ``backbone_lr_scale``
    times the rest's (see :func:`lr_scaled_groups`). It must be a submodule of
    ``feature_extractor``; the network keeps only its path, so ``state_dict`` keys do not change
    and copies (EMA teacher, averaged model) find their own backbone.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        label_predictor: nn.Module,
        domain_classifier: nn.Module,
        *,
        backbone: nn.Module | None = None,
        backbone_lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0.0 <= backbone_lr_scale < float("inf"):
            raise ConfigError(f"backbone_lr_scale must be 0 or more, got {backbone_lr_scale}")
        self.backbone_lr_scale = backbone_lr_scale
        self.feature_extractor = feature_extractor
        self.label_predictor = label_predictor
        self.domain_classifier = domain_classifier
        self.backbone_path: str | None = None
        if backbone is not None:
            paths = [name for name, m in feature_extractor.named_modules() if m is backbone]
            if not paths:
                raise ValueError("backbone must be a submodule of feature_extractor")
            self.backbone_path = ".".join(p for p in ("feature_extractor", paths[0]) if p)

    @property
    def backbone(self) -> nn.Module | None:
        """The pretrained part of the feature extractor, or None when the network has none."""
        return None if self.backbone_path is None else self.get_submodule(self.backbone_path)

    @property
    def n_classes(self) -> int:
        """``C``, the output size of the label predictor's last linear layer."""
        return linear_layers(self.label_predictor, "label predictor")[-1].out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.label_predictor(features)

    def discriminate(self, features: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
        """Domain logits, with the gradient into ``features`` multiplied by ``-lambda_``."""
        return self.domain_classifier(grad_reverse(features, lambda_))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits: what a trained model is used for."""
        return self.classify(self.features(x))


def lr_scaled_groups(
    params: list[nn.Parameter], model: DomainAdversarialNet, backbone_lr_scale: float | None = None
) -> list[dict]:
    """Optimiser parameter groups: ``params`` split into the model's backbone and everything else.

    Returns ``[{"params": rest, "lr_scale": 1.0}, {"params": in_backbone, "lr_scale": backbone_lr_scale}]``
    (a group only when it has parameters), ``backbone_lr_scale`` defaulting to the model's own
    (the field's convention for a pretrained backbone: 0.1x the heads' learning rate). The loop
    applies it as ``group["lr"] = lr * group["lr_scale"]``. ``params`` may hold parameters
    outside ``model`` (a method's own, or a copy of the backbone such as ADDA's target encoder),
    which count as "rest".
    """
    if backbone_lr_scale is None:
        backbone_lr_scale = model.backbone_lr_scale
    backbone = model.backbone
    in_backbone = set() if backbone is None else {id(p) for p in backbone.parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in in_backbone], "lr_scale": 1.0},
        {"params": [p for p in params if id(p) in in_backbone], "lr_scale": backbone_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def linear_layers(module: nn.Module, what: str) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of ``module`` in order; a config error naming ``what`` if there are none."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ConfigError(f"the model's {what} has no nn.Linear layer to size from")
    return layers


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU (and optional dropout) between them, none after the last."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def mlp_network(
    n_inputs: int,
    n_classes: int,
    hidden: list[int],
    domain_hidden: list[int],
    n_domain_outputs: int = 1,
) -> DomainAdversarialNet:
    """A DANN for vector data: MLP extractor (ReLU output), linear label head, MLP domain head."""
    extractor = nn.Sequential(mlp([n_inputs, *hidden]), nn.ReLU())
    n_features = hidden[-1]
    return DomainAdversarialNet(
        extractor,
        nn.Linear(n_features, n_classes),
        mlp([n_features, *domain_hidden, n_domain_outputs]),
    )
