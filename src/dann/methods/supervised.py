"""Baselines trained on one domain's labels alone: no adaptation."""

from __future__ import annotations

from dann.data.batches import Batch
from dann.methods.base import Method, StepContext, StepLoss, accuracy


class SourceOnly(Method):
    """Label loss on labelled source; the target batch is ignored. The lower bound DANN must beat."""

    name = "source_only"

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        logits = self.model(batch.source_x)
        loss = self.label_loss(logits, batch.source_y)
        out = StepLoss(loss, {"label_loss": loss.detach(), "label_acc": accuracy(logits.detach(), batch.source_y)})
        return self.add_target_entropy(out, lambda: self.model(batch.target_x))


class TargetOnly(Method):
    """Label loss on *labelled target*: an oracle upper bound, it reads target labels."""

    name = "target_only"
    uses_target_labels = True

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        assert batch.target_y is not None, "target_only needs target labels in the batch"
        logits = self.model(batch.target_x)
        loss = self.label_loss(logits, batch.target_y)
        out = StepLoss(loss, {"label_loss": loss.detach(), "label_acc": accuracy(logits.detach(), batch.target_y)})
        return self.add_target_entropy(out, lambda: logits)
