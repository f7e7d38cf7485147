"""torchvision classification models as DANN feature extractors.

Layout of :func:`torchvision_network` (the DANN/CDAN convention for image benchmarks)::

    images -> backbone (torchvision model, head removed: pooled features, (N, F))
           -> bottleneck (Linear(F, 256) + BatchNorm1d + ReLU)          = feature_extractor
           -> label_predictor Linear(256, C)
           -> domain_classifier mlp([256, *domain_hidden, D]) behind the gradient reversal

The bottleneck is part of the feature extractor, so the domain classifier sees exactly the
features the label predictor sees, and the adversarial gradient trains the bottleneck (at the
full learning rate) as well as the backbone. ``network.backbone`` names the pretrained part for a
0.1x learning rate (:func:`dann.models.network.lr_scaled_groups`).

With ``freeze_backbone=True`` the backbone is a fixed function: compute its features once with
:func:`cache_backbone_features` and train :func:`heads_only` on them.
"""

from __future__ import annotations

import difflib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from dann._torchvision import import_torchvision
from dann.errors import ConfigError, DataError
from dann.models.network import DomainAdversarialNet, mlp

#: ImageNet channel statistics: what torchvision's classification weights expect, and the
#: default for randomly initialised backbones too (inputs then have a familiar scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Where each torchvision family keeps its classification head, in the order tried.
HEAD_ATTRIBUTES = ("fc", "classifier", "head", "heads")
#: Auxiliary classifiers (GoogLeNet, Inception v3) that only run in train mode; dropped too.
AUX_ATTRIBUTES = ("AuxLogits", "aux1", "aux2")
#: Architecture options torchvision's builders set when they load the models' ImageNet weights.
PRETRAINED_OPTIONS = {"googlenet": {"transform_input": True}, "inception_v3": {"transform_input": True}}

_PURPOSE = "torchvision backbones (model.backbone)"


@dataclass(frozen=True)
class Preprocessing:
    """The input normalisation a backbone's weights expect.

    ``mean``/``std`` are per channel on the 0..1 scale; ``size`` is the side of the square crop the
    weights were trained on and ``resize_size`` the side the image is resized to before that crop
    (both None for random weights: any size the architecture accepts). Calling it scales and
    normalises a batch; resizing and cropping are the data pipeline's job.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    size: int | None = None
    resize_size: int | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` uint8 (0..255) or float (0..1) -> float32, ``(x - mean) / std`` per channel."""
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


class Backbone(nn.Module):
    """A torchvision classification model without its head: images ``(N, 3, H, W)`` -> features ``(N, n_features)``.

    ``removed`` holds the state-dict prefixes of the removed layers (head, auxiliary heads), whose
    keys a checkpoint may carry. A frozen backbone has no trainable parameters and stays in eval
    mode (BatchNorm statistics fixed, dropout off) when the network around it is put in train mode.
    """

    def __init__(self, model: nn.Module, name: str, n_features: int, removed: tuple[str, ...], preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.n_features = n_features
        self.removed = removed
        self.preprocessing = preprocessing
        self.frozen = False

    def freeze(self) -> Backbone:
        self.frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and not self.frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def torchvision_network(
    name: str,
    n_classes: int,
    n_domain_outputs: int,
    domain_hidden: list[int],
    bottleneck: int | None = 256,
    weights: str | None = None,
    freeze_backbone: bool = False,
    domain_dropout: float = 0.0,
    backbone_lr_scale: float = 0.1,
) -> DomainAdversarialNet:
    """A DANN on any torchvision classification model (``torchvision.models.list_models()``).

    Args:
        name: torchvision model name, e.g. ``"resnet50"``.
        n_classes: ``C``, outputs of the label predictor.
        n_domain_outputs: ``D``, outputs of the domain classifier (1 for binary cross-entropy).
        domain_hidden: hidden sizes of the domain classifier (the field uses ``[1024, 1024]``
            with ``domain_dropout=0.5``).
        bottleneck: size of the Linear + BatchNorm1d + ReLU block after the backbone; None for
            none (the heads then sit on the backbone's pooled features).
        weights: None (random init), ``"imagenet"`` (torchvision's default weights, read from its
            cache, never downloaded), a torchvision weights name such as ``"IMAGENET1K_V2"``, or
            the path of a state-dict file for this model.
        freeze_backbone: backbone parameters get no gradient and its BatchNorm statistics stay fixed.
        backbone_lr_scale: the backbone's learning rate as a multiple of the rest's (see
            :func:`dann.models.network.lr_scaled_groups`).

    The returned network's ``backbone`` attribute is the :class:`Backbone`; its
    ``preprocessing`` is what :func:`backbone_preprocessing` returns.
    """
    for what, value in (("n_classes", n_classes), ("n_domain_outputs", n_domain_outputs), ("bottleneck", bottleneck or 1)):
        if value < 1:
            raise ConfigError(f"model.{what} must be at least 1, got {value}")
    backbone = build_backbone(name, weights)
    if freeze_backbone:
        backbone.freeze()
    if bottleneck is None:
        extractor = nn.Sequential(OrderedDict(backbone=backbone))
        n_features = backbone.n_features
    else:
        block = nn.Sequential(nn.Linear(backbone.n_features, bottleneck), nn.BatchNorm1d(bottleneck), nn.ReLU())
        extractor = nn.Sequential(OrderedDict(backbone=backbone, bottleneck=block))
        n_features = bottleneck
    return DomainAdversarialNet(
        extractor,
        nn.Linear(n_features, n_classes),
        mlp([n_features, *domain_hidden, n_domain_outputs], dropout=domain_dropout),
        backbone=backbone,
        backbone_lr_scale=backbone_lr_scale,
    )


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    """The headless torchvision model ``name``, randomly initialised or loaded from ``weights`` (see :func:`torchvision_network`)."""
    tv = import_torchvision(_PURPOSE)
    _check_name(tv, name)
    enum = _weights_enum(tv, name, weights)
    options = PRETRAINED_OPTIONS.get(name, {}) if enum is not None else {}
    model = tv.models.get_model(name, weights=None, **options)
    n_features, removed = _remove_head(model, name)
    backbone = Backbone(model, name, n_features, removed, backbone_preprocessing(name, weights))
    if weights is not None:
        path = Path(weights) if enum is None else _cached_weights(name, enum)
        _load_state_dict(backbone, _read_state_dict(path), path)
    return backbone


def backbone_preprocessing(name: str, weights: str | None = None) -> Preprocessing:
    """The normalisation (and crop size) the weights of ``name`` expect.

    ``"imagenet"``, a weights name, or a path (taken to be a torchvision checkpoint of this model,
    which carries no preprocessing of its own): the values of the weights' ``transforms()``.
    None (random weights): ImageNet mean and std, no size.
    """
    if weights is None:
        return Preprocessing()
    tv = import_torchvision(_PURPOSE)
    _check_name(tv, name)
    enum = _weights_enum(tv, name, weights) or tv.models.get_model_weights(name).DEFAULT
    transforms = enum.transforms()
    return Preprocessing(
        tuple(float(v) for v in transforms.mean),
        tuple(float(v) for v in transforms.std),
        _side(transforms.crop_size),
        _side(transforms.resize_size),
    )


def heads_only(model: DomainAdversarialNet) -> DomainAdversarialNet:
    """The same network without its backbone: input = backbone features ``(N, F)``, e.g. from :func:`cache_backbone_features`.

    Shares every module with ``model`` (nothing is copied), so training it trains ``model``'s
    bottleneck and heads, and ``model`` on images then gives what it gives on cached features.
    """
    extractor = model.feature_extractor
    if model.backbone is None or not isinstance(extractor, nn.Sequential) or extractor[0] is not model.backbone:
        raise ConfigError("heads_only needs a network whose feature extractor is nn.Sequential(backbone, ...), as torchvision_network builds")
    return DomainAdversarialNet(nn.Sequential(*list(extractor)[1:]), model.label_predictor, model.domain_classifier)


@torch.no_grad()
def cache_backbone_features(
    backbone: nn.Module,
    x: torch.Tensor,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Backbone features of every image of ``x``, computed once in eval mode without gradients.

    ``x`` is ``(N, C, H, W)``, uint8 or float; each batch is moved to the backbone's device and
    passed through ``preprocess`` (e.g. the backbone's :class:`Preprocessing`) first. Returns
    float32 ``(N, F)`` on ``x``'s device. Valid as long as the backbone does not change: freeze it.
    """
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    try:
        chunks = []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            chunks.append(backbone(preprocess(batch) if preprocess is not None else batch).float().to(x.device))
    finally:
        backbone.train(was_training)
    return torch.cat(chunks)


def _check_name(tv, name: str) -> None:
    names = tv.models.list_models(module=tv.models)
    if name not in names:
        similar = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"similar: {', '.join(similar)}" if similar else f"e.g. {', '.join(names[:5])}"
        raise ConfigError(
            f"unknown torchvision classification model {name!r}; {hint} "
            f"(all {len(names)}: torchvision.models.list_models(module=torchvision.models))"
        )


def _weights_enum(tv, name: str, weights: str | None):
    """The torchvision weights enum member ``weights`` stands for, or None (random init or a path)."""
    if weights is None:
        return None
    enum = tv.models.get_model_weights(name)
    if weights == "imagenet":
        return enum.DEFAULT
    if weights in enum.__members__:
        return enum[weights]
    if not Path(weights).is_file():
        raise ConfigError(
            f"model.weights={weights!r} is not a file, 'imagenet' or a weights name of {name} ({', '.join(enum.__members__)})"
        )
    return None


def _cached_weights(name: str, enum) -> Path:
    """Where torch.hub keeps ``enum``'s file; one line on how to put it there when it is absent (no download)."""
    file_name = Path(urlparse(enum.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not path.is_file():
        raise ConfigError(
            f"ImageNet weights for {name} are not in {path}; download {enum.url} there (no download is attempted), "
            f"or pass model.weights=PATH"
        )
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(f"cannot read weights file {path} with torch.load(weights_only=True): {type(error).__name__}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"weights file {path} does not hold a state dict (parameter name -> tensor)")
    return state


# DenseNet's published checkpoints name some layers "norm.1" where the modules are "norm1".
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _load_state_dict(backbone: Backbone, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into the headless model: strict, except keys of the removed layers."""
    if backbone.name.startswith("densenet"):
        state = {_DENSENET_OLD_KEY.sub(lambda m: m.group(1) + m.group(2), k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not any(k.startswith(p + ".") for p in backbone.removed)}
    own = backbone.model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (old checkpoints predate it)
    missing = [k for k in own if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f"{what} keys {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ConfigError(f"weights {path} do not fit {backbone.name}: {'; '.join(parts)}")
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise ConfigError(
                f"weights {path} do not fit {backbone.name}: {key} has shape {tuple(tensor.shape)}, the model {tuple(own[key].shape)}"
            )
    backbone.model.load_state_dict(state)


def _remove_head(model: nn.Module, name: str) -> tuple[int, tuple[str, ...]]:
    """Replace the last Linear (or 1x1 Conv, SqueezeNet) of the head by Identity; its input size and the removed prefixes."""
    removed: list[str] = []
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in AUX_ATTRIBUTES:
            if getattr(model, attr, None) is not None:
                setattr(model, attr, None)
                removed.append(attr)
    for attr in HEAD_ATTRIBUTES:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            break
    else:
        raise ConfigError(f"{name} has no classification head named {' / '.join(HEAD_ATTRIBUTES)} to remove")
    layers = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    layers = layers or [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise ConfigError(f"{name}'s head {attr} has no nn.Linear or nn.Conv2d layer to remove")
    sub_name, layer = layers[-1]
    n_features = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    full_name = ".".join(p for p in (attr, sub_name) if p)
    parent_name, _, child = full_name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())
    return n_features, (full_name, *removed)


def _side(size) -> int | None:
    """torchvision's ``crop_size``/``resize_size`` (a list of one int, or an int) as one int."""
    if size is None:
        return None
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)
