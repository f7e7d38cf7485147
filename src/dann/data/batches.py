"""Paired source/target mini-batches drawn from memory, deterministic and resumable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dann.data.domains import Split


@dataclass
class Batch:
    """One training step's data. ``target_y`` is set only for methods that may read target labels."""

    source_x: torch.Tensor
    source_y: torch.Tensor
    target_x: torch.Tensor
    target_y: torch.Tensor | None = None


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


class PairedBatches:
    """Draws ``batch_size`` source and ``batch_size`` target samples per step.

    ``rank``/``world_size`` give each process a disjoint shard of the same global batch, so a
    multi-process run sees exactly the samples a single-process run would.
    """

    def __init__(
        self,
        source: Split,
        target: Split,
        batch_size: int,
        seed: int,
        with_target_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than the number of processes {world_size}")
        self.source, self.target = source, target
        self.batch_size = batch_size
        self.with_target_labels = with_target_labels
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._source = _EpochSampler(len(source), self.generator)
        self._target = _EpochSampler(len(target), self.generator)

    def next(self) -> Batch:
        shard = slice(self.rank, None, self.world_size)
        src = self._source.take(self.batch_size)[shard]
        tgt = self._target.take(self.batch_size)[shard]
        return Batch(
            self.source.x[src],
            self.source.y[src],
            self.target.x[tgt],
            self.target.y[tgt] if self.with_target_labels else None,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "source_order": self._source.order,
            "source_position": self._source.position,
            "target_order": self._target.order,
            "target_position": self._target.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._source.order, self._source.position = state["source_order"], int(state["source_position"])
        self._target.order, self._target.position = state["target_order"], int(state["target_position"])
