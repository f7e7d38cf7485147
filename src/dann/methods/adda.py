"""Adversarial Discriminative Domain Adaptation (Tzeng et al., CVPR 2017): untied target encoder, two phases."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.methods.alternating import GeneratorOptions, discriminator_step, generator_loss
from dann.methods.base import Method
from dann.methods.config import MethodConfig
from dann.methods.losses import accuracy
from dann.methods.registry import register_method
from dann.methods.step import StepContext, StepLoss
from dann.models.network import DomainAdversarialNet


@dataclass
class ADDAOptions(GeneratorOptions):
    """ADDA's own options (``method.adda.*``)."""

    pretrain_fraction: float = 0.3  # share of steps spent pre-training the source model

    def __post_init__(self) -> None:
        if not 0.0 < self.pretrain_fraction < 1.0:
            raise ConfigError(f"method.adda.pretrain_fraction must be in (0, 1), got {self.pretrain_fraction}")


@register_method("adda", "source pre-training, then a target encoder copy adapted against a discriminator")
class ADDA(Method):
    """Pre-train on source, then adapt a *copy* of the encoder to the target as a GAN generator.

    Phase 1 (the first ``pretrain_fraction`` of the steps), stage ``source``: source encoder
    ``M_s`` (the model's extractor) and classifier ``C`` minimise the source label loss.
    Phase 2: the target encoder ``M_t`` starts as a copy of ``M_s``; stage ``discriminator``
    trains ``D`` (the model's domain classifier) on ``M_s(x_s)`` vs ``M_t(x_t)``, stage ``target``
    trains ``M_t`` alone so ``D`` takes ``M_t(x_t)`` for source (:func:`generator_loss`).
    ``M_s`` and ``C`` are frozen, so the label space stays put; untied weights let ``M_t`` move
    further than a shared encoder could. Target samples are classified as ``C(M_t(x_t))``.
    """

    options_cls = ADDAOptions
    options: ADDAOptions
    stages = ("source", "discriminator", "target")
    regularised_stage = "target"

    def __init__(self, model: DomainAdversarialNet, config: MethodConfig | None = None, options: ADDAOptions | None = None) -> None:
        super().__init__(model, config, options)
        self.target_encoder = copy.deepcopy(model.feature_extractor)
        # Set when M_t is copied from M_s at the first phase-2 step; a buffer, so checkpoints keep it.
        self.register_buffer("adapting", torch.tensor(False))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "source": [*self.model.feature_extractor.parameters(), *self.model.label_predictor.parameters()],
            "discriminator": list(self.model.domain_classifier.parameters()),
            "target": list(self.target_encoder.parameters()),
        }

    def active_stages(self, ctx: StepContext) -> tuple[str, ...]:
        if ctx.progress < self.options.pretrain_fraction:
            return ("source",)
        return ("discriminator", "target")

    def loss(self, batch: Batch, ctx: StepContext, stage: str = "source") -> StepLoss:
        if stage == "source":
            logits = self.model(batch.source_x)
            loss = self.label_loss(logits, batch.source_y)
            label_acc = accuracy(logits.detach(), batch.source_y)
            return StepLoss(loss, {"phase": torch.tensor(1.0), "label_loss": loss.detach(), "label_acc": label_acc})

        if not self.adapting:
            self.target_encoder.load_state_dict(self.model.feature_extractor.state_dict())
            self.adapting.fill_(True)
        if stage == "discriminator":
            with torch.no_grad():
                source_features = self.model.features(batch.source_x)
                target_features = self.target_encoder(batch.target_x)
            features = torch.cat([source_features, target_features])
            out = discriminator_step(self.model.domain_classifier, features, batch.domain_labels())
            return StepLoss(out.loss, {"phase": torch.tensor(2.0), **out.metrics})

        target_features = self.target_encoder(batch.target_x)
        target_labels = batch.domain_labels()[len(batch.source_x) :]
        domain_logits = self.model.domain_classifier(target_features)
        adversarial = generator_loss(domain_logits, target_labels, self.options.generator_loss)
        return StepLoss(
            self.config.transfer_weight * adversarial,
            {"generator_loss": adversarial.detach()},
            target_logits=lambda: self.model.classify(target_features),
        )

    def features(self, x: torch.Tensor, domain: Literal["source", "target"]) -> torch.Tensor:
        """Target samples go through ``M_t`` once it exists (phase 2), everything else through ``M_s``."""
        return self.encoder(domain)(x)

    def encoder(self, domain: Literal["source", "target"]) -> nn.Module:
        return self.target_encoder if domain == "target" and bool(self.adapting) else self.model.feature_extractor
