"""In-memory domain data: labelled source, unlabelled target (train and test), optionally more training domains."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dann.errors import DataError


def identity(x: torch.Tensor) -> torch.Tensor:
    """The default ``prepare`` and ``augment``: the batch as stored."""
    return x


@dataclass
class Split:
    """Inputs ``x`` (``(N, *)``, any dtype; images stay uint8 until batched) and labels ``y``
    (``(N,)`` int64), or ``y=None`` for data whose labels do not exist (an unlabelled target)."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ExtraDomain:
    """A further *training* domain with its own domain label: a labelled source, or an unlabelled
    target-side domain (e.g. one between source and target). Its labels ``train.y`` are read only
    when ``labelled`` (and by the ``target_only`` oracle, which reads every target-side label)."""

    name: str
    train: Split
    labelled: bool = False


@dataclass
class DomainData:
    """Everything an experiment trains and evaluates on.

    ``prepare`` turns a stored batch into model input (e.g. uint8 -> normalised float); it runs
    per batch so the full data set stays compact in memory. ``augment`` randomly transforms a
    prepared *training* batch (every training domain alike); evaluation never sees it. Target
    labels, where they exist, are kept for evaluation (and the ``target_only`` upper bound);
    the adaptation methods never read them. The source splits must be labelled; each target
    split may or may not be.
    """

    source_train: Split
    source_test: Split
    target_train: Split
    target_test: Split
    n_classes: int
    prepare: Callable[[torch.Tensor], torch.Tensor] = field(default=identity)
    augment: Callable[[torch.Tensor], torch.Tensor] = field(default=identity)
    extra_domains: list[ExtraDomain] = field(default_factory=list)
    #: held out of the training splits for model selection (:func:`hold_out`); validators read
    #: these alone, and never the target's labels
    source_val: Split | None = None
    target_val: Split | None = None

    def __post_init__(self) -> None:
        names = [domain.name for domain in self.extra_domains]
        reserved = {"source_train", "source_test", "target_train", "target_test", "source_val", "target_val"}
        if len(set(names)) != len(names) or set(names) & reserved:
            raise DataError(f"extra domain names must be unique and differ from the main splits, got {names}")
        shapes = {name: tuple(split.x.shape[1:]) for name, split in self.splits().items()}
        if len(set(shapes.values())) != 1:
            raise DataError(f"all splits must have the same sample shape, got {shapes}")
        for name, split in self.splits().items():
            check_split(split, self.n_classes, name)
        for name in ("source_val", "target_val"):
            if getattr(self, name) is not None:
                check_split(getattr(self, name), self.n_classes, name)
        for name in ("source_train", "source_test"):
            if not self.splits()[name].labelled:
                raise DataError(f"{name}: the source must be labelled")

    @property
    def target_labelled(self) -> bool:
        """Whether target test labels exist, so target accuracy can be measured.

        The training target may be unlabelled while its test split is labelled (the usual case:
        a labelled test set beside unlabelled training images); only the ``target_only`` oracle
        needs ``target_train.y``.
        """
        return self.target_test.labelled

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(self.source_train.x.shape[1:])

    def splits(self) -> dict[str, Split]:
        """The training and test splits, then the extra domains' training splits (not the held-out ones)."""
        return {
            "source_train": self.source_train,
            "source_test": self.source_test,
            "target_train": self.target_train,
            "target_test": self.target_test,
            **{domain.name: domain.train for domain in self.extra_domains},
        }

    def training_domains(self) -> tuple[list[Split], list[Split]]:
        """Labelled (source-side) and unlabelled (target-side) training splits, in domain-label order.

        Domain labels count the source side first: 0 is ``source_train``, then the labelled extra
        domains, then ``target_train``, then the unlabelled extra domains. With no extra domains
        that is 0 = source, 1 = target.
        """
        sources = [self.source_train, *(d.train for d in self.extra_domains if d.labelled)]
        targets = [self.target_train, *(d.train for d in self.extra_domains if not d.labelled)]
        return sources, targets

    @property
    def n_domains(self) -> int:
        return 2 + len(self.extra_domains)


def check_split(split: Split, n_classes: int, name: str) -> None:
    """Reject what would silently poison training: length mismatch, empty data, NaN/inf, bad labels."""
    if split.x.ndim < 2:
        raise DataError(f"{name}: inputs must have shape (n_samples, ...), got {tuple(split.x.shape)}")
    if len(split) == 0:
        raise DataError(f"{name}: no samples")
    if split.x.is_floating_point() and not torch.isfinite(split.x).all():
        raise DataError(f"{name}: inputs contain NaN or infinite values")
    if split.y is None:
        return
    if split.y.ndim != 1 or len(split.y) != len(split.x):
        raise DataError(f"{name}: {len(split.x)} inputs but labels of shape {tuple(split.y.shape)}")
    if split.y.dtype != torch.int64:
        raise DataError(f"{name}: labels must be int64 class indices, got {split.y.dtype}")
    low, high = int(split.y.min()), int(split.y.max())
    if low < 0 or high >= n_classes:
        raise DataError(f"{name}: labels must be in [0, {n_classes - 1}], found {low}..{high}")


def hold_out(data: DomainData, source: float, target: float, seed: int, max_samples: int = 0) -> DomainData:
    """``data`` with seeded random parts of ``source_train`` and ``target_train`` moved to ``source_val`` and ``target_val``.

    ``source`` and ``target`` are the fractions held out (0: none), each capped at ``max_samples``
    (0: no cap). Model selection scores these splits, never the test splits; training no longer
    sees them. The target part keeps its labels only for evaluation; validators never read them.
    """
    generator = torch.Generator().manual_seed(seed)
    parts = {}
    for name, fraction in (("source", source), ("target", target)):
        split = getattr(data, f"{name}_train")
        count = int(round(fraction * len(split)))
        count = min(count, max_samples) if max_samples else count
        if count == 0:
            parts[f"{name}_train"], parts[f"{name}_val"] = split, None
            continue
        if count >= len(split):
            raise DataError(f"holding out {count} of {len(split)} {name} training samples leaves none to train on")
        order = torch.randperm(len(split), generator=generator)
        keep, held = order[count:].sort().values, order[:count].sort().values
        parts[f"{name}_train"], parts[f"{name}_val"] = _take(split, keep), _take(split, held)
    return dataclasses.replace(data, **parts)


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.x[index], None if split.y is None else split.y[index])
