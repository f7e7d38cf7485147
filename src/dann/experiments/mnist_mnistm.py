"""MNIST -> MNIST-M: the paper's digit benchmark, on the paper's network, in minutes on a CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from dann.data.augment import Compose, RandomChannelJitter, RandomInvert, RandomTranslate
from dann.data.domains import DomainData, ExtraDomain, Split, identity
from dann.data.folders import write_example_folders
from dann.data.mnist import load_mnist
from dann.data.mnistm import load_mnistm
from dann.errors import ConfigError
from dann.experiments.base import Experiment, StudyConfig, register_experiment
from dann.methods import MethodConfig
from dann.models.registry import ModelConfig
from dann.plots.figures import image_grid
from dann.train.loop import TrainConfig


@dataclass
class MnistDataConfig:
    """Which images: subsets for quick runs, and the seed that names one MNIST-M."""

    train_limit: int = 0  # training images per domain, a seeded random subset (0: all 60,000)
    test_limit: int = 0  # test images per domain (0: all 10,000)
    mnistm_seed: int = 0
    # > 0: one more unlabelled training domain, MNIST and MNIST-M blended this fraction of the way
    # from the source to the target (the weight on MNIST-M in mnist-mnistm, on MNIST in mnistm-mnist)
    intermediate: float = 0.0
    # channel_mean: the paper's (x - training pixel mean) / 255; per_image: each image standardised
    # to mean 0, std 1 over its pixels and channels (NOT the paper's; see the README)
    # polarity: each channel standardised and signed so strokes are bright (NOT the paper's)
    normalise: Literal["channel_mean", "per_image", "polarity"] = "per_image"
    # invert: each training image (both domains) negated with probability 1/2; colour: shifted up to
    # 2 pixels and each channel's polarity, contrast and level drawn at random (NOT the paper's)
    augment: Literal["none", "invert", "colour"] = "invert"

    def __post_init__(self) -> None:
        if self.train_limit < 0 or self.test_limit < 0:
            raise ConfigError("data.train_limit and data.test_limit must be >= 0 (0: all images)")
        if self.mnistm_seed < 0:
            raise ConfigError(f"data.mnistm_seed must be 0 or more, got {self.mnistm_seed}")
        if not 0.0 <= self.intermediate < 1.0:
            raise ConfigError(f"data.intermediate must be in [0, 1) (0: no intermediate domain), got {self.intermediate}")


def tuned_training(batch_size: int) -> TrainConfig:
    """The training settings tuned on MNIST -> MNIST-M, for the paper's CNN on small images.

    Adam's beta1 (``momentum``) 0.5, as in GAN training: steadier than 0.9 in the minimax game;
    evaluated and finished with a moving average of the weights, which smooths it further.
    """
    return TrainConfig(
        steps=2000, batch_size=batch_size, optimizer="adam", lr=0.001, momentum=0.5, ema_decay=0.995,
        eval_every=500, log_every=50, progress_bar=True,
    )


@dataclass
class MnistStudyConfig(StudyConfig):
    modes: list[str] = field(default_factory=lambda: ["source_only", "dann", "dann_deep", "target_only"])
    data: MnistDataConfig = field(default_factory=MnistDataConfig)
    # the paper's CNN and its MNIST domain heads (the 100-unit one, and the paper's larger one);
    # NHWC activations: faster oneDNN convolutions on CPU
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(network="lenet", domain_hidden=[100], deep_domain_hidden=[1024, 1024], channels_last=True)
    )
    train: TrainConfig = field(default_factory=lambda: tuned_training(batch_size=128))
    # label smoothing 0.1 (NOT the paper's): a less over-confident source classifier transfers better
    method: MethodConfig = field(default_factory=lambda: MethodConfig(label_smoothing=0.1))
    probe_samples: int = 2000
    # two modes at once, one thread each: 1.1x-1.45x the GFLOP/s of one two-thread job on this
    # CPU's small convolutions, the more the busier the machine
    jobs: int = 2


class ChannelMean:
    """uint8 NCHW batch -> float32 ``(x - mean) / 255``, optionally in channels_last layout.

    Runs per batch so the data set stays uint8 (4x smaller than float32) in memory.
    """

    def __init__(self, mean: torch.Tensor, channels_last: bool) -> None:
        self.mean = mean.reshape(1, -1, 1, 1).float()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) * (1 / 255)).contiguous(memory_format=self.memory_format)


class PerImage:
    """uint8 NCHW batch -> float32, each image shifted and scaled to mean 0 and std (about) 1.

    Removes each image's brightness and contrast before the network sees it: an MNIST-M digit
    is the inverted photo crop, so its overall level says more about the photo than the digit.
    """

    def __init__(self, channels_last: bool) -> None:
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        std, mean = torch.std_mean(x, dim=(1, 2, 3), keepdim=True)
        # +1 grey level (std is ~60-100 for real images) keeps a blank image finite
        return ((x - mean) / (std + 1.0)).contiguous(memory_format=self.memory_format)


class ChannelPolarity:
    """uint8 NCHW batch -> float32, each channel of each image standardised, then signed so its skew is positive.

    Strokes are the rare extreme pixels of a digit image, so in a channel where they are darker
    than the background the pixel distribution skews negative; flipping that channel's sign
    makes strokes bright on dark in every channel. An MNIST-M digit ``|photo - digit|`` is
    darker than its background in the channels where the photo is bright, lighter where it is
    dark; after this both domains show bright strokes. Reads only each image's own pixels, no labels.
    """

    def __init__(self, channels_last: bool) -> None:
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True)
        z = (x - mean) / (std + 1.0)  # +1 grey level keeps a blank channel finite
        sign = torch.where(z.pow(3).mean(dim=(2, 3), keepdim=True) < 0, -1.0, 1.0)
        return (z * sign).contiguous(memory_format=self.memory_format)


def channel_mean(*images: torch.Tensor) -> torch.Tensor:
    """Per-channel pixel mean (0..255) over all the given uint8 NCHW tensors together."""
    total = sum(x.sum(dim=(0, 2, 3), dtype=torch.float64) for x in images)
    count = sum(x.numel() // x.shape[1] for x in images)
    return total / count


def subset(images: np.ndarray, labels: np.ndarray, limit: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of ``limit`` images, in their order (all of them when ``limit`` is 0 or not smaller)."""
    if 0 < limit < len(images):
        keep = np.sort(rng.choice(len(images), limit, replace=False))
        images, labels = images[keep], labels[keep]
    return images, labels


def _split(images: np.ndarray, labels: np.ndarray, limit: int, rng: np.random.Generator) -> Split:
    """uint8 NCHW images (grey MNIST replicated to 3 channels, without copying), a random subset."""
    images, labels = subset(images, labels, limit, rng)
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    return Split(x, torch.from_numpy(labels))


def blend(digits: np.ndarray, coloured: np.ndarray, weight: float) -> np.ndarray:
    """Images between the domains: ``(1 - weight) * MNIST + weight * MNIST-M``, uint8 NHWC.

    Image ``i`` of MNIST-M was made from digit ``i``, so each digit is blended with its own image.
    """
    mixed = (1 - weight) * digits[..., None].astype(np.float32) + weight * coloured.astype(np.float32)
    return np.rint(mixed).astype(np.uint8)


#: the two data sets by name: how each is shown, and how a split of it is read
TITLES = {"mnist": "MNIST", "mnistm": "MNIST-M"}


@register_experiment("mnist-mnistm")
class MnistToMnistM(Experiment):
    description = "MNIST (source) -> MNIST-M (target), the paper's CNN (needs MNIST + BSDS500 in the data dir)"
    config_cls = MnistStudyConfig
    embedding = "tsne"
    embedding_samples = 1000  # 2 x 1000 points: ~15 s of t-SNE per mode
    #: the labelled source and the unlabelled target
    domains: ClassVar[tuple[str, str]] = ("mnist", "mnistm")

    def load_data(self, cfg: MnistStudyConfig, data_dir: str | None) -> DomainData:
        rng = np.random.default_rng(cfg.seed)
        read = {"mnist": lambda split: load_mnist(split, data_dir), "mnistm": lambda split: load_mnistm(split, data_dir, seed=cfg.data.mnistm_seed)}
        splits, raw = {}, {}
        for split, limit in (("train", cfg.data.train_limit), ("test", cfg.data.test_limit)):
            for role, name in zip(("source", "target"), self.domains):
                raw[f"{name}_{split}"] = read[name](split)
                splits[f"{role}_{split}"] = _split(*raw[f"{name}_{split}"], limit, rng)
        extra = []
        if cfg.data.intermediate:  # drawn last, so the four main splits do not depend on it
            (digits, labels), (coloured, _) = raw["mnist_train"], raw["mnistm_train"]
            weight = cfg.data.intermediate if self.domains[1] == "mnistm" else 1 - cfg.data.intermediate
            between = blend(digits, coloured, weight)
            extra.append(ExtraDomain("intermediate", _split(between, labels, cfg.data.train_limit, rng)))
        prepare, augment = self.input_transforms(cfg, splits["source_train"].x, splits["target_train"].x)
        return DomainData(**splits, n_classes=10, prepare=prepare, augment=augment, extra_domains=extra)

    def input_transforms(
        self, cfg: MnistStudyConfig, source_x: torch.Tensor, target_x: torch.Tensor
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        """``data.normalise`` (channel_mean from the training images of both domains) and ``data.augment``."""
        if cfg.data.normalise == "per_image":
            prepare = PerImage(cfg.model.channels_last)
        elif cfg.data.normalise == "polarity":
            prepare = ChannelPolarity(cfg.model.channels_last)
        else:
            prepare = ChannelMean(channel_mean(source_x, target_x), cfg.model.channels_last)
        augment = {"none": identity, "invert": RandomInvert(0.5), "colour": Compose(RandomTranslate(2), RandomChannelJitter())}
        return prepare, augment[cfg.data.augment]

    def plot_data(self, data: DomainData, plots_dir: Path) -> None:
        n = 12
        source, target = (TITLES[name] for name in self.domains)
        rows = [
            (f"{source} (source)", data.source_train.x[:n].permute(0, 2, 3, 1).numpy()),
            (f"{target} (target)", data.target_train.x[:n].permute(0, 2, 3, 1).numpy()),
        ]
        rows += [(f"{d.name} (unlabelled)", d.train.x[:n].permute(0, 2, 3, 1).numpy()) for d in data.extra_domains]
        image_grid(rows, plots_dir / "samples.png")


def write_mnist_folders(
    out_dir: str | Path, data_dir: str | None = None, train_limit: int = 0, test_limit: int = 0, seed: int = 0, mnistm_seed: int = 0
) -> dict[str, Path]:
    """MNIST -> MNIST-M as the image folders a user would bring (:func:`~dann.data.folders.write_example_folders`):
    ``source/<digit>/`` (MNIST train), ``target/`` (MNIST-M train, unlabelled) and ``target_test/<digit>/``
    (MNIST-M test), with the very images ``dann run mnist-mnistm`` trains on for the same limits and
    seed, so ``dann run folders`` on them can be checked against it.
    """
    rng = np.random.default_rng(seed)
    chosen = {}
    for split, most in (("train", train_limit), ("test", test_limit)):  # the order load_data draws in
        chosen[f"source_{split}"] = subset(*load_mnist(split, data_dir), most, rng)
        chosen[f"target_{split}"] = subset(*load_mnistm(split, data_dir, seed=mnistm_seed), most, rng)
    return write_example_folders(
        out_dir, *chosen["source_train"], *chosen["target_train"], *chosen["target_test"], [str(d) for d in range(10)]
    )


@register_experiment("mnistm-mnist")
class MnistMToMnist(MnistToMnistM):
    """The reverse shift: colour MNIST-M labelled, grey MNIST (replicated to 3 channels) unlabelled.

    Same network, settings and data options as ``mnist-mnistm``; only the roles swap. Useful to
    see negative transfer: MNIST-M's digits already vary in colour and texture, so a source-only
    model reads MNIST well and adaptation has little to gain and something to lose.
    """

    description = "MNIST-M (source) -> MNIST (target): the reverse shift, same CNN and settings"
    domains = ("mnistm", "mnist")
