"""`LitData`: pretraining on token chunks already optimized by the `litdata` package (`litdata.optimize`
with a `TokensLoader`), streamed from a local folder or a cloud URL ("s3://...").

`litdata` is optional: `pip install 'litgpt[litdata]'`. The same machinery serves `TinyLlama` and
`MicroLlama` (SlimPajama / Starcoder chunks written by `litgpt.data.prepare_slimpajama` /
`prepare_starcoder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset

from litgpt.data.base import DataModule


def import_litdata() -> Any:
    """The `litdata` module, or a one-line ImportError naming the extra to install."""
    try:
        import litdata
    except ImportError:
        raise ImportError("streaming optimized datasets needs the litdata package: pip install 'litgpt[litdata]'") from None
    return litdata


class StreamingTokens(DataModule):
    """Base of the modules that read litdata token chunks: windows of `max_seq_length + 1` tokens.

    `train_dataloader()` / `val_dataloader()` are litdata `StreamingDataLoader`s yielding (B, T + 1) token
    tensors, as LitGPT's do; the training loop reads `train_dataset` / `val_dataset` by index and gets
    shifted {"input_ids", "labels"} batches from `collate`.
    """

    seq_length: int = 2048
    num_workers: int = 8
    seed: int = 42

    def connect(self, tokenizer: Optional[Any] = None, batch_size: int = 1, max_seq_length: Optional[int] = None,
                **kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seq_length = (2048 if max_seq_length is None else max_seq_length) + 1  # one more token for the shift

    # ------------------------------------------------------------------ what subclasses provide
    def input_dirs(self, train: bool) -> list[str]:
        """The optimized folders (or URLs) of the training or validation split."""
        raise NotImplementedError

    # ------------------------------------------------------------------ DataModule
    def check(self) -> None:
        """Local folders must exist (remote URLs are checked by litdata when read)."""
        for train in (True, False):
            for d in self.input_dirs(train):
                if "://" not in d and not Path(d).is_dir():
                    raise FileNotFoundError(self.missing_message(d))

    def missing_message(self, path: str) -> str:
        return f"the dataset folder {path} does not exist; write it with litdata.optimize (set --data.data_path)"

    def streaming_dataset(self, train: bool) -> Dataset:
        """A litdata StreamingDataset over the split (a concatenation when it has several folders)."""
        self.check()
        litdata = import_litdata()
        parts = [litdata.StreamingDataset(input_dir=d, item_loader=litdata.TokensLoader(block_size=self.seq_length),
                                          shuffle=train, seed=self.seed, drop_last=True)
                 for d in self.input_dirs(train)]
        return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)

    def setup(self, stage: str = "") -> None:
        self.train_dataset = self.streaming_dataset(train=True)
        self.val_dataset = self.streaming_dataset(train=False)

    def collate(self, samples: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, T + 1) token windows -> the loop's shifted batch."""
        tokens = torch.stack([torch.as_tensor(s, dtype=torch.long) for s in samples])
        return {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}

    @property
    def loader_workers(self) -> int:
        return self.num_workers

    def _dataloader(self, train: bool) -> DataLoader:
        litdata = import_litdata()
        dataset = self.train_dataset if train and self.train_dataset is not None else (
            self.val_dataset if not train and self.val_dataset is not None else self.streaming_dataset(train))
        if not isinstance(dataset, litdata.StreamingDataset):
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
                              drop_last=True)
        return litdata.StreamingDataLoader(dataset, batch_size=self.batch_size, pin_memory=True,
                                           num_workers=self.num_workers, drop_last=True)

    def train_dataloader(self) -> DataLoader:
        return self._dataloader(train=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(train=False)


@dataclass
class LitData(StreamingTokens):
    """Token chunks optimized with litdata (`litdata.optimize(..., item_loader=TokensLoader())`)."""

    data_path: Union[str, Path] = Path("data")
    """A local folder or a cloud URL ("s3://bucket/path") holding the optimized chunks."""
    split_names: Optional[tuple[str, str]] = None
    """Names of the training and validation subfolders of data_path (None: data_path itself for both)."""
    seed: int = 42
    """Seed of the shuffling of the training chunks."""
    num_workers: int = 8
    """DataLoader worker processes."""
    batch_size: int = field(default=1, init=False, repr=False)
    seq_length: int = field(default=2048, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split_names is not None and len(self.split_names) != 2:
            raise ValueError(f"split_names must name the training and the validation folder, got {self.split_names}")

    def input_dirs(self, train: bool) -> list[str]:
        base = str(self.data_path).rstrip("/")
        if self.split_names is None:
            return [base]
        return [f"{base}/{self.split_names[0 if train else 1]}"]


class TokenRecipe:
    """How a raw corpus becomes litdata token chunks: `prepare_structure(input_dir)` lists the work items
    (files), `prepare_item(item)` yields one token tensor per document (eos appended). LitGPT's recipe API."""

    def __init__(self, tokenizer: Any, chunk_size: int) -> None:
        """
        Args:
            tokenizer: a `litgpt.Tokenizer`.
            chunk_size: tokens per chunk file.
        """
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size

    def prepare_structure(self, input_dir: Union[str, Path]) -> list[str]:
        raise NotImplementedError

    def prepare_item(self, item: Any) -> Any:
        raise NotImplementedError

    def encode(self, text: str) -> torch.Tensor:
        return self.tokenizer.encode(text, bos=False, eos=True)


def optimize_tokens(recipe: TokenRecipe, input_dir: Path, output_dir: Path, fast_dev_run: bool = False,
                    num_workers: Optional[int] = None) -> None:
    """Runs `litdata.optimize` over the recipe's files, writing token chunks to `output_dir`."""
    litdata = import_litdata()
    inputs = recipe.prepare_structure(input_dir)
    if not inputs:
        raise FileNotFoundError(f"{input_dir} holds no input files for {type(recipe).__name__}")
    import os

    litdata.optimize(fn=recipe.prepare_item, inputs=inputs, output_dir=str(output_dir), chunk_size=recipe.chunk_size,
                     item_loader=litdata.TokensLoader(), fast_dev_run=fast_dev_run,
                     num_workers=num_workers or min(len(inputs), os.cpu_count() or 1))
