"""What every method is: a small loss over one source batch and one target batch.

The training loop is shared (``dann.train.loop``); a method only says how to turn a batch into
a loss (:meth:`Method.loss`). The terms any method can take on its target predictions (entropy,
class balance, self-training) are added by :class:`~dann.methods.regularisers.TargetRegularisers`,
never by hand. Methods wrap the model (so one ``DistributedDataParallel`` wrapper covers the
model and any parameters a method adds) and may split a step into stages with their own optimisers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.methods.config import MethodConfig
from dann.methods.regularisers import TargetRegularisers
from dann.methods.step import StepContext, StepLoss
from dann.models.network import DomainAdversarialNet


class Method(nn.Module):
    """Base class. Subclasses implement :meth:`loss` for each of their ``stages``."""

    #: the method's own options dataclass (its section ``method.<name>``); ``None``: it has none
    options_cls: ClassVar[type | None] = None
    #: optimiser groups, each updated in this order every step
    stages: ClassVar[tuple[str, ...]] = ("model",)
    #: the stage whose loss the target regularisers join (the one that trains the classifier on the target)
    regularised_stage: ClassVar[str] = "model"
    #: True only for oracle baselines; the loop then hands target labels to the method
    uses_target_labels: ClassVar[bool] = False
    #: True: a one-stage method whose target predictions a mean teacher can label (``method.self_training``)
    supports_self_training: ClassVar[bool] = False
    #: True: self-training is on whatever the options say (``dann_teacher``)
    always_self_training: ClassVar[bool] = False

    def __init__(self, model: DomainAdversarialNet, config: MethodConfig | None = None, options: Any = None) -> None:
        super().__init__()
        self.model = model
        self.config = config or MethodConfig()
        if self.options_cls is not None:
            options = options if options is not None else self.options_cls()
            if not isinstance(options, self.options_cls):
                raise ConfigError(f"{type(self).__name__} takes {self.options_cls.__name__}, got {type(options).__name__}")
        self.options = options
        self_training = self.config.self_training or self.always_self_training
        if self_training and not self.supports_self_training:
            raise ConfigError(f"method.self_training needs a one-stage method that takes it; {type(self).__name__} does not")
        self.regularisers = TargetRegularisers(self.config, model, self_training)

    @property
    def teacher(self) -> nn.Module | None:
        """The mean teacher of self-training, if on."""
        return self.regularisers.teacher

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Which parameters each stage's optimiser updates (never the teacher's)."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def active_stages(self, ctx: StepContext) -> tuple[str, ...]:
        """The stages the loop runs this step; a method with phases (ADDA) narrows it."""
        return self.stages

    def loss(self, batch: Batch, ctx: StepContext, stage: str) -> StepLoss:
        """The method's own loss for ``stage`` of one step."""
        raise NotImplementedError

    def forward(self, batch: Batch, ctx: StepContext, stage: str = "model") -> StepLoss:
        """:meth:`loss`, plus the target regularisers on the regularised stage."""
        out = self.loss(batch, ctx, stage)
        if stage == self.regularised_stage and self.regularisers.active:
            out = self.regularisers(out, batch, ctx, self.training)
        return out

    def features(self, x: torch.Tensor, domain: Literal["source", "target"]) -> torch.Tensor:
        """Features used at test time; a method with a separate target encoder overrides this."""
        return self.model.features(x)

    def encoder(self, domain: Literal["source", "target"]) -> nn.Module:
        """The module :meth:`features` applies to ``domain``'s inputs, as a module of its own (for
        export, which cannot trace a choice made on a tensor). Override it with :meth:`features`."""
        return self.model.feature_extractor

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)


def n_domain_outputs(domain_loss: str, n_domains: int) -> int:
    """One logit for BCE on two domains, else one output per domain."""
    if domain_loss == "ce":
        return n_domains
    if n_domains > 2:
        raise ConfigError(
            f"method.domain_loss=bce needs exactly two domains, this data has {n_domains}; "
            "set method.domain_loss=ce (one output per domain)"
        )
    return 1
