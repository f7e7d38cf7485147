"""What every method is: a small loss over one source batch and one target batch.

The training loop is shared (``dann.train.loop``); a method only says how to turn a batch into
a loss. Methods wrap the model (so one ``DistributedDataParallel`` wrapper covers the model and
any parameters a method adds) and may split a step into stages with their own optimisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.methods.teacher import DistributionAlignment, MeanTeacher
from dann.models.network import DomainAdversarialNet


@dataclass
class MethodOptions:
    """Knobs shared by all methods (the ``method`` section of a config)."""

    domain_loss: Literal["bce", "ce"] = "bce"  # one logit + BCE, or one output per domain + CE
    label_smoothing: float = 0.0  # on the source label loss
    transfer_weight: float = 1.0  # multiplies the adversarial (domain) loss
    entropy_weight: float = 0.0  # target prediction entropy minimisation, any method (0: off)
    # any method: log C - H(mean target prediction), i.e. KL to uniform class use, so target
    # predictions stay spread over the classes instead of collapsing onto a few (0: off)
    class_balance_weight: float = 0.0
    # GAN-style methods (dann_alternating, adda): the extractor's loss against the discriminator,
    # see dann.methods.alternating.generator_loss
    generator_loss: Literal["flip", "uniform", "minimax"] = "flip"
    adda_pretrain_fraction: float = 0.3  # ADDA: share of steps spent pre-training the source model
    cdan_features: Literal["bottleneck", "extractor"] = "bottleneck"  # CDAN conditions these on the predictions
    cdan_max_outer: int = 4096  # CDAN: above features * classes, a random multilinear map replaces the outer product
    cdan_random_dim: int = 1024  # CDAN: output size of the random multilinear map
    cdan_dropout: float = 0.0  # CDAN: dropout after each hidden layer of its discriminator
    vada_source_weight: float = 1.0  # VADA lambda_s: virtual adversarial loss on source
    vada_target_weight: float = 0.1  # VADA lambda_t: conditional entropy + virtual adversarial loss on target
    vat_epsilon: float = 0.5  # VADA: radius of the virtual adversarial perturbation (input units)
    # one-stage methods (source_only, dann, cdan, cdan_e, vada, ...): + a mean teacher's confident target
    # pseudo-labels, see dann.methods.teacher (dann_teacher: always on)
    self_training: bool = False
    teacher_decay: float = 0.995  # self-training: the teacher is this EMA of the student's weights
    # self-training: teacher confidence a target pseudo-label needs, as a fraction of the most a
    # model trained with label_smoothing eps reaches (1 - eps + eps / classes)
    pseudo_label_threshold: float = 0.9
    pseudo_label_weight: float = 1.0  # self-training: weight of the pseudo-label loss (times lambda)
    # self-training: pseudo-labels get the source labels' label_smoothing too, so target predictions
    # are no more confident than source ones (a difference CDAN's discriminator sees but cannot undo)
    smooth_pseudo_labels: bool = True
    # self-training: align the teacher's target probabilities to the source class frequencies
    # before thresholding, so a class over-predicted on the target stops collecting pseudo-labels
    align_pseudo_labels: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"method.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("teacher_decay", "pseudo_label_threshold", "cdan_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"method.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.adda_pretrain_fraction < 1.0:
            raise ConfigError(f"method.adda_pretrain_fraction must be in (0, 1), got {self.adda_pretrain_fraction}")
        for name in ("transfer_weight", "entropy_weight", "class_balance_weight", "vada_source_weight", "vada_target_weight", "vat_epsilon", "pseudo_label_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("cdan_max_outer", "cdan_random_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"method.{name} must be at least 1, got {getattr(self, name)}")


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
    #: True: the loss calls :meth:`add_self_training`, so ``method.self_training`` can be on
    supports_self_training: ClassVar[bool] = False
    #: True: self-training is on whatever the options say (``dann_teacher``)
    always_self_training: ClassVar[bool] = False

    def __init__(self, model: DomainAdversarialNet, options: MethodOptions | None = None) -> None:
        super().__init__()
        self.model = model
        self.options = options or MethodOptions()
        self.teacher: MeanTeacher | None = None
        if self.options.self_training or self.always_self_training:
            if not self.supports_self_training:
                raise ConfigError(
                    f"method.self_training needs a one-stage method that takes it (source_only, dann, dann_deep, cdan, cdan_e, vada); "
                    f"{self.name} does not"
                )
            alignment = None
            if self.options.align_pseudo_labels:
                alignment = DistributionAlignment(model.n_classes, self.options.teacher_decay)
            self.teacher = MeanTeacher(model, self.options.teacher_decay, alignment)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Which parameters each stage's optimiser updates (never the teacher's)."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def active_stages(self, ctx: StepContext) -> tuple[str, ...]:
        """The stages the loop runs this step; a method with phases (ADDA) narrows it."""
        return self.stages

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        raise NotImplementedError

    def features(self, x: torch.Tensor, domain: Literal["source", "target"]) -> torch.Tensor:
        """Features used at test time; a method with a separate target encoder overrides this."""
        return self.model.features(x)

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.options.label_smoothing)

    def add_target_entropy(self, out: StepLoss, target_logits: Callable[[], torch.Tensor]) -> StepLoss:
        """``out`` plus the two target entropy terms every method takes, each when its weight is set.

        ``entropy_weight * mean_t H(p_t)``: minimising the entropy of each target prediction pushes
        decision boundaries out of dense target regions (the cluster assumption; Grandvalet &
        Bengio 2005). ``class_balance_weight * (log C - H(mean_t p_t))``: entropy minimisation
        alone is also won by predicting fewer classes; keeping the batch's average prediction
        near uniform forbids that (the diversity half of information maximisation, as in SHOT, Liang et al.
        2020; French et al. 2018's class balance). ``target_logits`` is called only when a term
        is on, so a method that ignores the target batch pays nothing.
        """
        options = self.options
        if options.entropy_weight == 0 and options.class_balance_weight == 0:
            return out
        logits = target_logits()
        loss, metrics = out.loss, dict(out.metrics)
        if options.entropy_weight:
            target_entropy = entropy(logits).mean()
            loss = loss + options.entropy_weight * target_entropy
            metrics["target_entropy"] = target_entropy.detach()
        if options.class_balance_weight:
            imbalance = class_imbalance(logits)
            loss = loss + options.class_balance_weight * imbalance
            metrics["class_imbalance"] = imbalance.detach()
        return StepLoss(loss, metrics)

    def add_self_training(
        self, out: StepLoss, batch: Batch, student_target_logits: Callable[[], torch.Tensor], ctx: StepContext
    ) -> StepLoss:
        """``out`` plus ``lambda * pseudo_label_weight *`` the teacher's pseudo-label loss, when self-training is on.

        The term is ramped up with the adaptation factor: early pseudo-labels are mostly wrong.
        The teacher first catches up with the student's weights after the previous step.
        """
        if self.teacher is None:
            return out
        if self.training:
            self.teacher.follow(self.model)
        logits = student_target_logits()
        # label smoothing eps caps a trained model's confidence near 1 - eps + eps / C: the
        # threshold is a fraction of that cap, so smoothing does not starve self-training
        smoothing, n_classes = self.options.label_smoothing, logits.shape[1]
        threshold = self.options.pseudo_label_threshold * (1.0 - smoothing + smoothing / n_classes)
        loss, confident = self.teacher.pseudo_label_loss(
            logits,
            batch.unaugmented_target(),
            threshold,
            smoothing if self.options.smooth_pseudo_labels else 0.0,
            batch.source_y,
        )
        metrics = {**out.metrics, "pseudo_label_loss": loss.detach(), "confident_fraction": confident}
        return StepLoss(out.loss + self.options.pseudo_label_weight * ctx.lambda_ * loss, metrics)


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
