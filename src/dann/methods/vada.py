"""VADA: DANN plus the cluster assumption, enforced by conditional entropy and virtual adversarial training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.methods.adversarial import DANN
from dann.methods.losses import entropy
from dann.methods.registry import register_method
from dann.methods.step import StepContext, StepLoss


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to L2 norm 1 over all its dimensions."""
    return x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def virtual_adversarial_kl(
    model: nn.Module, x: torch.Tensor, logits: torch.Tensor, epsilon: float, xi: float = 1e-6
) -> torch.Tensor:
    """Per-sample ``KL(p(x) || p(x + r_adv))`` with ``||r_adv|| = epsilon`` (VAT, Miyato et al. 2018).

    ``r_adv`` approximates the perturbation that changes the prediction most: one power-iteration
    step from a random direction ``d``, ``r_adv = epsilon * unit(grad_d KL(p(x) || p(x + xi d)))``.
    ``p(x)`` (from ``logits``) is a constant; gradients reach the model only through ``p(x + r_adv)``.
    """
    log_p = F.log_softmax(logits.detach(), 1)

    def kl(perturbed: torch.Tensor) -> torch.Tensor:
        return (log_p.exp() * (log_p - F.log_softmax(model(perturbed), 1))).sum(1)

    d = (xi * _unit(torch.randn_like(x))).requires_grad_()
    (grad,) = torch.autograd.grad(kl(x + d).sum(), d)
    return kl(x + epsilon * _unit(grad))


@dataclass
class VADAOptions:
    """VADA's own options (``method.vada.*``)."""

    source_weight: float = 1.0  # lambda_s: virtual adversarial loss on source
    target_weight: float = 0.1  # lambda_t: conditional entropy + virtual adversarial loss on target
    vat_epsilon: float = 0.5  # radius of the virtual adversarial perturbation (input units)

    def __post_init__(self) -> None:
        for name in ("source_weight", "target_weight", "vat_epsilon"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.vada.{name} must be 0 or more, got {getattr(self, name)}")


@register_method("vada", "dann + target entropy + virtual adversarial training")
class VADA(DANN):
    """Virtual Adversarial Domain Adaptation (Shu et al., ICLR 2018, "A DIRT-T approach").

    ``L_DANN + lambda_s VAT_s + lambda_t (H_t + VAT_t)``: the conditional entropy ``H_t`` of
    target predictions pushes decision boundaries out of dense target regions, and VAT makes
    the classifier locally Lipschitz (within ``vat_epsilon``) so that low entropy cannot be
    reached by a boundary squeezed between nearby target points. Domain alignment alone
    cannot stop that: it matches marginals, not classes.
    """

    options_cls = VADAOptions
    options: VADAOptions

    def loss(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        out, features = self.adversarial_step(batch, ctx)
        n_source = len(batch.source_x)
        logits = self.model.classify(features)
        vat = virtual_adversarial_kl(
            self.model, torch.cat([batch.source_x, batch.target_x]), logits, self.options.vat_epsilon
        )
        vat_source, vat_target = vat[:n_source].mean(), vat[n_source:].mean()
        target_entropy = entropy(logits[n_source:]).mean()
        loss = out.loss + self.options.source_weight * vat_source
        loss = loss + self.options.target_weight * (target_entropy + vat_target)
        metrics = {
            **out.metrics,
            "target_entropy": target_entropy.detach(),
            "vat_source": vat_source.detach(),
            "vat_target": vat_target.detach(),
        }
        return StepLoss(loss, metrics, out.target_logits)
