"""`Dolly`: databricks-dolly-15k, human-written instructions with optional context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from litgpt.data.alpaca import DownloadedSFT
from litgpt.data.sft import check_rows, hf_dataset_file, read_rows


@dataclass
class Dolly(DownloadedSFT):
    """databricks-dolly-15k: rows {"instruction", "context", "response"} become {"instruction", "input", "output"}."""

    val_split_fraction: float = 0.1
    """Fraction held out for validation."""
    download_dir: Path = Path("data/dolly")
    """Folder the JSONL file is downloaded to."""
    repo_id: str = "databricks/databricks-dolly-15k"
    """The dataset repository on the Hugging Face Hub."""
    file_name: str = "databricks-dolly-15k.jsonl"
    """The file of the repository holding the rows."""
    access_token: Optional[str] = field(default=None, kw_only=True, repr=False)
    """Hugging Face token (default: the HF_TOKEN environment variable)."""

    def download(self) -> None:
        hf_dataset_file(self.repo_id, self.file_name, self.download_dir, self.access_token)

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        path = self.download_dir / self.file_name
        raw = check_rows(read_rows(path), str(path), required=("instruction", "context", "response"),
                         optional_str=())
        rows = [{"instruction": r["instruction"], "input": r["context"], "output": r["response"]} for r in raw]
        return self.split(rows)
