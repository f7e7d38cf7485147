"""dann: domain-adversarial training in PyTorch.

The public API: train with :func:`fit` on :class:`DomainData`; extend dann with
:func:`register_method`, :func:`register_network` and :func:`register_experiment`.
"""

from dann.data.domains import DomainData, Split
from dann.experiments import register_experiment
from dann.fit import Fitted, fit
from dann.methods import Method, MethodConfig, StepContext, StepLoss, register_method
from dann.models.grl import GradientReversal, grad_reverse
from dann.models.network import DomainAdversarialNet
from dann.models.registry import ModelConfig, NetworkRequest, register_network
from dann.train.callbacks import Callback
from dann.train.loop import TrainConfig
from dann.train.schedules import annealed_lr, dann_lambda

__version__ = "0.1.0"

__all__ = [
    "Callback", "DomainAdversarialNet", "DomainData", "Fitted", "GradientReversal", "Method", "MethodConfig",
    "ModelConfig", "NetworkRequest", "Split", "StepContext", "StepLoss", "TrainConfig", "annealed_lr",
    "dann_lambda", "fit", "grad_reverse", "register_experiment", "register_method", "register_network",
]
