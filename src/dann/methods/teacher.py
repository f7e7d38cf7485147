"""Self-training from a mean teacher: confident pseudo-labels on the target (``method.self_training``)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class MeanTeacher(nn.Module):
    """A copy of the network that follows the student's weights as an exponential moving average.

    The teacher (Tarvainen & Valpola 2017) changes slowly, so its predictions are steadier and
    more accurate than any single step's. It labels the target images *before* augmentation and
    the student learns them augmented, so the labels are as good as the teacher gets and the
    student also learns the augmentation's invariance on the target (FixMatch's weak and strong
    views). Only labels the teacher is at least ``threshold`` sure of count: the self-training
    that carries an aligned model the rest of the way into the target's clusters (as in
    DIRT-T's teacher-guided refinement). The teacher is never moved by a gradient.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def follow(self, student: nn.Module) -> None:
        """Teacher weights move ``1 - decay`` of the way to the student's (buffers are copied)."""
        torch._foreach_lerp_(list(self.network.parameters()), list(student.parameters()), 1.0 - self.decay)
        for mine, theirs in zip(self.network.buffers(), student.buffers()):
            mine.copy_(theirs)

    def pseudo_label_loss(
        self, student_logits: torch.Tensor, plain_target: torch.Tensor, threshold: float, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean_t 1[conf_t >= threshold] CE_eps(student_logits_t, argmax teacher(x_t))``, and the confident fraction.

        ``CE_eps`` is cross-entropy with ``label_smoothing`` eps, the same as the source labels get
        (see ``MethodOptions.smooth_pseudo_labels``).
        """
        with torch.no_grad():
            self.network.eval()
            confidence, pseudo_labels = F.softmax(self.network(plain_target), 1).max(1)
            confident = (confidence >= threshold).float()
        losses = F.cross_entropy(student_logits, pseudo_labels, reduction="none", label_smoothing=label_smoothing)
        loss = (losses * confident).mean()
        return loss, confident.mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)
