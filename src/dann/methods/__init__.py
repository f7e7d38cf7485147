"""Methods by name. Adding a method: one module with a :class:`Method` subclass, one line in ``MODES``."""

from __future__ import annotations

from dataclasses import dataclass

from dann.errors import ConfigError
from dann.methods.adda import ADDA
from dann.methods.adversarial import DANN, DomainOnly, MeanTeacherDANN
from dann.methods.alternating import AlternatingDANN
from dann.methods.base import Method, MethodOptions, StepContext, StepLoss
from dann.methods.conditional import CDAN, CDANE
from dann.methods.supervised import SourceOnly, TargetOnly
from dann.methods.vada import VADA


@dataclass(frozen=True)
class Mode:
    """A method plus the model variant it is trained with."""

    method: type[Method]
    description: str
    deep_domain_classifier: bool = False


MODES: dict[str, Mode] = {
    "source_only": Mode(SourceOnly, "label loss on labelled source only (no adaptation)"),
    "dann": Mode(DANN, "label loss + domain loss through the gradient reversal layer"),
    "domain_only": Mode(DomainOnly, "domain loss only, reversal off: features separate the domains"),
    "dann_deep": Mode(DANN, "dann with the deeper domain classifier", deep_domain_classifier=True),
    "target_only": Mode(TargetOnly, "ORACLE: label loss on labelled target (reads target labels)"),
    "dann_alternating": Mode(AlternatingDANN, "dann as a GAN: discriminator and generator steps, no reversal"),
    "adda": Mode(ADDA, "source pre-training, then a target encoder copy adapted against a discriminator"),
    "cdan": Mode(CDAN, "dann whose discriminator sees features x class probabilities", deep_domain_classifier=True),
    "cdan_e": Mode(CDANE, "cdan, domain loss weighted by 1 + exp(-entropy)", deep_domain_classifier=True),
    "vada": Mode(VADA, "dann + target entropy + virtual adversarial training"),
    "dann_teacher": Mode(MeanTeacherDANN, "dann + self-training on confident target pseudo-labels of a mean teacher"),
}


def get_mode(name: str) -> Mode:
    """The mode called ``name``, or a ConfigError listing the modes that exist."""
    try:
        return MODES[name]
    except KeyError:
        raise ConfigError(f"unknown mode {name!r}; choose from {', '.join(MODES)}") from None


__all__ = ["MODES", "Method", "MethodOptions", "Mode", "StepContext", "StepLoss", "get_mode"]
