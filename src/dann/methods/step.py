"""What a method's loss takes and gives for one step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class StepContext:
    """Where training is: ``progress`` in [0, 1] and the scheduled adaptation factor ``lambda_``."""

    step: int
    progress: float
    lambda_: float


@dataclass
class StepLoss:
    """The loss to back-propagate for one stage, and detached scalars worth logging.

    ``target_logits`` gives the student's class logits on the batch's target samples (with
    gradient), computed at most once and only if a target regulariser asks for them.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    target_logits: Callable[[], torch.Tensor] | None = None
