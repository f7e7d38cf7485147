"""Domain-adversarial training through the gradient reversal layer (Ganin & Lempitsky)."""

from __future__ import annotations

import torch

from dann.data.batches import Batch
from dann.methods.base import Method
from dann.methods.losses import accuracy, domain_accuracy, domain_loss
from dann.methods.registry import register_method
from dann.methods.step import StepContext, StepLoss


@register_method("dann_deep", "dann with the deeper domain classifier (model.deep_domain_hidden)", domain_head="deep")
@register_method("dann", "label loss + domain loss through the gradient reversal layer")
class DANN(Method):
    """Source label loss + domain loss, the domain classifier behind the reversal layer.

    Source and target go through the feature extractor as one batch (one pass, one set of
    kernel launches). The domain classifier minimises the domain loss; the reversal makes the
    extractor maximise it, scaled by the scheduled ``lambda_``.
    """

    supports_self_training = True
    #: True: the label loss sees detached features, so only the domain loss shapes the extractor
    label_head_only: bool = False

    def reversal(self, ctx: StepContext) -> float:
        """The gradient factor between the features and the domain classifier."""
        return ctx.lambda_

    def adversarial_loss(
        self, features: torch.Tensor, labels: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The domain loss on ``features`` (source then target) and the domain logits; CDAN overrides it."""
        domain_logits = self.model.discriminate(features, self.reversal(ctx))
        return domain_loss(domain_logits, labels), domain_logits

    def loss(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        return self.adversarial_step(batch, ctx)[0]

    def adversarial_step(self, batch: Batch, ctx: StepContext) -> tuple[StepLoss, torch.Tensor]:
        """DANN's loss and the features (source then target) the label predictor saw."""
        n_source = len(batch.source_x)
        features = self.model.features(torch.cat([batch.source_x, batch.target_x]))
        class_features = features.detach() if self.label_head_only else features
        logits = self.model.classify(class_features[:n_source])
        label_loss = self.label_loss(logits, batch.source_y)

        labels = batch.domain_labels()
        adversarial, domain_logits = self.adversarial_loss(features, labels, ctx)
        out = StepLoss(
            label_loss + self.config.transfer_weight * adversarial,
            {
                "label_loss": label_loss.detach(),
                "domain_loss": adversarial.detach(),
                "label_acc": accuracy(logits.detach(), batch.source_y),
                "discriminator_acc": domain_accuracy(domain_logits.detach(), labels),
            },
            target_logits=lambda: self.model.classify(class_features[n_source:]),
        )
        return out, class_features


@register_method("dann_teacher", "dann + self-training on confident target pseudo-labels of a mean teacher")
class MeanTeacherDANN(DANN):
    """DANN with self-training always on: ``L_DANN + lambda * w * L_pseudo`` (see :class:`MeanTeacher`)."""

    always_self_training = True


@register_method("domain_only", "domain loss only, reversal off: features separate the domains")
class DomainOnly(DANN):
    """Domain loss with the reversal turned off: the extractor *helps* the domain classifier.

    The representation is shaped by the domain loss alone, so it separates the domains and
    merges the classes. A label head is still fitted on the (detached) source features so
    source and target accuracy show how much class information survives.
    """

    label_head_only = True

    def reversal(self, ctx: StepContext) -> float:
        return -1.0  # gradient passes unchanged: features trained to *separate* domains
