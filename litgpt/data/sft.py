"""The base of every instruction-tuning data module: rows -> prompt style -> tokens, with prompt masking,
a seeded validation split and optional sample packing. Subclasses only say where their rows come from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader

from litgpt.data.base import (
    IGNORE_INDEX, DataModule, SFTDataset, ShiftedDataset, get_sft_collate_fn, pad_collate, pick_example, require_tokenizer,
    shift_sample, split_rows,
)
from litgpt.prompts import PromptStyle


@dataclass
class SFTDataModule(DataModule):
    """Instruction tuning on rows of {"instruction", "input" (optional), "output"} or {"messages": [...]}.

    The fields are LitGPT's, in its order (positional arguments work as there); ours that LitGPT lacks are
    keyword-only. After construction `prompt_style` holds a `PromptStyle` object, as in LitGPT.
    """

    mask_prompt: bool = False
    """Take no loss on the prompt's tokens (only on the response)."""
    val_split_fraction: float = 0.05
    """Fraction of the rows held out for validation (when the dataset has no validation split of its own)."""
    prompt_style: Union[str, PromptStyle] = "alpaca"
    """How a row becomes a prompt: a style name from litgpt.prompts (alpaca, chatml, llama3, ...)."""
    ignore_index: int = IGNORE_INDEX
    """Label value of the tokens that take no loss (masked prompt, padding)."""
    seed: int = 42
    """Seed of the train / validation split."""
    num_workers: int = 4
    """DataLoader worker processes (tokenization happens on the fly)."""
    packing: bool = field(default=False, kw_only=True)
    """Pack several samples into each sequence of max_seq_length tokens; attention and positions do not
    cross sample boundaries and the loss covers the same tokens as without packing."""

    def __post_init__(self) -> None:
        if self.val_split_fraction is not None and not 0 < self.val_split_fraction < 1:
            raise ValueError(f"val_split_fraction must be between 0 and 1, got {self.val_split_fraction}")
        if isinstance(self.prompt_style, str):
            self.prompt_style = PromptStyle.from_name(self.prompt_style)
        self._rows: Optional[tuple[list, list]] = None

    # ------------------------------------------------------------------ what subclasses provide
    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train rows, validation rows), each already in the SFT row format."""
        raise NotImplementedError

    # ------------------------------------------------------------------ DataModule
    def get_prompt_style(self) -> PromptStyle:
        style = self.prompt_style
        return PromptStyle.from_name(style) if isinstance(style, str) else style

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The training loop's batch: samples shifted (packed ones already are), then padded."""
        if not self.packing:
            samples = [shift_sample(s) for s in samples]
        return pad_collate(samples, pad_id=self.pad_id, ignore_index=self.ignore_index)

    def train_dataloader(self) -> DataLoader:
        """LitGPT's training DataLoader: shuffled `SFTDataset` items in LitGPT's layout, batched by
        `get_sft_collate_fn` (packed modules give the loop's shifted batches)."""
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed), num_workers=self.num_workers,
                          collate_fn=self._loader_collate())

    def val_dataloader(self) -> DataLoader:
        """LitGPT's validation DataLoader (in order; batches as in `train_dataloader`)."""
        return DataLoader(self.val_dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=self._loader_collate())

    def _loader_collate(self) -> Callable:
        if self.packing:
            return self.collate
        return get_sft_collate_fn(self.max_seq_length, pad_id=self.pad_id, ignore_index=self.ignore_index)

    @property
    def loader_workers(self) -> int:
        return self.num_workers

    def setup(self, stage: str = "") -> None:
        """Builds the tokenizing datasets (packed ones with `packing`)."""
        tokenizer = require_tokenizer(self)
        train, val = self.rows()
        style = self.get_prompt_style()
        make = lambda rows: SFTDataset(rows, tokenizer, style, self.max_seq_length, self.mask_prompt, self.ignore_index)
        self.train_dataset, self.val_dataset = make(train), make(val)
        if self.packing:
            from litgpt.data.packing import PackedDataset

            if self.max_seq_length is None or self.max_seq_length < 1:
                raise ValueError("packing needs a max_seq_length (train.max_seq_length or the model's block_size)")
            # each sample is shifted before packing, so no label crosses into the next sample
            self.train_dataset = PackedDataset(ShiftedDataset(self.train_dataset), self.max_seq_length, seed=self.seed)
            self.val_dataset = PackedDataset(ShiftedDataset(self.val_dataset), self.max_seq_length, seed=self.seed,
                                             shuffle=False)

    def example_prompt(self, which: Any = "first") -> Optional[str]:
        _, val = self.rows()
        dataset = SFTDataset(val, require_tokenizer(self), self.get_prompt_style())
        return dataset.prompt_and_response(pick_example(len(val), which, self.seed))[0]

    def check(self) -> None:
        """Loads and checks the rows when they are local (downloads are checked after downloading)."""
        if self.is_local():
            self.rows()

    def is_local(self) -> bool:
        """Whether the rows can be read without downloading."""
        return False

    def split(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A seeded (train, val) split by `val_split_fraction`."""
        return split_rows(rows, self.val_split_fraction, self.seed)


def read_rows(path: Path) -> list[Any]:
    """The records of a .json (a list of objects), .jsonl (one object per line) or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install 'litgpt[data]'") from None
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {n} is not valid JSON ({err.msg})") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of objects, found a {type(data).__name__}")
    return data


def check_rows(rows: Sequence[Any], source: str, required: Sequence[str] = ("instruction", "output"),
               optional_str: Sequence[str] = ("input",)) -> list[dict[str, Any]]:
    """Checks every row is an object with string values for the `required` keys; names the first bad row
    (0-based) and what it holds. Returns the rows as a list."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source}: row {i} is a {type(row).__name__}, expected an object with keys "
                             f"{', '.join(required)}")
        missing = [k for k in required if k not in row]
        if missing:
            has = ", ".join(sorted(map(str, row))) or "no keys"
            raise ValueError(f"{source}: row {i} has no {', '.join(repr(k) for k in missing)} (it has: {has})")
        for key in list(required) + [k for k in optional_str if k in row]:
            if not isinstance(row[key], str):
                raise ValueError(f"{source}: row {i}: {key!r} must be a string, got {type(row[key]).__name__}")
        out.append(row)
    return out


def check_messages_rows(rows: Sequence[Any], source: str, key: str = "messages") -> list[dict[str, Any]]:
    """Checks rows of {"messages": [{"role", "content"}, ...]} that end with an assistant turn."""
    out = []
    for i, row in enumerate(rows):
        messages = row.get(key) if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{source}: row {i} has no non-empty {key!r} list")
        for j, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                    "system", "user", "assistant"):
                raise ValueError(f"{source}: row {i}, message {j} must be {{'role': system|user|assistant, "
                                 f"'content': str}}, got {m!r}"[:300])
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{source}: row {i} does not end with an assistant message")
        out.append({"messages": messages})
    return out


def expand_turns(rows: list[dict[str, Any]], multiturn: bool) -> list[dict[str, Any]]:
    """Conversations -> samples: one per assistant turn (the history as prompt) with `multiturn`, else one
    for the first assistant turn only."""
    out = []
    for row in rows:
        messages = row["messages"]
        ends = [j for j, m in enumerate(messages) if m["role"] == "assistant" and j > 0]
        for j in (ends if multiturn else ends[:1]):
            out.append({"messages": messages[: j + 1]})
    return out


def download_url(url: str, target: Path) -> Path:
    """Downloads `url` to `target` (atomically) unless it exists; a one-line ConnectionError when offline."""
    import urllib.error
    import urllib.request

    from litgpt.utils import atomic_path

    target = Path(target)
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise ConnectionError(f"cannot download {url} ({getattr(err, 'reason', err)}); put the file at {target} by hand") from None
    return target


def hf_dataset_file(repo_id: str, filename: str, target_dir: Path, access_token: Optional[str] = None,
                    revision: Optional[str] = None) -> Path:
    """Downloads one file of a Hugging Face dataset repository into `target_dir` (kept if already there)."""
    target_dir = Path(target_dir)
    local = target_dir / filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError("downloading datasets from the Hugging Face Hub needs huggingface_hub") from None
    try:
        path = hf_hub_download(repo_id, filename, repo_type="dataset", local_dir=str(target_dir), token=access_token,
                               revision=revision)
    except Exception as err:  # network, auth (gated datasets) and missing-file errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConnectionError(f"cannot download {filename} of the dataset {repo_id} ({first})") from None
    return Path(path)


def hf_dataset_files(repo_id: str, target_dir: Path, patterns: Sequence[str], access_token: Optional[str] = None,
                     revision: Optional[str] = None) -> Path:
    """Downloads the files of a Hugging Face dataset repository matching `patterns` into `target_dir`
    (skipped when `target_dir` already holds files); returns `target_dir`."""
    target_dir = Path(target_dir)
    if target_dir.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in target_dir.rglob("*")):
        return target_dir
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError("downloading datasets from the Hugging Face Hub needs huggingface_hub") from None
    try:
        snapshot_download(repo_id, repo_type="dataset", local_dir=str(target_dir), allow_patterns=list(patterns),
                          token=access_token, revision=revision)
    except Exception as err:  # network, auth (gated datasets) and missing-repository errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConnectionError(f"cannot download the dataset {repo_id} ({first})") from None
    return target_dir


RowTransform = Callable[[dict[str, Any]], dict[str, Any]]
