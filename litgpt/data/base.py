"""Base classes of the data modules: `DataModule`, token windows for pretraining, `SFTDataset` for
instruction tuning, and the collate functions that turn samples into training batches.

Batches that reach the training loop (`DataModule.collate`) are shifted: `input_ids[t]` is trained to
predict `labels[t]`, and `labels` holds `ignore_index` where no loss is taken (padding, masked prompts). The
loop only runs `model(input_ids)` and a cross-entropy against `labels`. `SFTDataset` items and the batches
of `get_sft_collate_fn` / `train_dataloader()` keep LitGPT's layout instead (`labels` aligned with
`input_ids`, the caller shifts), so code written for LitGPT's data modules works unchanged.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from litgpt.tokenizer import Tokenizer

IGNORE_INDEX = -100


class DataModule:
    """A dataset for the training verbs.

    The loop calls, in order: `connect(tokenizer, batch_size, max_seq_length)`, `prepare_data()` (once per
    machine: downloads, tokenization caches), `setup()` (every process), then reads `train_dataset`,
    `val_dataset` and `collate`. `train_dataloader()` / `val_dataloader()` are there for use outside the
    loop. Subclasses are dataclasses whose fields are the `--data.*` flags.
    """

    tokenizer: Optional["Tokenizer"] = None
    batch_size: int = 1
    max_seq_length: int = -1
    train_dataset: Optional[Dataset] = None
    val_dataset: Optional[Dataset] = None

    def connect(
        self, tokenizer: Optional["Tokenizer"] = None, batch_size: int = 1, max_seq_length: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        """Hands the module what it needs to tokenize and batch.

        Args:
            tokenizer: the tokenizer of the model being trained.
            batch_size: micro-batch size of `train_dataloader` / `val_dataloader`.
            max_seq_length: longest sequence of input tokens; longer samples are cut.
        """
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = -1 if max_seq_length is None else max_seq_length

    def load_rows(self) -> tuple[list, list]:
        """The (train, val) rows of a module built from rows (instruction or preference data)."""
        raise NotImplementedError(f"{type(self).__name__} is not built from rows")

    def rows(self) -> tuple[list, list]:
        """The (train, val) rows, loaded once by `load_rows`; a one-line ValueError when a split is empty."""
        if getattr(self, "_rows", None) is None:
            train, val = self.load_rows()
            if not train:
                raise ValueError(f"{type(self).__name__}: the training set is empty")
            if not val:
                raise ValueError(f"{type(self).__name__}: the validation set is empty")
            self._rows = (train, val)
        return self._rows

    @property
    def test_dataset(self) -> Optional[Dataset]:
        """LitGPT's name for the validation set of its instruction modules (the same object as `val_dataset`)."""
        return self.val_dataset

    @test_dataset.setter
    def test_dataset(self, value: Optional[Dataset]) -> None:
        self.val_dataset = value

    def prepare_data(self) -> None:
        """Downloads and caches what `setup` reads. Runs on one process per machine."""

    def setup(self, stage: str = "") -> None:
        """Builds `train_dataset` and `val_dataset`."""
        raise NotImplementedError

    def get_prompt_style(self) -> Any:
        """The prompt style the samples are formatted with (None for plain text)."""
        return None

    @property
    def loader_workers(self) -> int:
        """DataLoader worker processes for the training batches."""
        return 0

    @property
    def pad_id(self) -> int:
        return 0

    def check(self) -> None:
        """Raises a one-line error for inputs that cannot work (missing files...), before any work."""

    def collate(self, samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stacks samples into a batch, padding to the longest one."""
        return pad_collate(samples, pad_id=self.pad_id, ignore_index=getattr(self, "ignore_index", IGNORE_INDEX))

    def example_prompt(self, which: Any = "first") -> Optional[str]:
        """Text that prompts the sample generated at validation time (None: no sample).

        Args:
            which: "first", "random" or an index into the validation set.
        """
        return None

    def train_dataloader(self) -> DataLoader:
        """A shuffled DataLoader over `train_dataset` (the training loop uses its own resumable sampler)."""
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate,
                          num_workers=getattr(self, "num_workers", 0))

    def val_dataloader(self) -> DataLoader:
        """A DataLoader over `val_dataset`, in order."""
        return DataLoader(self.val_dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate,
                          num_workers=getattr(self, "num_workers", 0))


def require_tokenizer(module: DataModule) -> "Tokenizer":
    """The connected tokenizer, or a one-line error saying `connect` was not called."""
    if module.tokenizer is None:
        raise ValueError(f"{type(module).__name__} needs a tokenizer: call connect(tokenizer, ...) first")
    return module.tokenizer


def pad_collate(
    samples: Sequence[dict[str, torch.Tensor]], pad_id: int = 0, ignore_index: int = IGNORE_INDEX
) -> dict[str, torch.Tensor]:
    """Pads `input_ids` with `pad_id` and `labels` with `ignore_index` to the longest sample.

    Other 1-D keys (e.g. `positions`, `segment_ids` of packed samples) are padded with 0 / -1.
    Returns tensors of shape (B, T_max).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    longest = max(s["input_ids"].numel() for s in samples)
    fill = {"input_ids": pad_id, "labels": ignore_index, "segment_ids": -1}
    batch = {}
    for key in samples[0]:
        if not isinstance(samples[0][key], torch.Tensor):
            continue
        value = fill.get(key, 0)
        out = torch.full((len(samples), longest), value, dtype=torch.long)
        for i, s in enumerate(samples):
            t = s[key]
            out[i, : t.numel()] = t
        batch[key] = out
    return batch


class TokenWindows(Dataset):
    """Windows of `seq_length + 1` consecutive tokens of a flat token array, stride `seq_length`.

    Sample i is {"input_ids": tokens[i*T : i*T+T], "labels": tokens[i*T+1 : i*T+T+1]} (T = seq_length),
    so every token of the array is predicted exactly once.
    """

    def __init__(self, tokens: Any, seq_length: int) -> None:
        """
        Args:
            tokens: a 1-D array of token ids (a numpy memmap, a tensor or a list).
            seq_length: input tokens per sample.
        """
        if seq_length < 1:
            raise ValueError(f"seq_length must be >= 1, got {seq_length}")
        self.tokens = tokens
        self.seq_length = seq_length

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.seq_length)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range (the dataset has {len(self)})")
        start = i * self.seq_length
        window = np.asarray(self.tokens[start : start + self.seq_length + 1], dtype=np.int64)
        chunk = torch.from_numpy(window)
        return {"input_ids": chunk[:-1], "labels": chunk[1:]}


class SFTDataset(Dataset):
    """Instruction-tuning samples: a prompt formatted by a prompt style, then the response and eos.

    A row is {"instruction", "output"} (plus optional "input" and other fields the style reads) or
    {"messages": [{"role", "content"}, ...]} ending with the assistant's answer (the earlier turns form the
    prompt). Item i is LitGPT's layout: {"input_ids": prompt + response + eos, "labels": the same ids with
    the prompt's set to `ignore_index` when `mask_prompt`, "token_counts": {"raw", "raw_plus_prompt_template"}};
    labels are not shifted (`shift_sample` does it).
    """

    def __init__(
        self,
        data: Sequence[dict[str, Any]],
        tokenizer: "Tokenizer",
        prompt_style: Any,
        max_seq_length: int = -1,
        mask_prompt: bool = True,
        ignore_index: int = IGNORE_INDEX,
        transform: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        """
        Args:
            data: the rows (see the class docstring), or whatever `transform` turns into them.
            tokenizer: encodes prompt and response.
            prompt_style: a `litgpt.prompts.PromptStyle` or a style name ("alpaca", "llama3", ...).
            max_seq_length: tokens per sample at most (-1: no limit); longer samples are cut at the end.
            mask_prompt: no loss on the prompt's tokens.
            ignore_index: label value of tokens without loss.
            transform: applied to each row before formatting.
        """
        if isinstance(prompt_style, str):
            from litgpt.prompts import PromptStyle

            prompt_style = PromptStyle.from_name(prompt_style)
        self.data = data
        self.tokenizer = tokenizer
        self.prompt_style = prompt_style
        self.max_seq_length = max_seq_length
        self.mask_prompt = mask_prompt
        self.ignore_index = ignore_index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def _row(self, i: int) -> dict[str, Any]:
        row = self.data[i]
        return self.transform(row) if self.transform is not None else row

    def prompt_and_response(self, i: int) -> tuple[str, str]:
        """The formatted prompt of row i (what the model sees before the answer) and the answer."""
        row = self._row(i)
        if "messages" in row:
            messages = row["messages"]
            return self.prompt_style.apply_conversation(messages[:-1]), messages[-1]["content"]
        extra = {k: v for k, v in row.items() if k not in ("instruction", "output")}
        return self.prompt_style.apply(row["instruction"], **extra), row["output"]

    def _raw_prompt(self, i: int) -> str:
        """The row's own text before the style formats it (for `token_counts["raw"]`)."""
        row = self._row(i)
        if "messages" in row:
            return "".join(m["content"] for m in row["messages"][:-1])
        return row["instruction"] + (row.get("input") or "")

    def __getitem__(self, i: int) -> dict[str, Any]:
        prompt, response = self.prompt_and_response(i)
        prompt_ids = self.tokenizer.encode(prompt).long()
        response_ids = self.tokenizer.encode(response, bos=False, eos=self.tokenizer.eos_id is not None).long()
        ids = torch.cat((prompt_ids, response_ids))
        labels = ids.clone()
        if self.mask_prompt:
            labels[: prompt_ids.numel()] = self.ignore_index
        if self.max_seq_length > 0:
            ids, labels = ids[: self.max_seq_length], labels[: self.max_seq_length]
        raw = self.tokenizer.encode(self._raw_prompt(i)).numel() + response_ids.numel()
        return {"input_ids": ids, "labels": labels,
                "token_counts": {"raw": raw, "raw_plus_prompt_template": ids.numel()}}


def shift_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """LitGPT's aligned layout -> the training loop's: `input_ids[:-1]` predicts `labels[1:]`."""
    return {"input_ids": sample["input_ids"][:-1], "labels": sample["labels"][1:]}


class ShiftedDataset(Dataset):
    """A view of a dataset of LitGPT-layout samples with each sample passed through `shift_sample`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return shift_sample(self.dataset[i])


def get_sft_collate_fn(max_seq_length: int = -1, pad_id: int = 0, ignore_index: int = IGNORE_INDEX) -> Callable:
    """A collate function for `SFTDataset` items (LitGPT's layout): pads `input_ids` with `pad_id` and `labels`
    with `ignore_index` to the longest sample, cuts them to `max_seq_length` (-1: no cut) and stacks each
    `token_counts` entry into a (B, 1) tensor.

    Returns:
        A function of a list of samples returning the batch dict.
    """
    return functools.partial(_sft_collate, max_seq_length=max_seq_length, pad_id=pad_id, ignore_index=ignore_index)


def _sft_collate(samples: Sequence[dict[str, Any]], max_seq_length: int, pad_id: int, ignore_index: int
                 ) -> dict[str, Any]:
    batch = pad_collate(samples, pad_id=pad_id, ignore_index=ignore_index)
    if max_seq_length > 0:
        batch = {k: v[:, :max_seq_length] for k, v in batch.items()}
    counts = samples[0].get("token_counts")
    if isinstance(counts, dict):
        batch["token_counts"] = {k: torch.tensor([[s["token_counts"][k]] for s in samples]) for k in counts}
    return batch


def split_rows(rows: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Splits rows into (train, val) by a seeded permutation; val gets round(len * fraction), at least 1."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_split_fraction must be between 0 and 1, got {val_fraction}")
    if len(rows) < 2:
        raise ValueError(f"cannot split {len(rows)} row(s) into a training and a validation set")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(rows) - 1, max(1, round(len(rows) * val_fraction)))
    return [rows[i] for i in order[n_val:]], [rows[i] for i in order[:n_val]]


def pick_example(n: int, which: Any, seed: int = 0) -> int:
    """Index of the validation sample that prompts the generated text: 'first', 'random' or an index."""
    if n == 0:
        raise ValueError("the validation set is empty")
    if which == "first":
        return 0
    if which == "random":
        return int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)).item())
    return int(which) % n
