"""The loss terms and batch scores methods are built from."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def domain_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE on one logit (``(N, 1)``) or cross-entropy over one output per domain (``(N, D)``).

    With ``weight`` (``(N,)``), the weighted mean ``sum_i w_i l_i / sum_i w_i`` of the per-sample losses.
    """
    if logits.shape[1] == 1:
        losses = F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float(), reduction="none")
    else:
        losses = F.cross_entropy(logits, labels, reduction="none")
    if weight is None:
        return losses.mean()
    return (weight * losses).sum() / weight.sum()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy ``H(p) = -sum_k p_k log p_k`` of ``p = softmax(logits)``, shape ``(N,)``."""
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1)


def class_imbalance(logits: torch.Tensor) -> torch.Tensor:
    """``log C - H(mean_i p_i)``: the KL divergence from uniform of the average prediction; 0 when classes are used evenly."""
    mean_p = F.softmax(logits, 1).mean(0)
    return math.log(logits.shape[1]) + (mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()


def domain_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    predicted = (logits.squeeze(1) > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return (predicted == labels).float().mean()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).float().mean()
