"""VADA: DANN plus the cluster assumption, enforced by conditional entropy and virtual adversarial training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dann.data.batches import Batch
from dann.methods.adversarial import DANN
from dann.methods.base import StepContext, StepLoss, entropy


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


class VADA(DANN):
    """Virtual Adversarial Domain Adaptation (Shu et al., ICLR 2018, "A DIRT-T approach").

    ``L_DANN + lambda_s VAT_s + lambda_t (H_t + VAT_t)``: the conditional entropy ``H_t`` of
    target predictions pushes decision boundaries out of dense target regions, and VAT makes
    the classifier locally Lipschitz (within ``vat_epsilon``) so that low entropy cannot be
    reached by a boundary squeezed between nearby target points. Domain alignment alone
    cannot stop that: it matches marginals, not classes.
    """

    name = "vada"

    def regularise(self, out: StepLoss, batch: Batch, features: torch.Tensor, ctx: StepContext) -> StepLoss:
        out = super().regularise(out, batch, features, ctx)
        n_source = len(batch.source_x)
        logits = self.model.classify(features)
        vat = virtual_adversarial_kl(
            self.model, torch.cat([batch.source_x, batch.target_x]), logits, self.options.vat_epsilon
        )
        vat_source, vat_target = vat[:n_source].mean(), vat[n_source:].mean()
        target_entropy = entropy(logits[n_source:]).mean()
        options = self.options
        loss = out.loss + options.vada_source_weight * vat_source
        loss = loss + options.vada_target_weight * (target_entropy + vat_target)
        metrics = {
            **out.metrics,
            "target_entropy": target_entropy.detach(),
            "vat_source": vat_source.detach(),
            "vat_target": vat_target.detach(),
        }
        return StepLoss(loss, metrics)
