"""Self-training from a mean teacher: confident pseudo-labels on the target (``method.self_training``)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dann.models.network import DomainAdversarialNet


def label_path(model: DomainAdversarialNet) -> nn.Sequential:
    """Feature extractor then label predictor: the network that classifies (shares the model's modules)."""
    return nn.Sequential(model.feature_extractor, model.label_predictor)


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

    def __init__(self, model: DomainAdversarialNet, decay: float, alignment: DistributionAlignment | None = None) -> None:
        super().__init__()
        # the label path only: a teacher never needs the domain classifier
        self.network = copy.deepcopy(label_path(model)).requires_grad_(False)
        self.decay = decay
        self.alignment = alignment

    @torch.no_grad()
    def follow(self, student: DomainAdversarialNet) -> None:
        """Teacher weights move ``1 - decay`` of the way to the student's (buffers are copied)."""
        path = label_path(student)
        torch._foreach_lerp_(list(self.network.parameters()), list(path.parameters()), 1.0 - self.decay)
        for mine, theirs in zip(self.network.buffers(), path.buffers()):
            mine.copy_(theirs)

    def pseudo_label_loss(
        self,
        student_logits: torch.Tensor,
        plain_target: torch.Tensor,
        threshold: float,
        label_smoothing: float,
        source_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean_t 1[conf_t >= threshold] CE_eps(student_logits_t, argmax teacher(x_t))``, and the confident fraction.

        ``CE_eps`` is cross-entropy with ``label_smoothing`` eps, the same as the source labels get
        (see ``MethodOptions.smooth_pseudo_labels``). With an ``alignment``, the teacher's
        probabilities are first aligned to the class frequencies of ``source_labels`` (the batch's).
        """
        with torch.no_grad():
            self.network.eval()
            probs = F.softmax(self.network(plain_target), 1)
            if self.alignment is not None:
                probs = self.alignment(probs, source_labels)
            confidence, pseudo_labels = probs.max(1)
            confident = (confidence >= threshold).float()
        losses = F.cross_entropy(student_logits, pseudo_labels, reduction="none", label_smoothing=label_smoothing)
        loss = (losses * confident).mean()
        return loss, confident.mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class DistributionAlignment(nn.Module):
    """Rescales target class probabilities so that, on average, they use the classes as the source does.

    ``p~ = normalise(p * source_frequency / mean target p)``, both running averages over about
    ``1 / (1 - decay)`` batches (ReMixMatch's distribution alignment, Berthelot et al. 2020). A
    class the model over-predicts on the target (a sink that early mistakes fall into) loses
    confidence, so fewer of its pseudo-labels pass the threshold, and self-training stops
    feeding the sink. Assumes the target's class proportions are the source's; reads no target
    labels. The averages update only in training mode.
    """

    def __init__(self, n_classes: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("source_frequency", torch.full((n_classes,), 1.0 / n_classes))
        self.register_buffer("target_mean", torch.full((n_classes,), 1.0 / n_classes))

    @torch.no_grad()
    def forward(self, target_probs: torch.Tensor, source_labels: torch.Tensor) -> torch.Tensor:
        if self.training:
            n_classes = len(self.source_frequency)
            counts = torch.bincount(source_labels, minlength=n_classes).to(target_probs.dtype)
            self.source_frequency.lerp_(counts / counts.sum(), 1.0 - self.decay)
            self.target_mean.lerp_(target_probs.mean(0), 1.0 - self.decay)
        aligned = target_probs * (self.source_frequency / self.target_mean)
        return aligned / aligned.sum(1, keepdim=True)
