"""What every method is: a small loss over one source batch and one target batch.

The training loop is shared (``dann.train.loop``); a method only says how to turn a batch into
a loss. Methods wrap the model (so one ``DistributedDataParallel`` wrapper covers the model and
any parameters a method adds) and may split a step into stages with their own optimisers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dann.data.batches import Batch
from dann.models.network import DomainAdversarialNet


@dataclass
class MethodOptions:
    """Knobs shared by all methods (the ``method`` section of a config)."""

    domain_loss: Literal["bce", "ce"] = "bce"  # one logit + BCE, or one output per domain + CE
    label_smoothing: float = 0.0  # on the source label loss
    transfer_weight: float = 1.0  # multiplies the adversarial (domain) loss


@dataclass
class StepContext:
    """Where training is: ``progress`` in [0, 1] and the scheduled adaptation factor ``lambda_``."""

    step: int
    progress: float
    lambda_: float


@dataclass
class StepLoss:
    """The loss to back-propagate for one stage, and detached scalars worth logging."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Method(nn.Module):
    """Base class. Subclasses set ``name`` and implement :meth:`forward` for each stage."""

    name: ClassVar[str]
    #: optimiser groups, each updated in this order every step
    stages: ClassVar[tuple[str, ...]] = ("model",)
    #: True only for oracle baselines; the loop then hands target labels to the method
    uses_target_labels: ClassVar[bool] = False

    def __init__(self, model: DomainAdversarialNet, options: MethodOptions | None = None) -> None:
        super().__init__()
        self.model = model
        self.options = options or MethodOptions()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Which parameters each stage's optimiser updates."""
        return {"model": list(self.parameters())}

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        raise NotImplementedError

    def features(self, x: torch.Tensor, domain: Literal["source", "target"]) -> torch.Tensor:
        """Features used at test time; a method with a separate target encoder overrides this."""
        return self.model.features(x)

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.options.label_smoothing)


def domain_labels(n_source: int, n_target: int, device: torch.device | None = None) -> torch.Tensor:
    """0 for source samples, 1 for target samples, in the order they are concatenated."""
    return torch.cat([torch.zeros(n_source, dtype=torch.long, device=device), torch.ones(n_target, dtype=torch.long, device=device)])


def domain_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE on one logit (``(N, 1)``) or cross-entropy over one output per domain (``(N, D)``)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    return F.cross_entropy(logits, labels)


def domain_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    predicted = (logits.squeeze(1) > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return (predicted == labels).float().mean()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).float().mean()
