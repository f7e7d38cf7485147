"""Terms any method can add on its target predictions, composed by the shared machinery.

A method's loss hands over its student target logits (lazily); these terms are added to the
loss of the method's regularised stage when their settings are on. No method calls them by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.methods.config import MethodConfig
from dann.methods.losses import class_imbalance, entropy
from dann.methods.step import StepContext, StepLoss
from dann.methods.teacher import DistributionAlignment, MeanTeacher
from dann.models.network import DomainAdversarialNet


class TargetRegularisers(nn.Module):
    """``out.loss`` plus the target terms that are on; owns the mean teacher of self-training.

    ``entropy_weight * mean_t H(p_t)``: minimising the entropy of each target prediction pushes
    decision boundaries out of dense target regions (the cluster assumption; Grandvalet &
    Bengio 2005). ``class_balance_weight * (log C - H(mean_t p_t))``: entropy minimisation
    alone is also won by predicting fewer classes; keeping the batch's average prediction
    near uniform forbids that (the diversity half of information maximisation, as in SHOT, Liang
    et al. 2020). Self-training adds ``lambda * pseudo_label_weight *`` the teacher's
    pseudo-label loss, ramped up with the adaptation factor since early pseudo-labels are mostly wrong.
    """

    def __init__(self, config: MethodConfig, model: DomainAdversarialNet, self_training: bool) -> None:
        super().__init__()
        self.config = config
        self.teacher: MeanTeacher | None = None
        if self_training:
            alignment = DistributionAlignment(model.n_classes, config.teacher_decay) if config.align_pseudo_labels else None
            self.teacher = MeanTeacher(model, config.teacher_decay, alignment)
        # the student, outside this module's parameters so its weights are registered once (in the method)
        self._student = (model,)

    @property
    def active(self) -> bool:
        return bool(self.config.entropy_weight or self.config.class_balance_weight or self.teacher is not None)

    def forward(self, out: StepLoss, batch: Batch, ctx: StepContext, training: bool) -> StepLoss:
        if out.target_logits is None:
            raise ConfigError("this method's loss gives no target predictions, so it takes no target regulariser")
        target_logits = functools.cache(out.target_logits)
        loss, metrics, config = out.loss, dict(out.metrics), self.config
        if config.entropy_weight:
            target_entropy = entropy(target_logits()).mean()
            loss = loss + config.entropy_weight * target_entropy
            metrics["target_entropy"] = target_entropy.detach()
        if config.class_balance_weight:
            imbalance = class_imbalance(target_logits())
            loss = loss + config.class_balance_weight * imbalance
            metrics["class_imbalance"] = imbalance.detach()
        if self.teacher is not None:
            pseudo, confident = self._pseudo_label_loss(batch, target_logits, training)
            loss = loss + config.pseudo_label_weight * ctx.lambda_ * pseudo
            metrics.update(pseudo_label_loss=pseudo.detach(), confident_fraction=confident)
        return StepLoss(loss, metrics, out.target_logits)

    def _pseudo_label_loss(
        self, batch: Batch, target_logits: Callable[[], torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher first catches up with the student's weights after the previous step."""
        if training:
            self.teacher.follow(self._student[0])
        logits = target_logits()
        # label smoothing eps caps a trained model's confidence near 1 - eps + eps / C: the
        # threshold is a fraction of that cap, so smoothing does not starve self-training
        smoothing, n_classes = self.config.label_smoothing, logits.shape[1]
        threshold = self.config.pseudo_label_threshold * (1.0 - smoothing + smoothing / n_classes)
        return self.teacher.pseudo_label_loss(
            logits, batch.unaugmented_target(), threshold,
            smoothing if self.config.smooth_pseudo_labels else 0.0, batch.source_y,
        )
