"""Baselines trained on one domain's labels alone: no adaptation."""

from __future__ import annotations

import functools

from dann.data.batches import Batch
from dann.methods.base import Method, StepContext, StepLoss, accuracy


class SourceOnly(Method):
    """Label loss on labelled source; the target batch is ignored. The lower bound DANN must beat.

    The target batch is read only by the target-side options (entropy, self-training), which
    turn this into plain semi-supervised learning on the target: adaptation without alignment.
    """

    name = "source_only"
    supports_self_training = True

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        logits = self.model(batch.source_x)
        loss = self.label_loss(logits, batch.source_y)
        out = StepLoss(loss, {"label_loss": loss.detach(), "label_acc": accuracy(logits.detach(), batch.source_y)})
        target_logits = functools.cache(lambda: self.model(batch.target_x))
        out = self.add_target_entropy(out, target_logits)
        return self.add_self_training(out, batch, target_logits, ctx)


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
