"""Conditional domain-adversarial networks, CDAN and CDAN+E (Long et al., NeurIPS 2018)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dann.errors import ConfigError
from dann.methods.adversarial import DANN
from dann.methods.config import MethodConfig
from dann.methods.losses import domain_loss, entropy
from dann.methods.registry import register_method
from dann.methods.step import StepContext
from dann.models.grl import grad_reverse
from dann.models.network import DomainAdversarialNet, linear_layers, mlp


@dataclass
class CDANOptions:
    """CDAN's own options (``method.cdan.*``, ``method.cdan_e.*``)."""

    features: Literal["bottleneck", "extractor"] = "bottleneck"  # what the predictions condition
    max_outer: int = 4096  # above features * classes, a random multilinear map replaces the outer product
    random_dim: int = 1024  # output size of the random multilinear map
    dropout: float = 0.0  # dropout after each hidden layer of the discriminator

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.cdan.dropout must be in [0, 1), got {self.dropout}")
        for name in ("max_outer", "random_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"method.cdan.{name} must be at least 1, got {getattr(self, name)}")


class MultilinearMap(nn.Module):
    """``T(f, g)``: features ``f`` (``(N, F)``) conditioned on class probabilities ``g`` (``(N, C)``).

    The outer product ``g (x) f``, flattened to ``C * F``, lets the discriminator see the joint
    distribution of features and predictions, so aligning it aligns class-conditional
    distributions too. When ``C * F > max_outer`` it is approximated by the randomised map
    ``(R_f f) * (R_g g) / sqrt(d)`` with fixed Gaussian ``R_f`` (``F x d``), ``R_g`` (``C x d``),
    whose inner products match the outer product's in expectation.
    """

    def __init__(self, n_features: int, n_classes: int, max_outer: int, random_dim: int) -> None:
        super().__init__()
        self.randomised = n_features * n_classes > max_outer
        self.out_features = random_dim if self.randomised else n_features * n_classes
        if self.randomised:
            self.register_buffer("r_features", torch.randn(n_features, random_dim))
            self.register_buffer("r_classes", torch.randn(n_classes, random_dim))

    def forward(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.randomised:
            return (features @ self.r_features) * (probs @ self.r_classes) / math.sqrt(self.out_features)
        return torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).flatten(1)


def split_classifier(label_predictor: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``G_y`` as (bottleneck, last linear layer): the layers up to the classifier's input, and the classifier.

    A label predictor that is a single linear layer has no bottleneck (the identity).
    """
    last = linear_layers(label_predictor, "label predictor")[-1]
    if isinstance(label_predictor, nn.Sequential) and label_predictor[-1] is last:
        return label_predictor[:-1], last
    if label_predictor is last:
        return nn.Identity(), last
    raise ConfigError("method.cdan.features=bottleneck needs a label predictor that is nn.Sequential ending in nn.Linear")


@register_method("cdan", "dann whose discriminator sees features x class probabilities", domain_head="deep")
class CDAN(DANN):
    """DANN whose discriminator sees ``T(h, softmax(G_y(f)))`` instead of ``f``, behind the reversal layer.

    ``h`` is ``method.cdan.features``: ``bottleneck`` (default), the label predictor's last hidden
    layer, where Long et al. condition (the representation the classifier is linear on; on
    MNIST 100-d, so the exact 1,000-d outer product), or ``extractor``, the extractor's output
    ``f`` (2,352-d on MNIST, through the random map). With ``bottleneck`` the adversarial
    gradient shapes the label predictor's hidden layers as well as the extractor.

    The discriminator replaces the model's domain classifier: same hidden and output sizes (the
    registry builds ``cdan`` with the network's deep domain head, on MNIST the paper's 1024-1024,
    as in Long et al., since the conditional input is ``C`` times wider), input the size of
    :class:`MultilinearMap`'s output. As in the authors' code the class probabilities are
    detached: the adversarial gradient reaches ``G_f`` only through ``f``.
    """

    options_cls = CDANOptions
    options: CDANOptions

    def __init__(self, model: DomainAdversarialNet, config: MethodConfig | None = None, options: CDANOptions | None = None) -> None:
        super().__init__(model, config, options)
        domain_layers = linear_layers(model.domain_classifier, "domain classifier")
        # views of the label predictor's own layers, in a tuple so nn.Module does not register
        # them again: their weights stay once in the state dict and in checkpoints
        self.classifier_parts: tuple[nn.Module, nn.Module]
        if self.options.features == "bottleneck":
            self.classifier_parts = split_classifier(model.label_predictor)
            n_conditioned = self.classifier_parts[1].in_features
        else:
            self.classifier_parts = (nn.Identity(), model.label_predictor)
            n_conditioned = domain_layers[0].in_features
        self.conditional_map = MultilinearMap(n_conditioned, model.n_classes, self.options.max_outer, self.options.random_dim)
        model.domain_classifier = mlp(
            [self.conditional_map.out_features, *(layer.out_features for layer in domain_layers)],
            dropout=self.options.dropout,
        )

    def sample_weights(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weights of the domain loss; none (uniform) for plain CDAN."""
        return None

    def adversarial_loss(
        self, features: torch.Tensor, labels: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bottleneck, head = self.classifier_parts
        hidden = bottleneck(features)
        with torch.no_grad():
            class_logits = head(hidden)  # the label predictor's output, hidden layers run once
        conditioned = self.conditional_map(hidden, F.softmax(class_logits, 1))
        domain_logits = self.model.domain_classifier(grad_reverse(conditioned, self.reversal(ctx)))
        return domain_loss(domain_logits, labels, self.sample_weights(class_logits, labels)), domain_logits


@register_method("cdan_e", "cdan, domain loss weighted by 1 + exp(-entropy)", domain_head="deep")
class CDANE(CDAN):
    """CDAN with entropy conditioning: confident predictions count more in the domain loss.

    ``w_i = 1 + exp(-H(g_i))``, normalised to sum to one within each domain (as in the authors'
    code), so hard-to-transfer samples with uncertain predictions pull less on the alignment.
    The weights are constants: no gradient flows through them.
    """

    def sample_weights(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = 1.0 + torch.exp(-entropy(class_logits))
        return weights / torch.bincount(labels, weights=weights)[labels]
