"""Preference data: pairs of a prompt with a chosen and a rejected response, for `litgpt finetune_dpo`.

`Preference` reads your own rows from a .json / .jsonl / .parquet file (or a folder with train and val files);
`UltraFeedback` and `AnthropicHH` download two well-known public sets from the Hugging Face Hub.

A row is {"prompt": str, "chosen": str, "rejected": str}, or the conversational form: "chosen" and "rejected"
as lists of {"role", "content"} messages that end with the assistant's answer, with the prompt either given as
"prompt" (a string or a list of messages) or being the messages both lists share before their answers.
Prompts are formatted with the prompt style (default: the model's), the responses follow with the eos token.

Each sample's tokens: prompt, chosen and rejected ids. Pairs longer than `max_seq_length` lose tokens from
the start of their prompt (the responses are cut only if they alone do not fit); how many is reported. A batch
of B pairs is 2B sequences, the chosen ones first: `input_ids` (2B, T) and shifted `labels` (2B, T) that are
`ignore_index` on the prompt and the padding (plus `ref_logps` (2B,) once reference log-probabilities are
precomputed, see `litgpt.train.preference`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from litgpt.data.base import IGNORE_INDEX, DataModule, pick_example, require_tokenizer, split_rows
from litgpt.data.json_data import _JSONPath
from litgpt.data.sft import hf_dataset_file, hf_dataset_files, read_rows
from litgpt.prompts import ROLES, PromptStyle

_SUFFIXES = (".json", ".jsonl", ".parquet")


# --------------------------------------------------------------------------------------------------------
# rows


def parse_pair(row: Any, where: str) -> dict[str, Any]:
    """One row -> {"prompt": str or list of messages, "chosen": str, "rejected": str}, or a one-line ValueError
    naming `where` (the file and row) and what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"{where} is a {type(row).__name__}, expected an object with prompt, chosen and rejected")
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        has = ", ".join(sorted(map(str, row))) or "no keys"
        raise ValueError(f"{where} has no {' or '.join(repr(k) for k in missing)} (it has: {has})")
    prompt = row.get("prompt")
    answers, prefixes = [], []
    for key in ("chosen", "rejected"):
        value = row[key]
        if isinstance(value, str):
            answers.append(value)
            prefixes.append([])
        elif isinstance(value, list) and value:
            _check_messages(value, f"{where}: {key!r}")
            if value[-1]["role"] != "assistant":
                raise ValueError(f"{where}: {key!r} must end with an assistant message")
            answers.append(value[-1]["content"])
            prefixes.append(value[:-1])
        else:
            raise ValueError(f"{where}: {key!r} must be a string or a non-empty list of messages, got {value!r}"[:300])
    if prefixes[0] != prefixes[1]:
        raise ValueError(f"{where}: 'chosen' and 'rejected' have different messages before their answers")
    if isinstance(prompt, list):
        _check_messages(prompt, f"{where}: 'prompt'")
        prompt = prompt + prefixes[0]
    elif prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"{where}: 'prompt' must be a string or a list of messages, got {type(prompt).__name__}")
    elif prefixes[0]:
        prompt = prefixes[0]  # the conversation so far (a "prompt" string, if any, is its first user message)
    if prompt is None or not (prompt.strip() if isinstance(prompt, str) else any(m["content"].strip() for m in prompt)):
        raise ValueError(f"{where} has an empty prompt")
    chosen, rejected = answers
    if not chosen.strip() or not rejected.strip():
        raise ValueError(f"{where} has an empty {'chosen' if not chosen.strip() else 'rejected'} response")
    if chosen == rejected:
        raise ValueError(f"{where}: 'chosen' and 'rejected' are identical")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _check_messages(messages: list, where: str) -> None:
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}, message {j} must be {{'role': system|user|assistant, 'content': str}}, "
                             f"got {m!r}"[:300])


def parse_pairs(rows: Sequence[Any], source: str) -> list[dict[str, Any]]:
    """Every row checked by `parse_pair` (rows named by their 0-based index in `source`)."""
    if not rows:
        raise ValueError(f"{source} holds no rows")
    return [parse_pair(row, f"{source}: row {i}") for i, row in enumerate(rows)]


# --------------------------------------------------------------------------------------------------------
# tokens


def fit_pair(prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, limit: int, keep_first: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Cuts a tokenized pair so that prompt + the longer response is at most `limit` tokens: tokens leave the
    start of the prompt (after its first token when `keep_first`, the bos), the responses are cut at the end
    only when even a prompt of a few tokens does not leave them room. Returns the pieces and whether anything
    was cut."""
    longest = max(chosen.numel(), rejected.numel())
    if limit <= 0 or prompt.numel() + longest <= limit:
        return prompt, chosen, rejected, False
    head = prompt[:1] if keep_first else prompt[:0]
    min_prompt = min(prompt.numel(), max(head.numel() + 1, limit // 4))
    room = limit - longest  # tokens left for the prompt
    if room >= min_prompt:
        keep = room - head.numel()
        return torch.cat((head, prompt[prompt.numel() - keep:])), chosen, rejected, True
    keep = min_prompt - head.numel()
    prompt = torch.cat((head, prompt[prompt.numel() - keep:]))
    budget = limit - prompt.numel()
    return prompt, chosen[:budget], rejected[:budget], True


class PreferenceDataset(Dataset):
    """Tokenized pairs: item i is {"prompt_ids", "chosen_ids", "rejected_ids"} (1-D long tensors), plus
    "ref_logps" (2,) (chosen, rejected) once `reference_logps` (N, 2) is set."""

    def __init__(self, samples: list[dict[str, torch.Tensor]]) -> None:
        self.samples = samples
        self.reference_logps: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.samples[i])
        if self.reference_logps is not None:
            item["ref_logps"] = self.reference_logps[i]
        return item

    def digest(self) -> str:
        """A hash of every token of every pair (identifies the data of cached reference values)."""
        h = hashlib.sha256()
        for s in self.samples:
            for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
                h.update(s[key].numpy().tobytes())
                h.update(b"|")
        return h.hexdigest()


def collate_pairs(samples: Sequence[dict[str, torch.Tensor]], pad_id: int = 0, ignore_index: int = IGNORE_INDEX
                  ) -> dict[str, torch.Tensor]:
    """B pairs -> the training loop's batch of 2B shifted sequences, chosen rows first (see the module docs)."""
    if not samples:
        raise ValueError("cannot collate an empty list of pairs")
    seqs = []
    for key in ("chosen_ids", "rejected_ids"):
        for s in samples:
            ids = torch.cat((s["prompt_ids"], s[key]))
            labels = ids.clone()
            labels[: s["prompt_ids"].numel()] = ignore_index
            seqs.append((ids[:-1], labels[1:]))
    longest = max(ids.numel() for ids, _ in seqs)
    input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), longest), ignore_index, dtype=torch.long)
    for row, (ids, lab) in enumerate(seqs):
        input_ids[row, : ids.numel()] = ids
        labels[row, : lab.numel()] = lab
    batch = {"input_ids": input_ids, "labels": labels}
    if "ref_logps" in samples[0]:
        ref = torch.stack([s["ref_logps"] for s in samples]).float()  # (B, 2)
        batch["ref_logps"] = torch.cat((ref[:, 0], ref[:, 1]))
    return batch


# --------------------------------------------------------------------------------------------------------
# data modules


@dataclass
class PreferenceDataModule(DataModule):
    """The base of the preference data modules: subclasses say where the rows come from (`load_rows`)."""

    prompt_style: Union[str, PromptStyle, None] = None
    """How a prompt is formatted: a style name from litgpt.prompts (default: the model's, set by the verb)."""
    val_split_fraction: float = 0.05
    """Fraction of the pairs held out for validation (when the data has no validation split of its own)."""
    ignore_index: int = IGNORE_INDEX
    """Label value of the tokens that take no loss (prompt, padding)."""
    seed: int = 42
    """Seed of the train / validation split."""

    def __post_init__(self) -> None:
        if isinstance(self.prompt_style, str):
            self.prompt_style = PromptStyle.from_name(self.prompt_style)
        self._rows: Optional[tuple[list, list]] = None
        self.load_notes: list[str] = []  # what reading the rows found (e.g. rows skipped)
        self.notes: list[str] = []  # what the run prints before training

    # ---- what subclasses provide
    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train pairs, validation pairs), each checked by `parse_pair`."""
        raise NotImplementedError

    def is_local(self) -> bool:
        """Whether the rows can be read without downloading (then `check` reads them before any work)."""
        return False

    # ---- DataModule
    def check(self) -> None:
        if self.is_local():
            self.rows()

    def split(self, pairs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return split_rows(pairs, self.val_split_fraction, self.seed)

    def get_prompt_style(self) -> PromptStyle:
        style = self.prompt_style
        if style is None:
            return PromptStyle.from_name("default")
        return PromptStyle.from_name(style) if isinstance(style, str) else style

    def format_prompt(self, prompt: Union[str, list[dict[str, str]]]) -> str:
        style = self.get_prompt_style()
        if isinstance(prompt, str):
            return style.apply(prompt)
        return style.apply_conversation(prompt)

    def setup(self, stage: str = "") -> None:
        """Tokenizes every pair (cutting over-long ones, see `fit_pair`) into `train_dataset` / `val_dataset`."""
        tokenizer = require_tokenizer(self)
        train, val = self.rows()
        limit = self.max_seq_length + 1 if self.max_seq_length and self.max_seq_length > 0 else 0  # inputs + 1 label
        eos = tokenizer.eos_id is not None
        self.notes = list(self.load_notes)
        datasets = []
        for name, pairs in (("training", train), ("validation", val)):
            samples, cut = [], 0
            for pair in pairs:
                prompt = tokenizer.encode(self.format_prompt(pair["prompt"])).long()
                chosen = tokenizer.encode(pair["chosen"], bos=False, eos=eos).long()
                rejected = tokenizer.encode(pair["rejected"], bos=False, eos=eos).long()
                keep_first = tokenizer.bos_id is not None and prompt.numel() > 0 and int(prompt[0]) == tokenizer.bos_id
                prompt, chosen, rejected, was_cut = fit_pair(prompt, chosen, rejected, limit, keep_first)
                cut += was_cut
                samples.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
            if cut:
                self.notes.append(f"{cut:,} of {len(pairs):,} {name} pairs are longer than max_seq_length="
                                  f"{self.max_seq_length}: their prompts were cut from the start")
            datasets.append(PreferenceDataset(samples))
        self.train_dataset, self.val_dataset = datasets

    def collate(self, samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return collate_pairs(samples, pad_id=self.pad_id, ignore_index=self.ignore_index)

    def example_prompt(self, which: Any = "first") -> Optional[str]:
        _, val = self.rows()
        return self.format_prompt(val[pick_example(len(val), which, self.seed)]["prompt"])


@dataclass
class Preference(PreferenceDataModule, _JSONPath):
    """Your own preference pairs from `json_path`: a file (split by `val_split_fraction`) or a folder holding
    `train` and `val` files (.json, .jsonl or .parquet). See the module docs for the row formats."""

    val_split_fraction: Optional[float] = None
    """Fraction of the pairs held out for validation when json_path is a file (default 0.05)."""

    def __post_init__(self) -> None:
        self.json_path = Path(self.json_path)
        super().__post_init__()

    def is_local(self) -> bool:
        return True

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        path = self.json_path
        if not path.exists():
            raise FileNotFoundError(f"json_path {path} does not exist")
        if path.is_dir():
            if self.val_split_fraction is not None:
                raise ValueError(f"json_path {path} is a folder with its own val file: leave val_split_fraction unset")
            files = []
            for split in ("train", "val"):
                found = [path / f"{split}{suffix}" for suffix in _SUFFIXES if (path / f"{split}{suffix}").is_file()]
                if not found:
                    raise FileNotFoundError(f"{path} holds no {split}.json, {split}.jsonl or {split}.parquet")
                files.append(found[0])
            return parse_pairs(read_rows(files[0]), str(files[0])), parse_pairs(read_rows(files[1]), str(files[1]))
        pairs = parse_pairs(read_rows(path), str(path))
        self.val_split_fraction = 0.05 if self.val_split_fraction is None else self.val_split_fraction
        return self.split(pairs)


@dataclass
class UltraFeedback(PreferenceDataModule):
    """UltraFeedback binarized (HuggingFaceH4/ultrafeedback_binarized, MIT): about 61k training and 2k test
    prompts, each with the best-rated of four model answers as chosen and a random other one as rejected."""

    repo_id: str = "HuggingFaceH4/ultrafeedback_binarized"
    """The dataset repository on the Hugging Face Hub."""
    train_split: str = "train_prefs"
    """The split trained on (its parquet files are data/<train_split>-*.parquet)."""
    val_split: str = "test_prefs"
    """The split validated on."""
    max_rows: Optional[int] = None
    """Use only the first this many training pairs (None: all)."""
    access_token: Optional[str] = field(default=None, repr=False)
    """Hugging Face token (default: the HF_TOKEN environment variable)."""
    download_dir: Path = Path("data/ultrafeedback_binarized")
    """Folder the parquet files are downloaded to."""

    def __post_init__(self) -> None:
        self.download_dir = Path(self.download_dir)
        super().__post_init__()

    def prepare_data(self) -> None:
        patterns = [f"data/{split}-*.parquet" for split in (self.train_split, self.val_split)]
        hf_dataset_files(self.repo_id, self.download_dir, patterns, self.access_token)

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.prepare_data()
        out = []
        for split in (self.train_split, self.val_split):
            files = sorted((self.download_dir / "data").glob(f"{split}-*.parquet"))
            if not files:
                raise FileNotFoundError(f"{self.download_dir / 'data'} holds no {split}-*.parquet file")
            pairs = []
            for path in files:
                pairs += parse_pairs(read_rows(path), str(path))
            out.append(pairs)
        train, val = out
        return (train[: self.max_rows] if self.max_rows else train), val


@dataclass
class AnthropicHH(PreferenceDataModule):
    """Anthropic's helpful and harmless conversations (Anthropic/hh-rlhf, MIT): each row is two whole
    conversations ("\\n\\nHuman: ... \\n\\nAssistant: ...") that differ in the last answer. Rows that do not
    parse into such a pair are skipped (the count is reported)."""

    subsets: tuple[str, ...] = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
    """Folders of the repository to use (each holds train.jsonl.gz and test.jsonl.gz)."""
    repo_id: str = "Anthropic/hh-rlhf"
    """The dataset repository on the Hugging Face Hub."""
    max_rows: Optional[int] = None
    """Use only the first this many training pairs (None: all)."""
    access_token: Optional[str] = field(default=None, repr=False)
    """Hugging Face token (default: the HF_TOKEN environment variable)."""
    download_dir: Path = Path("data/hh-rlhf")
    """Folder the files are downloaded to."""

    def __post_init__(self) -> None:
        self.download_dir = Path(self.download_dir)
        super().__post_init__()

    def prepare_data(self) -> None:
        for subset in self.subsets:
            for split in ("train", "test"):
                hf_dataset_file(self.repo_id, f"{subset}/{split}.jsonl.gz", self.download_dir, self.access_token)

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.prepare_data()
        out, skipped = [], 0
        for split in ("train", "test"):
            pairs = []
            for subset in self.subsets:
                path = self.download_dir / subset / f"{split}.jsonl.gz"
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    for line in f:
                        if not line.strip():
                            continue
                        pair = hh_pair(json.loads(line))
                        if pair is None:
                            skipped += 1
                        else:
                            pairs.append(pair)
            out.append(pairs)
        if skipped:
            self.load_notes = [f"AnthropicHH: skipped {skipped:,} rows that are not two conversations differing "
                                  "only in the last answer"]
        train, val = out
        return (train[: self.max_rows] if self.max_rows else train), val


def hh_conversation(text: str) -> Optional[list[dict[str, str]]]:
    """"\\n\\nHuman: a\\n\\nAssistant: b..." -> messages, or None when the text does not alternate that way."""
    messages = []
    for part in text.split("\n\nHuman: ")[1:]:
        user, sep, rest = part.partition("\n\nAssistant: ")
        if not sep:
            return None
        messages.append({"role": "user", "content": user.strip()})
        for answer in rest.split("\n\nAssistant: "):
            messages.append({"role": "assistant", "content": answer.strip()})
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        return None
    return messages


def hh_pair(row: dict[str, Any]) -> Optional[dict[str, Any]]:
    """An hh-rlhf row as a pair (the shared conversation as the prompt), or None when it is not one."""
    chosen, rejected = hh_conversation(row.get("chosen", "")), hh_conversation(row.get("rejected", ""))
    if chosen is None or rejected is None:
        return None
    try:
        return parse_pair({"chosen": chosen, "rejected": rejected}, "row")
    except ValueError:
        return None
