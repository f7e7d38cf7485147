"""Model selection without target labels: validators that score held-out outputs, and scikit-learn scorers.

Sits low in the layer order: it imports torch, numpy, scikit-learn and :mod:`dann.errors` only,
so the training loop, the experiments and the estimator can all use it.
"""

from dann.select.density_ratio import importance_weights
from dann.select.outputs import LabelledOutputs, Outputs
from dann.select.scorer import make_scorer
from dann.select.validators import (
    VALIDATORS,
    BatchNuclearNorm,
    ClassAMI,
    DeepEmbeddedValidation,
    Entropy,
    InformationMaximisation,
    MixVal,
    NormalisedDeepEmbeddedValidation,
    Predict,
    SoftNeighbourhoodDensity,
    SourceAccuracy,
    Validator,
    get_validator,
)

__all__ = [
    "VALIDATORS",
    "BatchNuclearNorm",
    "ClassAMI",
    "DeepEmbeddedValidation",
    "Entropy",
    "InformationMaximisation",
    "LabelledOutputs",
    "MixVal",
    "NormalisedDeepEmbeddedValidation",
    "Outputs",
    "Predict",
    "SoftNeighbourhoodDensity",
    "SourceAccuracy",
    "Validator",
    "get_validator",
    "importance_weights",
    "make_scorer",
]
