"""Random transforms of prepared training batches (never of evaluation data)."""

from __future__ import annotations

from collections.abc import Callable

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


class RandomChannelJitter:
    """Per image and channel, ``x_c -> s_c * g_c * x_c + b_c``: random polarity, contrast and level.

    ``s_c`` is -1 with probability 1/2, ``g_c ~ U(1 - gain, 1 + gain)``, ``b_c ~ U(-offset, offset)``,
    all drawn independently per channel, so grey digits come out in random colours on random
    backgrounds. That is the nuisance an MNIST-M digit carries: ``|photo - digit|`` is lighter
    or darker than its background in each colour channel separately, depending on the photo's
    level in that channel. On zero-mean images (``per_image``) the sign is exact inversion.
    """

    def __init__(self, gain: float = 0.5, offset: float = 0.5) -> None:
        if not 0.0 <= gain < 1.0 or offset < 0.0:
            raise ValueError(f"channel jitter needs 0 <= gain < 1 and offset >= 0, got gain={gain}, offset={offset}")
        self.gain, self.offset = gain, offset

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = (len(x), x.shape[1], 1, 1)
        sign = 1.0 - 2.0 * (torch.rand(shape, device=x.device) < 0.5).to(x.dtype)
        gain = 1.0 + self.gain * (2.0 * torch.rand(shape, device=x.device, dtype=x.dtype) - 1.0)
        offset = self.offset * (2.0 * torch.rand(shape, device=x.device, dtype=x.dtype) - 1.0)
        return torch.addcmul(offset, x, sign * gain)


class RandomTranslate:
    """Shift each image by up to ``max_shift`` whole pixels in each direction, filling with zeros.

    Zero is the mean of a ``per_image`` input, so the filled border is plain background. A digit
    is the same digit two pixels to the left; the network learns that without seeing it per class.
    """

    def __init__(self, max_shift: int = 2) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be 0 or more, got {max_shift}")
        self.max_shift = max_shift

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.max_shift
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (s, s, s, s))
        shift = torch.randint(0, 2 * s + 1, (2, n, 1), device=x.device)
        rows = (shift[0] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (shift[1] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        shifted = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols]  # (N, H, W, C)
        return shifted.permute(0, 3, 1, 2)


class Compose:
    """Apply transforms in order."""

    def __init__(self, *transforms: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.transforms = transforms

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x


class RandomFlip:
    """Mirror each image left-right with probability ``p`` (for photos; not for digits or text)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = (torch.rand(len(x), device=x.device) < self.p).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(flip, x.flip(-1), x)
