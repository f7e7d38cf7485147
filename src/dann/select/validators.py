"""Label-free validators: scores that rank trained models without target labels; higher is better.

Each validator reads a model's outputs on held-out splits (:class:`~dann.select.outputs.Outputs`),
names the splits it needs in ``splits``, and never sees target labels: its entry point refuses a
target split that carries them and passes on a copy holding only logits, features and inputs.
Options are dataclass fields; ``get_validator(name, **options)`` builds one from the registry.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score

from dann.errors import ConfigError, DataError
from dann.select.density_ratio import importance_weights
from dann.select.outputs import LabelledOutputs, Outputs

SOURCE_VAL = "source_val"
TARGET_VAL = "target_val"

#: ``predict(x) -> logits``: the model itself, for a validator that probes it with new inputs (MixVal)
Predict = Callable[[torch.Tensor], torch.Tensor]


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax in float64 on the CPU, detached: validators only read."""
    return F.softmax(logits.detach().cpu().double(), dim=1)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """``H(p) = -sum_k p_k log p_k`` of each row, with ``0 log 0 = 0``."""
    return -torch.special.xlogy(p, p).sum(-1)


def _sample_rows(x: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """At most ``limit`` rows of ``x``, drawn without replacement with a seeded generator."""
    if len(x) <= limit:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]]


@dataclass(frozen=True)
class Validator(ABC):
    """A model-selection score from held-out outputs.

    ``splits`` is the subset of ``{"source_val", "target_val"}`` the score reads; a split it does
    not name is not passed on. ``source_val`` must be :class:`LabelledOutputs`; ``target_val`` must
    be a plain :class:`Outputs`, and passing labelled target outputs raises :class:`DataError`.
    """

    name: ClassVar[str]
    splits: ClassVar[frozenset[str]]
    needs_features: ClassVar[bool] = False
    needs_predict: ClassVar[bool] = False

    def __call__(
        self,
        source_val: LabelledOutputs | None = None,
        target_val: Outputs | None = None,
        predict: Predict | None = None,
    ) -> float:
        """The score of the model that produced these outputs (``predict`` only for MixVal)."""
        if isinstance(target_val, LabelledOutputs):
            raise DataError(f"{self.name}: target_val carries labels; pass the target split as Outputs, which has none")
        source = target = None
        if SOURCE_VAL in self.splits:
            if not isinstance(source_val, LabelledOutputs):
                raise DataError(f"{self.name} needs source_val as LabelledOutputs (source logits and labels)")
            source = source_val
        if TARGET_VAL in self.splits:
            if target_val is None:
                raise DataError(f"{self.name} needs target_val outputs")
            target = Outputs(target_val.logits, target_val.features, target_val.inputs)  # drops anything else
        for split, outputs in ((SOURCE_VAL, source), (TARGET_VAL, target)):
            if self.needs_features and outputs is not None and outputs.features is None:
                raise DataError(f"{self.name} needs {split}.features, the features the classifier reads")
        if source is not None and target is not None and source.n_classes != target.n_classes:
            raise DataError(f"{self.name}: source_val has {source.n_classes} classes, target_val {target.n_classes}")
        if self.needs_predict and predict is None:
            raise DataError(f"{self.name} needs predict, the model as a function from inputs to logits")
        with torch.no_grad():
            return float(self._score(source, target, predict))

    @abstractmethod
    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        """The score proper, on the splits named in ``splits`` (the others are ``None``)."""


@dataclass(frozen=True)
class SourceAccuracy(Validator):
    """Accuracy on the labelled source validation split: ``mean_i [argmax_k z_ik = y_i]``.

    The baseline every UDA paper starts from; blind to the shift, but often hard to beat
    (Musgrave et al., 2023, "Three New Validators and a Large-Scale Benchmark Ranking for UDA").
    """

    name: ClassVar[str] = "source_acc"
    splits: ClassVar[frozenset[str]] = frozenset({SOURCE_VAL})

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        return float((source.logits.detach().cpu().argmax(1) == source.labels.cpu()).double().mean())


@dataclass(frozen=True)
class Entropy(Validator):
    """Negative mean prediction entropy on target, ``-(1/N) sum_i H(p_i)``: confident models score higher.

    Entropy minimisation as a selection criterion (Morerio et al., ICLR 2018, "Minimal-entropy
    correlation alignment"). Rewards collapse onto one class as much as real confidence.
    """

    name: ClassVar[str] = "entropy"
    splits: ClassVar[frozenset[str]] = frozenset({TARGET_VAL})

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        return float(-_entropy(_probabilities(target.logits)).mean())


@dataclass(frozen=True)
class InformationMaximisation(Validator):
    """Information maximisation on target, ``H((1/N) sum_i p_i) - (1/N) sum_i H(p_i)``, in ``[0, log C]``.

    The mutual information between inputs and predicted classes (Gomes, Krause & Perona,
    NeurIPS 2010; as a loss, SHOT, Liang et al., ICML 2020): confident *and* balanced, so unlike
    entropy it penalises collapse onto one class.
    """

    name: ClassVar[str] = "im"
    splits: ClassVar[frozenset[str]] = frozenset({TARGET_VAL})

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        p = _probabilities(target.logits)
        return float(_entropy(p.mean(0)) - _entropy(p).mean())


@dataclass(frozen=True)
class BatchNuclearNorm(Validator):
    """Batch nuclear-norm maximisation, ``||P||_* / N`` of the ``(N, C)`` target softmax matrix ``P``.

    Cui et al., CVPR 2020, "Towards discriminability and diversity: batch nuclear-norm
    maximization under label insufficient situations": the nuclear norm grows with confidence
    (Frobenius norm) and with the number of classes used (rank). Computed on the whole split
    at once, not in batches; it then falls with ``N`` (at best ``sqrt(C / N)``), so compare
    models on the same split only.
    """

    name: ClassVar[str] = "bnm"
    splits: ClassVar[frozenset[str]] = frozenset({TARGET_VAL})

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        p = _probabilities(target.logits)
        return float(torch.linalg.svdvals(p).sum() / len(p))


@dataclass(frozen=True)
class SoftNeighbourhoodDensity(Validator):
    """Soft neighbourhood density: how densely target predictions cluster; higher is better.

    Saito et al., ICCV 2021, "Tune it the right way: unsupervised validation of domain adaptation
    via soft neighborhood density". With ``f_i`` the L2-normalised softmax output of sample ``i``
    (the paper's embedding), ``M_ij = f_i . f_j`` for ``j != i`` (self removed),
    ``P_ij = softmax_j(M_ij / temperature)`` and ``SND = (1/N) sum_i H(P_i)``. At most
    ``max_samples`` target rows are used, drawn with ``seed``, so memory stays ``O(max_samples^2)``.
    It reads the outputs only: confident, balanced predictions score near ``log(N / C - 1)``
    whether or not they follow the data; scattered, half-sure ones score lower.
    """

    name: ClassVar[str] = "snd"
    splits: ClassVar[frozenset[str]] = frozenset({TARGET_VAL})
    temperature: float = 0.05
    max_samples: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.max_samples < 2:
            raise ConfigError("snd needs temperature > 0 and max_samples >= 2")

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        if len(target) < 2:
            raise DataError("snd needs at least 2 target samples: each needs a neighbour")
        f = F.normalize(_sample_rows(_probabilities(target.logits), self.max_samples, self.seed), dim=1)
        similarity = f @ f.T / self.temperature
        self_pairs = torch.eye(len(f), dtype=torch.bool)
        log_p = similarity.masked_fill(self_pairs, -math.inf).log_softmax(1)
        return float(-(log_p.exp() * log_p.masked_fill(self_pairs, 0.0)).sum(1).mean())


def _control_variate_risk(weights: np.ndarray, losses: np.ndarray) -> float:
    """``mean(w l) + eta mean(w) - eta`` with ``eta = -Cov(w l, w) / Var(w)`` (0 when the weights are constant)."""
    weighted = weights * losses
    variance = weights.var(ddof=1)
    eta = 0.0 if variance == 0 else -np.cov(weighted, weights)[0, 1] / variance
    return float(weighted.mean() + eta * weights.mean() - eta)


@dataclass(frozen=True)
class DeepEmbeddedValidation(Validator):
    """Deep embedded validation: the negative importance-weighted source risk, with a control variate.

    You et al., ICML 2019, "Towards accurate model selection in deep unsupervised domain
    adaptation". ``w_i = p_t(x_i) / p_s(x_i)`` on source validation features, from a domain
    classifier on source-val vs target-val features (:func:`~dann.select.density_ratio.importance_weights`:
    logistic regression, cross-fitted over ``folds`` seeded folds); ``l_i`` is the cross-entropy
    of source sample ``i``; ``L_DEV = mean(w l) + eta mean(w) - eta``, ``eta = -Cov(w l, w) / Var(w)``.
    Returns ``-L_DEV``. The paper fits the domain classifier on training features and weights
    validation samples; here both are held-out, which cross-fitting keeps honest.
    """

    name: ClassVar[str] = "dev"
    splits: ClassVar[frozenset[str]] = frozenset({SOURCE_VAL, TARGET_VAL})
    needs_features: ClassVar[bool] = True
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"{self.name} needs folds >= 2 for cross-fitting, got {self.folds}")

    def _weights(self, source: LabelledOutputs, target: Outputs) -> np.ndarray:
        if source.features.shape[1] != target.features.shape[1]:
            raise DataError(f"{self.name}: source and target features differ in width")
        return importance_weights(source.features, target.features, self.folds, self.seed).numpy()

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        losses = F.cross_entropy(source.logits.detach().cpu().double(), source.labels.cpu(), reduction="none")
        return -_control_variate_risk(self._weights(source, target), losses.numpy())


@dataclass(frozen=True)
class NormalisedDeepEmbeddedValidation(DeepEmbeddedValidation):
    """DEVN: DEV with max-normalised importance weights, ``w <- w / max_i w_i``, so ``w`` lies in ``(0, 1]``.

    Musgrave, Belongie & Lim, 2023, "Three new validators and a large-scale benchmark ranking for
    unsupervised domain adaptation": a few huge weights dominate DEV's estimate, so they are
    divided by the largest before the same control-variate risk. The paper's normalisation is
    this division by the maximum (its benchmark labels DEVN "max-normalized"), not a min-max
    rescaling. The weights no longer average 1, so ``-L_DEVN`` ranks models rather than estimating a risk.
    """

    name: ClassVar[str] = "devn"

    def _weights(self, source: LabelledOutputs, target: Outputs) -> np.ndarray:
        weights = super()._weights(source, target)
        return weights / weights.max()


@dataclass(frozen=True)
class ClassAMI(Validator):
    """Adjusted mutual information between k-means clusters of target features and predicted classes.

    Musgrave, Belongie & Lim, 2023 ("Three new validators..."): k-means with ``k = C`` on the
    target features (seeded, 3 initialisations), then ``AMI(clusters, argmax_k z_ik)``
    (Vinh et al., JMLR 2010; arithmetic-mean normalisation). High when the classifier's
    decisions follow the cluster structure of the features it reads.
    """

    name: ClassVar[str] = "class_ami"
    splits: ClassVar[frozenset[str]] = frozenset({TARGET_VAL})
    needs_features: ClassVar[bool] = True
    seed: int = 0

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        if len(target) < target.n_classes:
            raise DataError(f"class_ami needs at least {target.n_classes} target samples (one per cluster)")
        features = target.features.detach().cpu().double().numpy()
        clusters = KMeans(target.n_classes, n_init=3, random_state=self.seed).fit_predict(features)
        return float(adjusted_mutual_info_score(target.logits.detach().cpu().argmax(1).numpy(), clusters))


def _partners(pseudo: torch.Tensor, same: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(anchors, partners)``: each sample with a random other sample of the same (``same``) or a
    different pseudo-label, drawn uniformly; samples with no such partner are left out."""
    n = len(pseudo)
    order = torch.argsort(pseudo, stable=True)  # samples grouped by pseudo-label
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)  # where each sample sits in ``order``
    counts = torch.bincount(pseudo)
    starts = torch.cumsum(counts, 0) - counts
    own_count, own_start = counts[pseudo], starts[pseudo]
    if same:
        anchors = (own_count >= 2).nonzero().squeeze(1)
        k = own_count[anchors]
        offset = 1 + (torch.rand(len(anchors), generator=generator, dtype=torch.float64) * (k - 1)).long()
        position = own_start[anchors] + (rank[anchors] - own_start[anchors] + offset) % k
    else:
        anchors = (own_count < n).nonzero().squeeze(1)
        others = n - own_count[anchors]
        r = (torch.rand(len(anchors), generator=generator, dtype=torch.float64) * others).long()
        position = torch.where(r < own_start[anchors], r, r + own_count[anchors])  # skip the own block
    return anchors, order[position]


@dataclass(frozen=True)
class MixVal(Validator):
    """MixVal: how often the model keeps the dominant sample's pseudo-label on mixed target inputs.

    Hu et al., NeurIPS 2023, "Mixed samples as probes for unsupervised model selection in domain
    adaptation". Pseudo-labels are ``y_i = argmax target_val.logits``; a probe is
    ``x = lam x_i + (1 - lam) x_j`` with fixed ``lam = 0.55`` > 1/2, so ``x_i`` dominates, and
    ``ICE = mean [argmax predict(x) = y_i]``. Intra-cluster probes pair ``i`` with a random ``j``
    of the same pseudo-label (neighbourhood density, like SND); inter-cluster probes with a random
    ``j`` of another (the decision boundary, like entropy). Needs ``target_val.inputs`` and
    ``predict``. At most ``max_pairs`` anchors per kind are drawn with ``seed``.

    Differences from the paper: it pairs samples within batches (reversed order; sorted by
    pseudo-label for intra) where this draws partners explicitly, and it combines the two
    probes by averaging each candidate's *ranks* across all candidates. Ranks need every
    candidate at once, so ``part="both"`` returns the mean of the two accuracies; rank-combine
    ``part="intra"`` and ``part="inter"`` scores yourself for the paper's rule. A kind with no
    possible pair (one predicted class has no inter pairs) scores 0.
    """

    name: ClassVar[str] = "mixval"
    splits: ClassVar[frozenset[str]] = frozenset({TARGET_VAL})
    needs_predict: ClassVar[bool] = True
    lam: float = 0.55
    part: Literal["both", "intra", "inter"] = "both"
    max_pairs: int = 2048
    batch_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.5 < self.lam < 1:
            raise ConfigError(f"mixval needs 0.5 < lam < 1 so one sample dominates, got {self.lam}")
        if self.part not in ("both", "intra", "inter"):
            raise ConfigError(f"mixval part must be 'both', 'intra' or 'inter', got {self.part!r}")
        if self.max_pairs < 1 or self.batch_size < 1:
            raise ConfigError("mixval needs max_pairs >= 1 and batch_size >= 1")

    def _score(self, source: LabelledOutputs | None, target: Outputs | None, predict: Predict | None) -> float:
        if target.inputs is None:
            raise DataError("mixval needs target_val.inputs, the samples behind the target logits")
        pseudo = target.logits.detach().cpu().argmax(1)
        generator = torch.Generator().manual_seed(self.seed)
        kinds = {"both": (True, False), "intra": (True,), "inter": (False,)}[self.part]
        scores = [
            self._accuracy(target.inputs, pseudo, *_partners(pseudo, same, generator), predict, generator)
            for same in kinds
        ]
        return sum(scores) / len(scores)

    def _accuracy(
        self,
        x: torch.Tensor,
        pseudo: torch.Tensor,
        anchors: torch.Tensor,
        partners: torch.Tensor,
        predict: Predict,
        generator: torch.Generator,
    ) -> float:
        """Share of probes ``lam x_a + (1 - lam) x_b`` predicted as ``pseudo[a]``."""
        if len(anchors) == 0:
            return 0.0
        keep = torch.randperm(len(anchors), generator=generator)[: self.max_pairs]
        anchors, partners = anchors[keep], partners[keep]
        hits = 0
        for start in range(0, len(anchors), self.batch_size):
            a, b = anchors[start : start + self.batch_size], partners[start : start + self.batch_size]
            mixed = self.lam * x[a] + (1 - self.lam) * x[b]
            hits += int((predict(mixed).detach().cpu().argmax(1) == pseudo[a]).sum())
        return hits / len(anchors)


VALIDATORS: dict[str, type[Validator]] = {
    cls.name: cls
    for cls in (
        SourceAccuracy,
        Entropy,
        InformationMaximisation,
        BatchNuclearNorm,
        SoftNeighbourhoodDensity,
        DeepEmbeddedValidation,
        NormalisedDeepEmbeddedValidation,
        ClassAMI,
        MixVal,
    )
}


def get_validator(name: str, **options: Any) -> Validator:
    """The registered validator ``name`` with ``options`` (its dataclass fields, e.g. ``seed``)."""
    if name not in VALIDATORS:
        raise ConfigError(f"unknown validator {name!r}; known: {', '.join(VALIDATORS)}")
    cls = VALIDATORS[name]
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"validator {name!r} has no option {unknown[0]!r}; its options: {', '.join(known) or 'none'}")
    return cls(**options)
