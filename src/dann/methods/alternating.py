"""GAN-style domain-adversarial training: a discriminator step, then a generator step, no reversal layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.methods.base import Method
from dann.methods.losses import accuracy, domain_accuracy, domain_loss
from dann.methods.registry import register_method
from dann.methods.step import StepContext, StepLoss


def domain_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` log-probabilities over domains; one logit ``z`` means ``p(domain 1) = sigmoid(z)``."""
    if logits.shape[1] == 1:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], 1)
    return F.log_softmax(logits, 1)


def generator_loss(
    domain_logits: torch.Tensor, labels: torch.Tensor, kind: Literal["flip", "uniform", "minimax"]
) -> torch.Tensor:
    """The feature extractor's loss against a fixed discriminator, given the true domain ``labels``.

    ``flip``: the domain loss to the *other* domain's label, ``L_d(D(f), 1 - d)`` (the inverted-label,
    non-saturating GAN loss): still strong when the discriminator wins, weak once it is fooled.
    ``uniform``: cross-entropy to the uniform distribution, ``-1/D sum_k log p_k`` (the domain
    confusion loss of Tzeng et al. 2015), minimal exactly when the discriminator cannot tell.
    ``minimax``: ``-L_d(D(f), d)``, DANN's own objective; its gradient is the reversal layer's,
    vanishing when the discriminator wins. All three share the fixed point ``p = 1/D``.
    """
    if kind == "flip":
        if domain_logits.shape[1] > 2:
            raise ConfigError("method.generator_loss=flip needs two domains (no 'other' label); use uniform or minimax")
        return domain_loss(domain_logits, 1 - labels)
    if kind == "uniform":
        return -domain_log_probs(domain_logits).mean(1).mean()
    return -domain_loss(domain_logits, labels)


def discriminator_step(discriminator: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> StepLoss:
    """The discriminator's loss: the domain loss to the true domain ``labels`` on *detached* features."""
    logits = discriminator(features.detach())
    loss = domain_loss(logits, labels)
    metrics = {"discriminator_loss": loss.detach(), "discriminator_acc": domain_accuracy(logits.detach(), labels)}
    return StepLoss(loss, metrics)


@dataclass
class GeneratorOptions:
    """The options of the GAN-style methods (``method.dann_alternating.*``, ``method.adda.*``)."""

    # the extractor's loss against the discriminator, see generator_loss
    generator_loss: Literal["flip", "uniform", "minimax"] = "flip"


@register_method("dann_alternating", "dann as a GAN: discriminator and generator steps, no reversal")
class AlternatingDANN(Method):
    """DANN's minimax objective trained as a GAN: two optimisers, two stages per step, no reversal.

    Stage ``discriminator`` updates ``G_d`` alone: ``min L_d(G_d(f), d)`` on detached features.
    Stage ``generator`` updates ``G_f`` and ``G_y`` against the just-updated ``G_d``:
    ``min L_y + transfer_weight * lambda * L_gen`` with :func:`generator_loss`. The reversal layer
    does both in one backward pass with one optimiser; here each player has its own step.
    """

    options_cls = GeneratorOptions
    options: GeneratorOptions
    stages = ("discriminator", "generator")
    regularised_stage = "generator"

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        discriminator = list(self.model.domain_classifier.parameters())
        ids = {id(p) for p in discriminator}
        return {"discriminator": discriminator, "generator": [p for p in self.parameters() if id(p) not in ids]}

    def loss(self, batch: Batch, ctx: StepContext, stage: str = "generator") -> StepLoss:
        n_source = len(batch.source_x)
        x = torch.cat([batch.source_x, batch.target_x])
        if stage == "discriminator":
            with torch.no_grad():
                features = self.model.features(x)
            return discriminator_step(self.model.domain_classifier, features, batch.domain_labels())

        features = self.model.features(x)
        logits = self.model.classify(features[:n_source])
        label_loss = self.label_loss(logits, batch.source_y)
        adversarial = generator_loss(
            self.model.domain_classifier(features), batch.domain_labels(), self.options.generator_loss
        )
        return StepLoss(
            label_loss + self.config.transfer_weight * ctx.lambda_ * adversarial,
            {
                "label_loss": label_loss.detach(),
                "generator_loss": adversarial.detach(),
                "label_acc": accuracy(logits.detach(), batch.source_y),
            },
            target_logits=lambda: self.model.classify(features[n_source:]),
        )
