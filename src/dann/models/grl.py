"""Gradient reversal: the layer that turns a domain classifier into an adversary.

Forward it is the identity; backward it multiplies the incoming gradient by ``-lambda_``.
Placed between the feature extractor and the domain classifier, it lets one backward pass
train the classifier to *tell* domains apart while pushing the features to *confuse* it.
"""

from __future__ import annotations

import torch
from torch import nn


class _GradientReversalFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        # view_as: same storage, no copy, but a new autograd node so backward is ours.
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        if ctx.lambda_ == 0:
            # Exact zeros even where the upstream gradient is inf or NaN: lambda 0 means "blocked".
            return torch.zeros_like(grad_output), None
        return grad_output * -ctx.lambda_, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Identity on ``x``; in backward, the gradient is multiplied by ``-lambda_``.

    ``lambda_ = 0`` blocks the gradient; a negative ``lambda_`` *scales* it instead of
    reversing it (the "domain classification only" mode uses ``-1``).
    """
    return _GradientReversalFunction.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; set ``lambda_`` every step from a schedule.

    Example::

        grl = GradientReversal()
        grl.lambda_ = dann_lambda(progress)
        domain_logits = domain_classifier(grl(features))
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
