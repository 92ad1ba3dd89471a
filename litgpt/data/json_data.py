"""`JSON`: instruction tuning on your own rows, from a .json / .jsonl file or a folder with train and val files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from litgpt.data.sft import SFTDataModule, check_messages_rows, check_rows, read_rows

_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass
class _JSONPath:
    """The `json_path` field of the modules that read your own files (`JSON`, `Preference`), as their first field."""

    json_path: Path
    """A .json / .jsonl / .parquet file, or a folder with train and val files (the same suffixes)."""


@dataclass
class JSON(SFTDataModule, _JSONPath):
    """Instruction data from `json_path`: a file of rows (split by `val_split_fraction`) or a folder holding
    `train.json` and `val.json` (or .jsonl). A row is {"instruction", "input" (optional), "output"}, or
    {"messages": [{"role", "content"}, ...]} ending with the assistant's answer.

    `json_path` is the first field (a dataclass base listed last puts its fields first), as in LitGPT."""

    val_split_fraction: Optional[float] = None
    """Fraction of the rows held out for validation when json_path is a file (default 0.05)."""

    def __post_init__(self) -> None:
        self.json_path = Path(self.json_path)
        super().__post_init__()

    def is_local(self) -> bool:
        return True

    def _split_files(self) -> tuple[Path, Path]:
        found = {}
        for split in ("train", "val"):
            candidates = [self.json_path / f"{split}{suffix}" for suffix in _SUFFIXES]
            existing = [c for c in candidates if c.is_file()]
            if not existing:
                raise FileNotFoundError(f"{self.json_path} holds no {split}.json or {split}.jsonl")
            found[split] = existing[0]
        return found["train"], found["val"]

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        path = self.json_path
        if not path.exists():
            raise FileNotFoundError(f"json_path {path} does not exist")
        if path.is_dir():
            if self.val_split_fraction is not None:
                raise ValueError(f"json_path {path} is a folder with its own val file: leave val_split_fraction unset")
            train_file, val_file = self._split_files()
            return _checked(train_file), _checked(val_file)
        rows = _checked(path)
        self.val_split_fraction = 0.05 if self.val_split_fraction is None else self.val_split_fraction
        return self.split(rows)


def _checked(path: Path) -> list[dict[str, Any]]:
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    if isinstance(rows[0], dict) and "messages" in rows[0]:
        return check_messages_rows(rows, str(path))
    return check_rows(rows, str(path))
