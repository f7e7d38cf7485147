"""A user's domain as read from disk: plain tensors plus what the reader wants to tell the user."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dann.errors import DataError


@dataclass
class LoadedDomain:
    """One domain read from an image folder, an image list, a table or an array file.

    ``x`` is uint8 ``(N, C, H, W)`` for images and float32 ``(N, F)`` for tables. ``y`` holds int64
    class indices into ``classes`` (``(N,)``), or is None when the domain is unlabelled (then
    ``classes`` is empty). ``paths`` names each sample (a file, or ``"file.csv:row"``) so predictions
    and errors can point at it; ``notes`` are things to tell the user once, e.g. conversions.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    classes: list[str]
    paths: list[str]
    notes: list[str] = field(default_factory=list)
    origin: str = ""  # the folder or file it was read from, for messages

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labelled(self) -> bool:
        return self.y is not None


def check_source(domain: LoadedDomain, min_classes: int = 2) -> None:
    """A source teaches the classifier, so it must be labelled and show at least ``min_classes`` classes."""
    where = domain.origin or "the source"
    if domain.y is None:
        raise DataError(f"source {where} is unlabelled: a source needs labels (class subfolders, a label column or a y array)")
    present = sorted({domain.classes[i] for i in domain.y.unique().tolist()})
    if len(present) < min_classes:
        raise DataError(
            f"source {where} has {len(present)} class(es) {present}: a source needs at least {min_classes} labelled classes"
        )
