"""The ``method`` section of a config: what every method shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dann.config import extra_keys
from dann.errors import ConfigError


@dataclass
class MethodConfig:
    """The ``method`` section: settings every method shares, the target regularisers any method
    can take, and each chosen method's own options under its name (``method.cdan.random_dim``)."""

    domain_loss: Literal["bce", "ce"] = "bce"  # one logit + BCE, or one output per domain + CE
    label_smoothing: float = 0.0  # on the source label loss
    transfer_weight: float = 1.0  # multiplies the adversarial (domain) loss

    entropy_weight: float = 0.0  # target prediction entropy minimisation, any method (0: off)
    # any method: log C - H(mean target prediction), i.e. KL to uniform class use, so target
    # predictions stay spread over the classes instead of collapsing onto a few (0: off)
    class_balance_weight: float = 0.0
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

    #: ``{method name: its options}``, checked against each method's own options class when the
    #: study's config is resolved (``dann.methods.registry.resolve_method_options``)
    per_method: dict[str, Any] = extra_keys()

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"method.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("teacher_decay", "pseudo_label_threshold"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"method.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("transfer_weight", "entropy_weight", "class_balance_weight", "pseudo_label_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.{name} must be 0 or more, got {getattr(self, name)}")
