"""The random training transforms: what each may do to an image, and nothing more."""

import pytest
import torch
import torch.nn.functional as F

from dann.data.augment import Compose, RandomChannelJitter, RandomInvert, RandomTranslate


def _images(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, 28, 28, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)


def test_translation_is_a_whole_pixel_shift_within_range_with_zero_fill():
    x = _images()
    torch.manual_seed(0)
    shifted = RandomTranslate(2)(x)
    assert shifted.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if torch.equal(shifted[i], padded[i, :, dy : dy + 28, dx : dx + 28])
        ]
        assert len(matches) == 1, f"image {i} is not one shift of the input"
        seen.add(matches[0])
    assert len(seen) > 5  # the shifts vary between images
    assert torch.equal(RandomTranslate(0)(x), x)


def test_channel_jitter_is_a_per_channel_affine_map_within_its_ranges():
    x = _images()
    torch.manual_seed(0)
    y = RandomChannelJitter(gain=0.5, offset=0.5)(x)
    # recover y = a x + b per image and channel from two pixels, then check every pixel obeys it
    x_flat, y_flat = x.flatten(2), y.flatten(2)
    a = (y_flat[..., 1] - y_flat[..., 0]) / (x_flat[..., 1] - x_flat[..., 0])
    b = y_flat[..., 0] - a * x_flat[..., 0]
    assert torch.allclose(y_flat, a[..., None] * x_flat + b[..., None], atol=1e-4)
    assert ((a.abs() >= 0.5 - 1e-4) & (a.abs() <= 1.5 + 1e-4)).all() and (b.abs() <= 0.5 + 1e-4).all()
    # polarity is drawn per channel: some images have channels of both signs
    mixed = (a > 0).any(1) & (a < 0).any(1)
    assert 0 < int(mixed.sum()) < len(x)


def test_transforms_refuse_bad_settings():
    for make in (lambda: RandomInvert(1.5), lambda: RandomChannelJitter(gain=1.0), lambda: RandomChannelJitter(offset=-1),
                 lambda: RandomTranslate(-1)):
        with pytest.raises(ValueError):
            make()


def test_compose_applies_in_order():
    x = torch.ones(2, 1, 2, 2)
    assert torch.equal(Compose(lambda t: t + 1, lambda t: t * 3)(x), torch.full_like(x, 6.0))
