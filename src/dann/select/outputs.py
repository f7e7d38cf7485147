"""What a model produced on one held-out split: the only thing a validator reads.

Two types keep target labels out by construction: a target split is an :class:`Outputs`, which
has no ``labels`` field at all; only the source split may be a :class:`LabelledOutputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dann.errors import DataError


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on an unlabelled held-out split (the target validation split).

    ``logits`` is ``(N, C)``; ``features`` is ``(N, F)``, what the classifier reads (for DEV and
    ClassAMI); ``inputs`` is ``(N, ...)``, the samples themselves (for MixVal, which re-runs the model).
    """

    logits: torch.Tensor
    features: torch.Tensor | None = None
    inputs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.logits.ndim != 2 or not self.logits.is_floating_point():
            shape = tuple(self.logits.shape)
            raise DataError(f"logits must be a float (N, C) tensor, got {self.logits.dtype} of shape {shape}")
        if len(self.logits) == 0:
            raise DataError("a held-out split with no samples cannot be scored")
        if self.features is not None and (self.features.ndim != 2 or len(self.features) != len(self)):
            raise DataError(f"features must be ({len(self)}, F), got {tuple(self.features.shape)}")
        if self.inputs is not None and len(self.inputs) != len(self):
            raise DataError(f"inputs must have {len(self)} rows like the logits, got {len(self.inputs)}")

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def n_classes(self) -> int:
        return self.logits.shape[1]


@dataclass(frozen=True)
class LabelledOutputs(Outputs):
    """A model's outputs on the labelled source validation split; ``labels`` is ``(N,)`` class indices."""

    labels: torch.Tensor = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels.shape != (len(self),) or self.labels.is_floating_point():
            shape = tuple(self.labels.shape)
            raise DataError(f"labels must be ({len(self)},) class indices, got {self.labels.dtype} of shape {shape}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.n_classes):
            raise DataError(f"labels must lie in [0, {self.n_classes}), the logits' classes")
