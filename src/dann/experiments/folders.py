"""Your own image domains: a labelled source folder and an unlabelled target folder (or image lists).

``dann run folders --set data.source=DIR --set data.target=DIR [--set data.target_test=DIR]``.
A folder is read as :func:`~dann.data.folders.list_image_folder` reads it: class subfolders
(``DIR/<class>/img.png``, labelled) or images directly in it (unlabelled); a *file* is an image
list, one ``path label`` per line (:func:`~dann.data.folders.list_image_list`). The source must be
labelled; a target's labels, where it has them, are read for evaluation only. Every image is
decoded once into uint8 memory (for data sets that fit in memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dann.data.augment import Compose, RandomChannelJitter, RandomFlip, RandomInvert, RandomTranslate
from dann.data.domains import DomainData, Split, identity
from dann.data.folders import ImageListing, list_image_folder, list_image_list, read_listing
from dann.data.holdout import holdout_split, limit
from dann.data.loaded import LoadedDomain, check_source
from dann.errors import ConfigError, DataError
from dann.experiments.base import Experiment, StudyConfig, register_experiment
from dann.experiments.mnist_mnistm import PerImage, tuned_training
from dann.methods import MethodConfig
from dann.models.backbones import Preprocessing, backbone_preprocessing
from dann.models.registry import ModelConfig, backbone_arch
from dann.plots.figures import image_grid
from dann.train.loop import TrainConfig

Transform = Callable[[torch.Tensor], torch.Tensor]

log = logging.getLogger(__name__)


@dataclass
class FoldersDataConfig:
    """Where the domains are and how their images become network inputs."""

    source: str = ""  # folder of class subfolders (<class>/img.png), or an image list file ('path label' per line)
    target: str = ""  # folder: images directly in it (unlabelled) or class subfolders (labels for evaluation only); or a list
    target_test: str = ""  # held-out target images, folder or list ('': hold out data.holdout of the target)
    source_test: str = ""  # held-out source images, folder or list ('': hold out data.holdout of the source)
    size: list[int] = field(default_factory=list)  # [H, W] (or [S]: square) to resize to; []: keep (all must share one size)
    channels: int = 0  # 1: grey, 3: RGB; 0: RGB if any image is in colour (always for torchvision backbones), else grey
    skip_bad_images: bool = False  # leave out unreadable files (counted in a note) instead of stopping
    # auto: imagenet for torchvision backbones, else per_image. per_image: each image to mean 0,
    # std 1 (as mnist-mnistm); imagenet: the backbone weights' mean and std (ImageNet's for lenet)
    normalise: Literal["auto", "per_image", "imagenet"] = "auto"
    # each training image, both domains: invert (negated, p=1/2; for per_image digits), flip
    # (mirrored left-right, p=1/2; photos), translate (shifted up to 1/16 of its side), colour
    # (translate + random channel polarity, contrast and level, as mnist-mnistm's)
    augment: Literal["none", "invert", "flip", "translate", "colour"] = "none"
    # without source_test / target_test: the seeded fraction of that domain held out for
    # evaluation (0: evaluate on the training images themselves, an optimistic score)
    holdout: float = 0.2
    train_limit: int = 0  # training images per domain, a seeded random subset (0: all)
    test_limit: int = 0  # held-out images per domain, a seeded random subset (0: all)

    def __post_init__(self) -> None:
        if len(self.size) not in (0, 1, 2) or any(side < 1 for side in self.size):
            raise ConfigError(f"data.size must be [H, W], [S] or [] (keep the images' size), got {self.size}")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels must be 1 (grey), 3 (RGB) or 0 (from the images), got {self.channels}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"data.holdout must be in [0, 1) (0: evaluate on the training images), got {self.holdout}")
        if self.train_limit < 0 or self.test_limit < 0:
            raise ConfigError("data.train_limit and data.test_limit must be >= 0 (0: all images)")


@dataclass
class FoldersStudyConfig(StudyConfig):
    modes: list[str] = field(default_factory=lambda: ["source_only", "dann"])
    data: FoldersDataConfig = field(default_factory=FoldersDataConfig)
    # the paper's CNN for small images; --set model.network=resnet18 (resnet34, resnet50, or
    # torchvision with model.arch) for photos, with model.weights=imagenet to start pretrained
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(network="lenet", domain_hidden=[100], deep_domain_hidden=[1024, 1024])
    )
    # the settings tuned on MNIST -> MNIST-M (Adam, beta1 0.5, a moving average of the weights)
    train: TrainConfig = field(default_factory=lambda: tuned_training(batch_size=64))
    method: MethodConfig = field(default_factory=lambda: MethodConfig(label_smoothing=0.1))
    probe_samples: int = 2000


def _channels(cfg: FoldersStudyConfig) -> int | None:
    """The channel count to decode to; None: from the images."""
    arch = backbone_arch(cfg.model)
    wants_rgb = arch is not None or cfg.data.normalise == "imagenet"
    if wants_rgb and cfg.data.channels == 1:
        why = f"network {cfg.model.network}" if arch is not None else "data.normalise=imagenet"
        raise ConfigError(f"{why} takes RGB images; set data.channels=3 (grey images are converted) or 0")
    return 3 if wants_rgb else (cfg.data.channels or None)


class Normalise:
    """uint8 NCHW batch -> float32 ``(x / 255 - mean) / std`` per channel (a backbone's :class:`Preprocessing`), in the network's memory layout."""

    def __init__(self, preprocessing: Preprocessing, channels_last: bool) -> None:
        self.preprocessing = preprocessing
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocessing(x).contiguous(memory_format=self.memory_format)


def input_transforms(cfg: FoldersStudyConfig, image_size: tuple[int, int]) -> tuple[Transform, Transform]:
    """``prepare`` (uint8 batch -> network input) and the training ``augment`` that ``cfg.data`` names."""
    arch = backbone_arch(cfg.model)
    normalise = cfg.data.normalise if cfg.data.normalise != "auto" else "imagenet" if arch is not None else "per_image"
    if normalise == "per_image":
        prepare: Transform = PerImage(cfg.model.channels_last)
    else:
        weights = getattr(cfg.model.options, "weights", None)
        stats = backbone_preprocessing(arch, weights) if arch is not None else Preprocessing()
        prepare = Normalise(stats, cfg.model.channels_last)
    shift = max(1, round(min(image_size) / 16))
    augment: Transform = {
        "none": identity,
        "invert": RandomInvert(0.5),
        "flip": RandomFlip(0.5),
        "translate": RandomTranslate(shift),
        "colour": Compose(RandomTranslate(shift), RandomChannelJitter()),
    }[cfg.data.augment]
    return prepare, augment


def list_images(path: str, key: str, classes: list[str] | None = None) -> ImageListing:
    """The images a ``data.<key>`` path names: a folder, or an image list file."""
    if not path:
        raise ConfigError(f"set data.{key}=DIR: a folder of images (class subfolders for labels) or an image list file")
    if Path(path).is_file():
        return list_image_list(path, classes=classes)
    return list_image_folder(path, classes)


def _subset(listing: ImageListing, indices: np.ndarray) -> ImageListing:
    labels = None if listing.labels is None else [listing.labels[i] for i in indices]
    return ImageListing([listing.paths[i] for i in indices], labels, listing.classes, listing.origin, listing.notes)


def _describe(domain: str, listings: dict[str, tuple[ImageListing, np.ndarray | None]], loaded: dict[str, LoadedDomain]) -> str:
    """One line on what a domain's splits hold."""
    listing = listings[f"{domain}_train"][0]
    train, test = loaded[f"{domain}_train"], loaded[f"{domain}_test"]
    labels = f"{len(listing.classes)} classes" if train.labelled else "unlabelled"
    if test is train:
        held = "evaluated on its training images (data.holdout=0)"
    elif listings[f"{domain}_test"][0] is listing:
        held = f"{len(test)} held out for evaluation"
    else:
        held = f"{len(test)} test images from {test.origin}{'' if test.labelled else ' (unlabelled)'}"
    return f"{domain} {listing.origin}: {len(train)} training images ({labels}), {held}"


@register_experiment("folders")
class Folders(Experiment):
    description = "your image folders: --set data.source=DIR (class subfolders) --set data.target=DIR (unlabelled)"
    config_cls = FoldersStudyConfig
    embedding = "pca"

    def load_data(self, cfg: FoldersStudyConfig, data_dir: str | None) -> DomainData:
        if getattr(cfg.model.options, "freeze_backbone", False) and cfg.data.augment != "none":
            raise ConfigError(
                "model.freeze_backbone=true computes each image's features once, so they cannot be augmented: "
                "set data.augment=none or model.freeze_backbone=false"
            )
        channels = _channels(cfg)
        listings = _split_listings(cfg)
        size = None if not cfg.data.size else (cfg.data.size[0], cfg.data.size[-1])
        loaded: dict[str, LoadedDomain] = {}
        for name, (listing, indices) in listings.items():
            if indices is None:  # no held-out images: evaluate on the training ones (decoded once)
                loaded[name] = loaded[name.replace("_test", "_train")]
            else:
                loaded[name] = read_listing(_subset(listing, indices), size, cfg.data.skip_bad_images, channels)
        splits = _common_layout(loaded)
        for domain in ("source", "target"):
            log.info(_describe(domain, listings, loaded))
        for note in dict.fromkeys(note for domain in loaded.values() for note in domain.notes):
            log.info(f"note: {note}")
        prepare, augment = input_transforms(cfg, tuple(splits["source_train"].x.shape[2:]))
        return DomainData(**splits, n_classes=len(listings["source_train"][0].classes), prepare=prepare, augment=augment)

    def input_transforms(self, cfg: FoldersStudyConfig, source_x: torch.Tensor, target_x: torch.Tensor) -> tuple[Transform, Transform]:
        return input_transforms(cfg, tuple(source_x.shape[2:]))

    def plot_data(self, data: DomainData, plots_dir: Path) -> None:
        n = 12

        def row(split: Split) -> np.ndarray:
            x = split.x[:n]
            return (x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)).numpy()

        target = "labelled, for evaluation only" if data.target_train.labelled else "unlabelled"
        image_grid([("source (labelled)", row(data.source_train)), (f"target ({target})", row(data.target_train))],
                   plots_dir / "samples.png")


def _split_listings(cfg: FoldersStudyConfig) -> dict[str, tuple[ImageListing, np.ndarray | None]]:
    """The four splits as (listing, chosen indices), nothing decoded; indices None: the split is its training split.

    Seeded: the held-out parts and the limits are drawn from ``cfg.seed`` in a fixed order.
    """
    data = cfg.data
    source = list_images(data.source, "source")
    labels = None if source.labels is None else torch.tensor(source.labels)
    check_source(LoadedDomain(torch.empty(0), labels, source.classes, source.paths, origin=source.origin))
    target = list_images(data.target, "target", source.classes)
    rng = np.random.default_rng(cfg.seed)
    listings: dict[str, tuple[ImageListing, np.ndarray | None]] = {}
    for domain, listing, test_path in (("source", source, data.source_test), ("target", target, data.target_test)):
        if test_path:
            test = list_images(test_path, f"{domain}_test", source.classes)
            if domain == "source" and test.labels is None:
                raise DataError(f"source_test {test.origin} is unlabelled: held-out source images need labels")
            listings[f"{domain}_train"] = (listing, np.arange(len(listing.paths)))
            listings[f"{domain}_test"] = (test, np.arange(len(test.paths)))
        else:
            train_indices, test_indices = holdout_split(len(listing.paths), data.holdout, rng, f"{domain} {listing.origin}")
            listings[f"{domain}_train"] = (listing, train_indices)
            listings[f"{domain}_test"] = (listing, test_indices)
    for name, (listing, indices) in listings.items():
        if indices is not None:
            listings[name] = (listing, limit(indices, data.train_limit if name.endswith("_train") else data.test_limit, rng))
    return {name: listings[name] for name in ("source_train", "source_test", "target_train", "target_test")}


def _common_layout(loaded: dict[str, LoadedDomain]) -> dict[str, Split]:
    """The four splits with one channel count (grey widened to RGB where another domain is in colour) and one size."""
    reference = tuple(loaded["source_train"].x.shape[2:])
    for name, domain in loaded.items():
        size = tuple(domain.x.shape[2:])
        if size != reference:
            raise DataError(
                f"source images are {reference[0]}x{reference[1]} but {name} images {size[0]}x{size[1]} (H x W): "
                f"set data.size=[H,W] to resize every image, e.g. data.size=[{reference[0]},{reference[1]}]"
            )
    channels = max(domain.x.shape[1] for domain in loaded.values())
    widened: dict[int, torch.Tensor] = {}  # one tensor per decoded domain, so shared splits stay shared
    for domain in loaded.values():
        if id(domain) not in widened:
            widened[id(domain)] = domain.x if domain.x.shape[1] == channels else domain.x.expand(-1, channels, -1, -1)
    return {name: Split(widened[id(domain)], domain.y) for name, domain in loaded.items()}
