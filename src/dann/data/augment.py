"""Random transforms of prepared training batches (never of evaluation data)."""

from __future__ import annotations

import torch


class RandomInvert:
    """Negate each prepared image with probability ``p``: light-on-dark becomes dark-on-light.

    On zero-mean images (``per_image`` normalisation) negation is exact intensity inversion. An
    MNIST digit is always light on dark, while an MNIST-M digit, ``|photo - digit|``, is lighter
    or darker than its background depending on the photo: inverting teaches the network that
    polarity carries no class information. Uses the global torch RNG, which checkpoints save,
    so a resumed run draws the same flips.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"inversion probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(len(x), device=x.device) < self.p
        sign = 1.0 - 2.0 * flip.to(x.dtype)
        return x * sign.view(-1, *([1] * (x.dim() - 1)))
