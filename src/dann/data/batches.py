"""Source/target mini-batches drawn from memory, one chunk per training domain, deterministic and resumable.

Batches leave here ready for a method: on the training device, prepared (e.g. uint8 -> normalised
float) and augmented. Indexing runs on the CPU copy of the data, so only a batch crosses to a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dann.data.domains import DomainData, Split, identity
from dann.errors import ConfigError


@dataclass
class Batch:
    """One training step's data. ``target_y`` is set only for methods that may read target labels.

    ``domains`` holds the domain label of every sample, source samples first, as
    :meth:`DomainData.training_domains` numbers them; a batch built by hand may leave it ``None``
    for two domains (0 source, 1 target). ``target_plain`` is ``target_x`` before the training
    augmentation (``None``: not augmented), for methods that label a clean view.
    """

    source_x: torch.Tensor
    source_y: torch.Tensor
    target_x: torch.Tensor
    target_y: torch.Tensor | None = None
    domains: torch.Tensor | None = None
    target_plain: torch.Tensor | None = None

    def unaugmented_target(self) -> torch.Tensor:
        """``target_plain`` when the loop augmented the batch, else ``target_x`` (already plain)."""
        return self.target_x if self.target_plain is None else self.target_plain

    def domain_labels(self) -> torch.Tensor:
        """The domain label of each sample of ``cat([source_x, target_x])``."""
        if self.domains is not None:
            return self.domains
        n_source, n_target = len(self.source_x), len(self.target_x)
        device = self.source_x.device
        return torch.cat([torch.zeros(n_source, dtype=torch.long, device=device), torch.ones(n_target, dtype=torch.long, device=device)])


class _EpochSampler:
    """Indices of one split, a fresh random permutation per epoch (sampling without replacement)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator
        self.order = torch.randperm(n, generator=generator)
        self.position = 0

    def take(self, count: int) -> torch.Tensor:
        parts = []
        while count > 0:
            if self.position == self.n:
                self.order = torch.randperm(self.n, generator=self.generator)
                self.position = 0
            chunk = self.order[self.position : self.position + count]
            self.position += len(chunk)
            count -= len(chunk)
            parts.append(chunk)
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # no copy in the common one-domain case


class PairedBatches:
    """Draws ``batch_size`` samples per step from every training domain.

    ``sources`` are labelled, ``targets`` unlabelled; a single split stands for a list of one.
    ``rank``/``world_size`` give each process a disjoint shard of the same global batch, so a
    multi-process run sees exactly the samples a single-process run would. Each batch is moved
    to ``device`` (pinned and non-blocking from a CPU to a GPU), then ``prepare`` runs on every
    domain's inputs and ``augment`` on the prepared ones; ``Batch.target_plain`` keeps the
    target before augmentation.
    """

    def __init__(
        self,
        sources: Split | list[Split],
        targets: Split | list[Split],
        batch_size: int,
        seed: int,
        with_target_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        prepare: Callable[[torch.Tensor], torch.Tensor] = identity,
        augment: Callable[[torch.Tensor], torch.Tensor] = identity,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than the number of processes {world_size}")
        self.sources = [sources] if isinstance(sources, Split) else list(sources)
        self.targets = [targets] if isinstance(targets, Split) else list(targets)
        if with_target_labels and not all(split.labelled for split in self.targets):
            raise ConfigError("this method reads target labels (an oracle), but the target has none")
        self.prepare, self.augment = prepare, augment
        self.device = torch.device(device)
        self._pin = self.device.type == "cuda"
        self.batch_size = batch_size
        self.with_target_labels = with_target_labels
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._samplers = [_EpochSampler(len(split), self.generator) for split in (*self.sources, *self.targets)]
        # Every step has the same layout (one shard of batch_size per domain), so the labels are fixed.
        shard_size = len(range(rank, batch_size, world_size))
        self._domains = torch.arange(len(self._samplers)).repeat_interleave(shard_size).to(self.device)

    @classmethod
    def from_data(cls, data: DomainData, batch_size: int, seed: int, **kwargs: Any) -> PairedBatches:
        """The training domains of ``data``, with its ``prepare`` and ``augment``.

        A batch larger than a training split is refused: it would hold some samples twice in
        every step, which no one asks for on purpose (a typo, or a subset smaller than meant).
        """
        sizes = {"source_train": len(data.source_train), "target_train": len(data.target_train)}
        sizes.update((domain.name, len(domain.train)) for domain in data.extra_domains)
        smallest = min(sizes, key=sizes.__getitem__)
        if batch_size > sizes[smallest]:
            raise ConfigError(
                f"batch size {batch_size} (train.batch_size) is larger than the {smallest} split "
                f"({sizes[smallest]} samples): every batch would repeat samples; use a batch size of at most "
                f"{sizes[smallest]}, or more data"
            )
        return cls(*data.training_domains(), batch_size, seed, prepare=data.prepare, augment=data.augment, **kwargs)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return x
        return (x.pin_memory() if self._pin else x).to(self.device, non_blocking=True)

    def _draw(
        self, splits: list[Split], samplers: list[_EpochSampler], labels: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        shard = slice(self.rank, None, self.world_size)
        indices = [sampler.take(self.batch_size)[shard] for sampler in samplers]
        x = self._to_device(_cat([s.x[i] for s, i in zip(splits, indices)]))
        y = self._to_device(_cat([s.y[i] for s, i in zip(splits, indices)])) if labels else None
        return x, y

    def next(self) -> Batch:
        """The next step's batch, prepared and augmented on the device."""
        n_sources = len(self.sources)
        source_x, source_y = self._draw(self.sources, self._samplers[:n_sources], labels=True)
        target_x, target_y = self._draw(self.targets, self._samplers[n_sources:], labels=self.with_target_labels)
        source_x = self.augment(self.prepare(source_x))
        target_plain = self.prepare(target_x)
        target_x = self.augment(target_plain)
        return Batch(source_x, source_y, target_x, target_y, self._domains, target_plain)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "orders": [sampler.order for sampler in self._samplers],
            "positions": torch.tensor([sampler.position for sampler in self._samplers]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["orders"]) != len(self._samplers):
            raise ValueError(f"checkpoint has {len(state['orders'])} training domains, this run {len(self._samplers)}")
        self.generator.set_state(state["generator"])
        for sampler, order, position in zip(self._samplers, state["orders"], state["positions"].tolist()):
            sampler.order, sampler.position = order, int(position)
