"""Source/target mini-batches drawn from memory, one chunk per training domain, deterministic and resumable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dann.data.domains import Split


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
    multi-process run sees exactly the samples a single-process run would.
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
    ) -> None:
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than the number of processes {world_size}")
        self.sources = [sources] if isinstance(sources, Split) else list(sources)
        self.targets = [targets] if isinstance(targets, Split) else list(targets)
        self.batch_size = batch_size
        self.with_target_labels = with_target_labels
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._samplers = [_EpochSampler(len(split), self.generator) for split in (*self.sources, *self.targets)]
        # Every step has the same layout (one shard of batch_size per domain), so the labels are fixed.
        shard_size = len(range(rank, batch_size, world_size))
        self._domains = torch.arange(len(self._samplers)).repeat_interleave(shard_size)

    def _draw(self, splits: list[Split], samplers: list[_EpochSampler]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        shard = slice(self.rank, None, self.world_size)
        indices = [sampler.take(self.batch_size)[shard] for sampler in samplers]
        return [s.x[i] for s, i in zip(splits, indices)], [s.y[i] for s, i in zip(splits, indices)]

    def next(self) -> Batch:
        n_sources = len(self.sources)
        source_x, source_y = self._draw(self.sources, self._samplers[:n_sources])
        target_x, target_y = self._draw(self.targets, self._samplers[n_sources:])
        return Batch(
            _cat(source_x), _cat(source_y), _cat(target_x), _cat(target_y) if self.with_target_labels else None, self._domains
        )

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
