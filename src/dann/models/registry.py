"""Networks by name: the built-ins and any a user registers with :func:`register_network`.

A network factory takes a :class:`NetworkRequest` (what the data and method need: input shape,
classes, domain outputs, domain head) and its own options, and returns a fresh
:class:`~dann.models.network.DomainAdversarialNet`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dann.config import extra_keys, from_dict
from dann.errors import ConfigError
from dann.models.mnist_cnn import mnist_network
from dann.models.network import DomainAdversarialNet, mlp_network
from dann.registry import Registry


@dataclass(frozen=True)
class NetworkRequest:
    """What a network must fit: one sample's shape, the class count, the domain classifier's outputs and hidden sizes."""

    input_shape: tuple[int, ...]
    n_classes: int
    n_domain_outputs: int
    domain_hidden: tuple[int, ...]


NetworkFactory = Callable[[NetworkRequest, Any], DomainAdversarialNet]


@dataclass(frozen=True)
class NetworkEntry:
    build: NetworkFactory
    options_cls: type
    description: str


NETWORKS: Registry[NetworkEntry] = Registry("network")


def register_network(name: str, options: type, description: str = "") -> Callable[[NetworkFactory], NetworkFactory]:
    """Register ``factory(request, options) -> DomainAdversarialNet`` under ``name``.

    ``options`` is the network's own options dataclass; its fields become ``model.<field>`` keys.
    """
    return NETWORKS.registering(name, lambda factory, text: NetworkEntry(factory, options, text), description)


def get_network(name: str) -> NetworkEntry:
    return NETWORKS.get(name)


@dataclass
class ModelConfig:
    """The ``model`` section: which network, its domain heads, initialisation and layout, and the network's own options."""

    network: str = "mlp"
    domain_hidden: list[int] = field(default_factory=lambda: [32])  # the domain classifier's hidden layers
    deep_domain_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])  # the deeper one (dann_deep, cdan)
    init: Literal["torch", "xavier", "kaiming"] = "torch"  # torch: PyTorch's own layer defaults
    channels_last: bool = False  # NHWC activations (image networks): faster oneDNN convolutions on CPU
    #: the network's own options (``model.hidden`` for ``mlp``), checked against its options class
    options: Any = extra_keys()

    def __post_init__(self) -> None:
        for name in ("domain_hidden", "deep_domain_hidden"):
            if any(size < 1 for size in getattr(self, name)):
                raise ConfigError(f"model.{name} sizes must be at least 1, got {getattr(self, name)}")
        options_cls = get_network(self.network).options_cls
        if isinstance(self.options, dict):
            self.options = from_dict(options_cls, self.options, prefix="model.")
        elif not isinstance(self.options, options_cls):
            raise ConfigError(f"model options for {self.network!r} must be {options_cls.__name__}")

    def build(self, request: NetworkRequest) -> DomainAdversarialNet:
        """A freshly initialised network for ``request``."""
        model = get_network(self.network).build(request, self.options)
        init_weights(model, self.init)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def init_weights(model: nn.Module, how: str) -> None:
    """Re-initialise conv and linear weights (biases to zero) unless ``how`` keeps PyTorch's defaults."""
    if how == "torch":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if how == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, a=0.0, nonlinearity="relu")
            nn.init.zeros_(module.bias)


@dataclass
class MLPOptions:
    hidden: list[int] = field(default_factory=lambda: [32, 8])  # feature extractor layers; the last is the feature size

    def __post_init__(self) -> None:
        if not self.hidden or any(size < 1 for size in self.hidden):
            raise ConfigError(f"model.hidden must list at least one layer size, each at least 1, got {self.hidden}")


@register_network("mlp", MLPOptions, "MLP for vectors (n, features): extractor model.hidden, linear label head")
def _mlp(request: NetworkRequest, options: MLPOptions) -> DomainAdversarialNet:
    if len(request.input_shape) != 1:
        raise ConfigError(f"network mlp takes vectors (n, features); the data's samples have shape {request.input_shape}")
    return mlp_network(
        request.input_shape[0], request.n_classes, list(options.hidden), list(request.domain_hidden), request.n_domain_outputs
    )


@dataclass
class LeNetOptions:
    batch_norm: bool = False  # BatchNorm after each pooling of the extractor: NOT the paper's network


@register_network("lenet", LeNetOptions, "the paper's MNIST CNN for images (n, C, H, W), H and W multiples of 4")
def _lenet(request: NetworkRequest, options: LeNetOptions) -> DomainAdversarialNet:
    shape = request.input_shape
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ConfigError(f"network lenet takes images (n, C, H, W) with H and W multiples of 4; the data's samples have shape {shape}")
    return mnist_network(
        list(request.domain_hidden), request.n_domain_outputs, in_channels=shape[0], n_classes=request.n_classes,
        batch_norm=options.batch_norm, image_size=shape[1:],
    )
