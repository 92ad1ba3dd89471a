"""`FLAN`: the FLAN collection of templated tasks (`Muennighoff/flan` on the Hugging Face Hub)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from litgpt.data.alpaca import DownloadedSFT
from litgpt.data.sft import check_rows, hf_dataset_files, read_rows
from litgpt.prompts import PromptStyle


class FLANStyle(PromptStyle):
    """FLAN's format: the templated task text, a blank line, then the target."""

    name = "flan"
    user_format = "{content}\n\n"


@dataclass(kw_only=True)
class FLAN(DownloadedSFT):
    """FLAN: rows {"inputs", "targets"} of the chosen subsets' train files (validation: their test files)."""

    prompt_style: Union[str, PromptStyle] = field(default_factory=FLANStyle)
    """How a row becomes a prompt (default: FLAN's own format)."""
    subsets: Optional[str] = None
    """Comma-separated task names (e.g. "aeslc,ag_news_subset"); None downloads every task (large)."""
    download_dir: Path = Path("data/flan")
    """Folder the JSONL files are downloaded to."""
    repo_id: str = "Muennighoff/flan"
    """The dataset repository on the Hugging Face Hub."""

    def _names(self) -> list[str]:
        return [s.strip() for s in (self.subsets or "").split(",") if s.strip()]

    def download(self) -> None:
        names = self._names() or [""]
        patterns = [f"*{name}*{split}*.jsonl" for name in names for split in ("train", "test")]
        hf_dataset_files(self.repo_id, self.download_dir, patterns, self.access_token)

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
