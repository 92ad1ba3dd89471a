"""Resumable, world-size-independent batching.

An epoch is a seeded permutation of the training set cut into global batches. Optimizer step s of an
epoch uses samples order[s*G : (s+1)*G]; with W processes rank r takes the r-th contiguous G/W of them,
split into micro-batches. So 1 process with gradient accumulation and W processes see the same global
batches, and resuming at (epoch, step) needs no replay: the sampler starts there.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import Sampler


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order of the n samples in `epoch` (the same on every process)."""
    if not shuffle:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


class StepSampler(Sampler[list[int]]):
    """Yields this process's micro-batches (lists of sample indices) of one epoch, from `start_step` on.

    Only complete global batches are used; the remainder of the epoch (fewer than G samples) is skipped.
    """

    def __init__(
        self,
        n: int,
        global_batch_size: int,
        micro_batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        per_rank, rest = divmod(global_batch_size, world_size)
        if rest or per_rank % micro_batch_size:
            raise ValueError(
                f"global_batch_size={global_batch_size} does not split into {world_size} process(es) "
                f"x micro-batches of {micro_batch_size}"
            )
        self.n, self.global_batch_size, self.micro_batch_size = n, global_batch_size, micro_batch_size
        self.world_size, self.rank = world_size, rank
        self.seed, self.epoch, self.start_step, self.shuffle = seed, epoch, start_step, shuffle
        self.per_rank = per_rank

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch_size

    @property
    def micro_batches_per_step(self) -> int:
        return self.per_rank // self.micro_batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle)
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch_size + self.rank * self.per_rank
            for m in range(0, self.per_rank, self.micro_batch_size):
                yield order[base + m : base + m + self.micro_batch_size]

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step) * self.micro_batches_per_step


def validation_batches(n: int, micro_batch_size: int, world_size: int, rank: int, max_iters: int) -> list[tuple[list[int], bool]]:
    """This process's validation micro-batches as (indices, counts) pairs, in order.

    Batch b (contiguous samples) goes to rank b % W, at most `max_iters` per rank. Every rank gets the same
    number of batches (sharded models need every rank in each forward pass): a rank short of batches repeats
    its first one with counts=False, meaning its loss is not counted.
    """
    starts = list(range(0, n, micro_batch_size))
    total = min(len(starts), max_iters * world_size)
    mine = [list(range(s, min(s + micro_batch_size, n))) for s in starts[:total][rank::world_size]]
    per_rank = -(-total // world_size)
    out = [(b, True) for b in mine]
    filler = mine[0] if mine else list(range(min(micro_batch_size, n)))
    while len(out) < per_rank:
        out.append((filler, False))
    return out


def loader_workers(requested: int) -> int:
    """DataLoader worker processes: the data module's request (LitGPT's default is 4), at most one fewer than the
    CPUs this process may use, so a small machine keeps a core for the training step (2 CPUs: 1 worker)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(int(requested or 0), cpus - 1))
