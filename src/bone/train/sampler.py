"""Deterministic batch plan: which examples each process sees at each optimizer step.

Epoch e visits `randperm(n)` drawn from a generator seeded with (seed, e), cut into global batches
of `batch_size * grad_accum * world` examples (an incomplete last global batch is dropped). Step s
of epoch e always gets the same examples whatever the number of processes, so a resumed run
continues exactly by skipping the steps already taken, and 1 process matches N at equal global batch.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError


class BatchPlan:
    def __init__(self, n: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int):
        self.n, self.batch_size, self.grad_accum = n, batch_size, grad_accum
        self.world, self.rank, self.seed = world, rank, seed
        self.global_batch = batch_size * grad_accum * world
        if n < self.global_batch:
            raise ConfigError(
                f"{n} training examples is fewer than one global batch of {self.global_batch} "
                f"(batch_size {batch_size} x grad_accum {grad_accum} x {world} processes): add data or lower the batch"
            )
        self.steps_per_epoch = n // self.global_batch

    def order(self, epoch: int) -> list[int]:
        """The example order of one epoch (identical on every process)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def micro_batches(self, epoch: int, step: int, order: list[int] | None = None) -> list[list[int]]:
        """This process's `grad_accum` micro-batches (lists of example indices) for step `step` of `epoch`.

        Micro-batch k of rank r is slice (k * world + r) of the global batch."""
        order = self.order(epoch) if order is None else order
        start = step * self.global_batch
        b = self.batch_size
        return [
            order[start + (k * self.world + self.rank) * b: start + (k * self.world + self.rank + 1) * b]
            for k in range(self.grad_accum)
        ]
