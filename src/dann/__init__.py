"""dann: domain-adversarial training in PyTorch."""

from dann.models.grl import GradientReversal, grad_reverse
from dann.models.network import DomainAdversarialNet
from dann.train.schedules import annealed_lr, dann_lambda

__version__ = "0.1.0"

__all__ = ["DomainAdversarialNet", "GradientReversal", "annealed_lr", "dann_lambda", "grad_reverse"]
