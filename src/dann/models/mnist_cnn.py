"""The paper's MNIST -> MNIST-M network (Ganin & Lempitsky, 2015)."""

from __future__ import annotations

from torch import nn

from dann.models.network import DomainAdversarialNet, mlp

MNIST_FEATURES = 7 * 7 * 48


def mnist_feature_extractor(in_channels: int = 3) -> nn.Sequential:
    """conv 5x5x32 -> ReLU -> maxpool 2 -> conv 5x5x48 -> ReLU -> maxpool 2 -> 7*7*48 features.

    ``padding=2`` keeps 28x28 -> 14x14 -> 7x7, which gives the paper's 7*7*48 feature size.
    Each max-pool runs before its ReLU: the two commute (ReLU is monotone), so the function and
    its gradients are the paper's, but the ReLU and its backward touch 4x fewer values.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(32, 48, kernel_size=5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
    )


def mnist_network(
    domain_hidden: list[int], n_domain_outputs: int = 1, in_channels: int = 3, n_classes: int = 10
) -> DomainAdversarialNet:
    """The paper's network: label predictor 100-100-``n_classes``, domain classifier ``domain_hidden``-``n_domain_outputs``."""
    return DomainAdversarialNet(
        mnist_feature_extractor(in_channels),
        mlp([MNIST_FEATURES, 100, 100, n_classes]),
        mlp([MNIST_FEATURES, *domain_hidden, n_domain_outputs]),
    )
