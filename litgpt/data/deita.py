"""`Deita`: 10k multi-turn conversations selected for instruction tuning (HuggingFaceH4/deita-10k-v0-sft)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from litgpt.data.alpaca import DownloadedSFT, _data_files
from litgpt.data.sft import check_messages_rows, expand_turns, hf_dataset_files, read_rows


@dataclass
class Deita(DownloadedSFT):
    """Deita: rows {"messages": [{"role", "content"}, ...]} (train_sft / test_sft parquet files; needs pyarrow).
    Each assistant turn (or only the first, by default) is a sample whose prompt is the conversation so far."""

    val_split_fraction: float = field(default=0.05, kw_only=True, repr=False)
    """Unused: Deita has its own test split."""
    include_multiturn_conversations: bool = False
    """One sample per assistant turn instead of only the first."""
    download_dir: Path = Path("data/deita")
    """Folder the dataset's files are downloaded to."""
    repo_id: str = "HuggingFaceH4/deita-10k-v0-sft"
    """The dataset repository on the Hugging Face Hub."""
    access_token: Optional[str] = field(default=None, kw_only=True, repr=False)
    """Hugging Face token (default: the HF_TOKEN environment variable)."""

    def download(self) -> None:
        hf_dataset_files(self.repo_id, self.download_dir, ("*train_sft*", "*test_sft*"), self.access_token)

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        out = []
        for split in ("train_sft", "test_sft"):
            rows = []
            for path in _data_files(self.download_dir, split):
                cleaned = []
                for row in read_rows(path):
                    if isinstance(row, dict) and isinstance(row.get("messages"), list):
                        # drop empty system turns and trailing user turns without an answer
                        msgs = [m for m in row["messages"]
                                if not (isinstance(m, dict) and m.get("role") == "system" and not m.get("content"))]
                        while msgs and not (isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant"):
                            msgs.pop()
                        row = {"messages": msgs}
                    cleaned.append(row)
                rows.extend(check_messages_rows(cleaned, str(path)))
            out.append(expand_turns(rows, self.include_multiturn_conversations))
        return out[0], out[1]
