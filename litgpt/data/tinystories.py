"""`TinyStories`: 2.1M short stories in simple English (Eldan & Li 2023), for pretraining small models."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from litgpt.data.sft import hf_dataset_file
from litgpt.data.text import TokenizedCorpus, _file_fingerprint


@dataclass
class TinyStories(TokenizedCorpus):
    """TinyStories from the Hugging Face Hub (`roneneldan/TinyStories`, TinyStories_all_data.tar.gz): the
    first JSON shard is the validation set, the others the training set; each story is one document."""

    data_path: Path = Path("data/tinystories")
    """Folder the archive is downloaded to and extracted in; the tokenized cache lives beside it."""
    seed: int = 42
    """Kept for LitGPT compatibility (the training loop's seed orders the samples)."""
    num_workers: int = 8
    """Processes that tokenize the stories in parallel."""
    repo_id: str = field(default="roneneldan/TinyStories", kw_only=True)
    """The dataset repository on the Hugging Face Hub."""
    access_token: Optional[str] = field(default=None, kw_only=True, repr=False)
    """Hugging Face token (not needed for this public dataset)."""

    ARCHIVE = "TinyStories_all_data.tar.gz"

    def __post_init__(self) -> None:
        self.data_path = Path(self.data_path)

    def shards(self) -> list[Path]:
        """The extracted JSON shards, sorted (data00.json first)."""
        return sorted((self.data_path / "TinyStories_all_data").glob("*.json"))

    def download(self) -> None:
        """Downloads and extracts the archive unless the shards are there."""
        if self.shards():
            return
        archive = hf_dataset_file(self.repo_id, self.ARCHIVE, self.data_path, self.access_token)
        target = self.data_path / "TinyStories_all_data"
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuse paths outside the target
                tar.extractall(target, filter="data")
            else:
                tar.extractall(target)
        if len(self.shards()) < 2:
            raise ValueError(f"{archive} should hold at least 2 JSON shards, found {len(self.shards())}")

    def prepare_data(self) -> None:
        self.download()
        super().prepare_data()

    def _has_val_split(self) -> bool:
        return True

    def _fingerprint(self) -> Any:
        shards = self.shards()
        if len(shards) < 2:
            raise FileNotFoundError(f"{self.data_path} holds no extracted TinyStories shards: call prepare_data()")
        return _file_fingerprint(shards)

    def _documents(self, split: str) -> Iterator[str]:
        shards = self.shards()
        for path in shards[:1] if split == "val" else shards[1:]:
            for i, row in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                if not isinstance(row, dict) or not isinstance(row.get("story"), str):
                    raise ValueError(f"{path}: row {i} has no 'story' string")
                yield row["story"].strip()

    def _cache_root(self) -> Path:
        return self.data_path / "tokenized"
