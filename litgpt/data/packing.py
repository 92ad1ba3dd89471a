"""Sample packing for instruction tuning: several tokenized samples share one sequence of `max_seq_length`.

A packed item concatenates its samples' `input_ids` and `labels` (each shifted first, so no label ever
crosses a boundary and the loss covers exactly the tokens it covers unpacked), and adds `positions`
(0, 1, ... restarting at each sample) and `segment_ids` (0, 1, ... per sample; -1 for padding), which
`GPT.forward(positions=, segment_ids=)` turns into per-sample RoPE positions and block-diagonal attention.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class PackedDataset(Dataset):
    """Packs the samples of `dataset` (dicts of 1-D `input_ids` / `labels`) into sequences of at most
    `max_seq_length` tokens, first-fit in a seeded random order. Built once at construction (every sample is
    tokenized then); the packing is the same in every epoch and on every process."""

    def __init__(self, dataset: Dataset, max_seq_length: int, seed: int = 42, shuffle: bool = True,
                 search_window: int = 64) -> None:
        """
        Args:
            dataset: the unpacked samples.
            max_seq_length: tokens per packed sequence at most.
            seed: seed of the order samples are packed in.
            shuffle: pack in a seeded random order (False: in dataset order).
            search_window: how many of the most recent open sequences first-fit tries.
        """
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1, got {max_seq_length}")
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.max_seq_length = max_seq_length
        order = list(range(len(self.samples)))
        if shuffle:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
        bins: list[list[int]] = []
        room: list[int] = []
        for i in order:
            n = self.samples[i]["input_ids"].numel()
            if n == 0:
                continue
            if n > max_seq_length:
                raise ValueError(f"sample {i} has {n} tokens, more than max_seq_length={max_seq_length}")
            start = max(0, len(bins) - search_window)
            for b in range(start, len(bins)):
                if room[b] >= n:
                    bins[b].append(i)
                    room[b] -= n
                    break
            else:
                bins.append([i])
                room.append(max_seq_length - n)
        self.bins = bins

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        parts = [self.samples[i] for i in self.bins[index]]
        return {
            "input_ids": torch.cat([p["input_ids"] for p in parts]),
            "labels": torch.cat([p["labels"] for p in parts]),
            "positions": torch.cat([torch.arange(p["input_ids"].numel()) for p in parts]),
            "segment_ids": torch.cat([torch.full((p["input_ids"].numel(),), s) for s, p in enumerate(parts)]),
        }

    def packing_efficiency(self) -> float:
        """Fraction of the packed sequences' slots holding tokens."""
        used = sum(self.samples[i]["input_ids"].numel() for b in self.bins for i in b)
        return used / max(1, len(self.bins) * self.max_seq_length)


PACKING_KEYS = ("positions", "segment_ids")


def packing_kwargs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model keyword arguments of a packed batch ({} for an unpacked one)."""
    return {key: batch[key] for key in PACKING_KEYS if key in batch}
