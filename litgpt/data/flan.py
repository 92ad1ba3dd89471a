"""`FLAN`: the FLAN collection of templated tasks (`Muennighoff/flan` on the Hugging Face Hub)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from litgpt.data.alpaca import DownloadedSFT
from litgpt.data.sft import check_rows, download_url, hf_dataset_files, read_rows
from litgpt.prompts import PromptStyle


@dataclass
class FLAN(DownloadedSFT):
    """FLAN: rows {"inputs", "targets"} of the chosen subsets' train files (validation: their test files)."""

    val_split_fraction: float = field(default=0.05, kw_only=True, repr=False)
    """Unused: FLAN has its own test files."""
    prompt_style: Union[str, PromptStyle] = "flan"
    """How a row becomes a prompt (default: FLAN's own format)."""
    download_dir: Path = Path("data/flan")
    """Folder the JSONL files are downloaded to."""
    url: str = "https://huggingface.co/datasets/Muennighoff/flan/resolve/main"
    """Base URL of the files: a subset's are `{url}/train/{subset}_train.jsonl` and `{url}/test/{subset}_test.jsonl`."""
    subsets: Optional[str] = None
    """Comma-separated task names (e.g. "aeslc_10templates,ag_news_subset_10templates"); None downloads every
    task (large) from the Hub repository `repo_id`."""
    repo_id: str = field(default="Muennighoff/flan", kw_only=True)
    """The dataset repository on the Hugging Face Hub (used when `subsets` is None)."""
    access_token: Optional[str] = field(default=None, kw_only=True, repr=False)
    """Hugging Face token (default: the HF_TOKEN environment variable)."""

    def _names(self) -> list[str]:
        return [s.strip() for s in (self.subsets or "").split(",") if s.strip()]

    def download(self) -> None:
        names = self._names()
        if not names:
            hf_dataset_files(self.repo_id, self.download_dir, ["*train*.jsonl", "*test*.jsonl"], self.access_token)
            return
        for name in names:
            for split in ("train", "test"):
                download_url(f"{self.url}/{split}/{name}_{split}.jsonl", self.download_dir / f"{name}_{split}.jsonl")

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        names = self._names()
        out = []
        for split in ("train", "test"):
            files = sorted(p for p in self.download_dir.rglob(f"*{split}*.jsonl")
                           if not names or any(n in p.name for n in names))
            if not files:
                raise FileNotFoundError(f"{self.download_dir} holds no FLAN {split} files for subsets {names or 'all'}")
            rows = []
            for path in files:
                raw = check_rows(read_rows(path), str(path), required=("inputs", "targets"), optional_str=())
                rows.extend({"instruction": r["inputs"], "output": r["targets"]} for r in raw)
            out.append(rows)
        return out[0], out[1]
