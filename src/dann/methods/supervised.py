"""Baselines trained on one domain's labels alone: no adaptation."""

from __future__ import annotations

from dann.data.batches import Batch
from dann.methods.base import Method
from dann.methods.losses import accuracy
from dann.methods.registry import register_method
from dann.methods.step import StepContext, StepLoss


@register_method("source_only", "label loss on labelled source only (no adaptation)")
class SourceOnly(Method):
    """Label loss on labelled source; the target batch is ignored. The lower bound DANN must beat.

    The target batch is read only by the target regularisers (entropy, self-training), which
    turn this into plain semi-supervised learning on the target: adaptation without alignment.
    """

    supports_self_training = True

    def loss(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        logits = self.model(batch.source_x)
        loss = self.label_loss(logits, batch.source_y)
        return StepLoss(
            loss,
            {"label_loss": loss.detach(), "label_acc": accuracy(logits.detach(), batch.source_y)},
            target_logits=lambda: self.model(batch.target_x),
        )


@register_method("target_only", "ORACLE: label loss on labelled target (reads target labels)")
class TargetOnly(Method):
    """Label loss on *labelled target*: an oracle upper bound, it reads target labels."""

    uses_target_labels = True

    def loss(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        assert batch.target_y is not None, "target_only needs target labels in the batch"
        logits = self.model(batch.target_x)
        loss = self.label_loss(logits, batch.target_y)
        return StepLoss(
            loss,
            {"label_loss": loss.detach(), "label_acc": accuracy(logits.detach(), batch.target_y)},
            target_logits=lambda: logits,
        )
