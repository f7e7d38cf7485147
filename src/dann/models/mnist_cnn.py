"""The paper's MNIST -> MNIST-M network (Ganin & Lempitsky, 2015)."""

from __future__ import annotations

from torch import nn

from dann.models.network import DomainAdversarialNet, mlp

MNIST_FEATURES = 7 * 7 * 48


def mnist_feature_extractor(in_channels: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """conv 5x5x32 -> ReLU -> maxpool 2 -> conv 5x5x48 -> ReLU -> maxpool 2 -> 7*7*48 features.

    ``padding=2`` keeps 28x28 -> 14x14 -> 7x7, which gives the paper's 7*7*48 feature size.
    Each max-pool runs before its ReLU: the two commute (ReLU is monotone), so the function and
    its gradients are the paper's, but the ReLU and its backward touch 4x fewer values.
    ``batch_norm`` adds a BatchNorm after each pooling: NOT the paper's network, an option.
    """
    layers: list[nn.Module] = []
    for n_in, n_out in ((in_channels, 32), (32, 48)):
        layers += [nn.Conv2d(n_in, n_out, kernel_size=5, padding=2), nn.MaxPool2d(2)]
        layers += [nn.BatchNorm2d(n_out)] if batch_norm else []
        layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.Flatten())


def mnist_network(
    domain_hidden: list[int],
    n_domain_outputs: int = 1,
    in_channels: int = 3,
    n_classes: int = 10,
    batch_norm: bool = False,
    image_size: tuple[int, int] = (28, 28),
) -> DomainAdversarialNet:
    """The paper's network: label predictor 100-100-``n_classes``, domain classifier ``domain_hidden``-``n_domain_outputs``.

    On 28x28 inputs the features are the paper's 7*7*48; other sizes (multiples of 4) scale them.
    """
    n_features = 48 * (image_size[0] // 4) * (image_size[1] // 4)
    return DomainAdversarialNet(
        mnist_feature_extractor(in_channels, batch_norm),
        mlp([n_features, 100, 100, n_classes]),
        mlp([n_features, *domain_hidden, n_domain_outputs]),
    )
