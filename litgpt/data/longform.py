"""`LongForm`: long answers to instructions derived from documents (Köksal et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from litgpt.data.alpaca import DownloadedSFT
from litgpt.data.sft import check_rows, download_url, read_rows
from litgpt.prompts import PromptStyle


@dataclass
class LongForm(DownloadedSFT):
    """LongForm: rows {"input", "output"} from its GitHub release (train.json and val.json)."""

    val_split_fraction: float = field(default=0.05, kw_only=True, repr=False)
    """Unused: LongForm has its own validation file."""
    prompt_style: Union[str, PromptStyle] = "longform"
    """How a row becomes a prompt (default: LongForm's own format)."""
    download_dir: Path = Path("data/longform")
    """Folder the JSON files are downloaded to."""
    base_url: str = field(default="https://raw.githubusercontent.com/akoksal/LongForm/main/dataset", kw_only=True)
    """Where train.json and val.json come from."""

    def download(self) -> None:
        for split in ("train", "val"):
            download_url(f"{self.base_url}/{split}.json", self.download_dir / f"{split}.json")

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        out = []
        for split in ("train", "val"):
            path = self.download_dir / f"{split}.json"
            rows = check_rows(read_rows(path), str(path), required=("input", "output"), optional_str=())
            out.append([{"instruction": r["input"], "output": r["output"]} for r in rows])
        return out[0], out[1]
