"""DANN plus self-training: confident pseudo-labels on target from a mean teacher."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from dann.data.batches import Batch
from dann.methods.adversarial import DANN
from dann.methods.base import MethodOptions, StepContext, StepLoss
from dann.models.network import DomainAdversarialNet


class MeanTeacherDANN(DANN):
    """``L_DANN + lambda * w * mean_t 1[conf_t >= tau] CE(student(x_t), argmax teacher(x_t))``.

    The teacher is an exponential moving average of the student's weights (Tarvainen & Valpola
    2017), so its predictions change slowly and are more accurate than any single step's; the
    student is trained on the target images the teacher is confident about (``conf >= tau``,
    ``method.pseudo_label_threshold``), the self-training that carries an aligned model the rest
    of the way into the target's clusters (as in DIRT-T's teacher-guided refinement). The teacher
    labels the images before augmentation and the student learns them augmented, so the labels
    are as good as the teacher gets and the student also learns the augmentation's invariance
    on the target (the weak/strong views of FixMatch). The term is ramped up with the adaptation
    factor ``lambda``: early pseudo-labels are mostly wrong.
    """

    name = "dann_teacher"

    def __init__(self, model: DomainAdversarialNet, options: MethodOptions | None = None) -> None:
        super().__init__(model, options)
        self.teacher = copy.deepcopy(model).requires_grad_(False)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(self.model.parameters())}

    @torch.no_grad()
    def update_teacher(self) -> None:
        """Teacher weights move ``1 - teacher_decay`` of the way to the student's (buffers are copied)."""
        teacher, student = list(self.teacher.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(teacher, student, 1.0 - self.options.teacher_decay)
        for mine, theirs in zip(self.teacher.buffers(), self.model.buffers()):
            mine.copy_(theirs)

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        if self.training:
            self.update_teacher()  # the student's weights after the previous step
        return super().forward(batch, ctx, stage)

    def regularise(self, out: StepLoss, batch: Batch, features: torch.Tensor, ctx: StepContext) -> StepLoss:
        out = super().regularise(out, batch, features, ctx)
        with torch.no_grad():
            self.teacher.eval()
            confidence, pseudo_labels = F.softmax(self.teacher(batch.unaugmented_target()), 1).max(1)
            confident = (confidence >= self.options.pseudo_label_threshold).float()
        student_logits = self.model.classify(features[len(batch.source_x) :])
        pseudo_label_loss = (F.cross_entropy(student_logits, pseudo_labels, reduction="none") * confident).mean()
        weight = self.options.pseudo_label_weight * ctx.lambda_
        metrics = {**out.metrics, "pseudo_label_loss": pseudo_label_loss.detach(), "confident_fraction": confident.mean()}
        return StepLoss(out.loss + weight * pseudo_label_loss, metrics)
