"""`OpenWebText`: the open reproduction of GPT-2's WebText (8M documents), for pretraining."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from litgpt.data.sft import hf_dataset_files, read_rows
from litgpt.data.text import TokenizedCorpus, _file_fingerprint


@dataclass
class OpenWebText(TokenizedCorpus):
    """OpenWebText from the Hugging Face Hub's parquet export of `Skylion007/openwebtext` (needs pyarrow:
    `pip install 'litgpt[data]'`). Each document's "text" is tokenized once; the last `val_split_fraction`
    of the tokens is the validation set."""

    data_path: Path = Path("data/openwebtext")
    """Folder the parquet shards are downloaded to; the tokenized cache lives beside them."""
    val_split_fraction: float = 0.0005
    """Fraction of the tokens held out for validation (about 4,000 documents)."""
    seed: int = 42
    """Kept for LitGPT compatibility (the training loop's seed orders the samples)."""
    num_workers: int = 8
    """Processes that tokenize the documents in parallel."""
    repo_id: str = field(default="Skylion007/openwebtext", kw_only=True)
    """The dataset repository on the Hugging Face Hub."""
    revision: str = field(default="refs/convert/parquet", kw_only=True)
    """The repository revision holding the parquet export."""
    access_token: Optional[str] = field(default=None, kw_only=True, repr=False)
    """Hugging Face token (not needed for this public dataset)."""

    def __post_init__(self) -> None:
        self.data_path = Path(self.data_path)
        if not 0 < self.val_split_fraction < 1:
            raise ValueError(f"val_split_fraction must be between 0 and 1, got {self.val_split_fraction}")

    def shards(self) -> list[Path]:
        """The downloaded shards (.parquet, or .jsonl with a "text" field), sorted."""
        raw = self.data_path / "raw"
        return sorted(p for ext in ("*.parquet", "*.jsonl") for p in raw.rglob(ext)) if raw.is_dir() else []

    def download(self) -> None:
        if not self.shards():
            hf_dataset_files(self.repo_id, self.data_path / "raw", ("*.parquet",), self.access_token, self.revision)

    def prepare_data(self) -> None:
        self.download()
        super().prepare_data()

    def _fingerprint(self) -> Any:
        shards = self.shards()
        if not shards:
            raise FileNotFoundError(f"{self.data_path / 'raw'} holds no OpenWebText shards: call prepare_data()")
        return _file_fingerprint(shards)

    def _documents(self, split: str) -> Iterator[str]:
        for path in self.shards():
            for i, row in enumerate(read_rows(path)):
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ValueError(f"{path}: row {i} has no 'text' string")
                yield row["text"]

    def _cache_root(self) -> Path:
        return self.data_path / "tokenized"
