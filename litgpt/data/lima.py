"""`LIMA`: 1,000 curated conversations (Zhou et al. 2023). Gated on the Hugging Face Hub: needs an access token."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from litgpt.data.alpaca import DownloadedSFT
from litgpt.data.sft import expand_turns, hf_dataset_file, read_rows


@dataclass
class LIMA(DownloadedSFT):
    """LIMA: rows {"conversations": [user, assistant, user, ...]}; each assistant turn (or only the first, by
    default) becomes a sample whose prompt is the conversation so far in the prompt style."""

    val_split_fraction: float = 0.1
    """Fraction held out for validation."""
    include_multiturn_conversations: bool = False
    """One sample per assistant turn instead of only the first."""
    repo_id: str = "GAIR/lima"
    """The dataset repository on the Hugging Face Hub."""
    access_token: Optional[str] = field(default=None, repr=False)
    """Hugging Face token: LIMA is gated (default: the HF_TOKEN environment variable)."""
    download_dir: Path = field(default=Path("data/lima"), kw_only=True)
    """Folder the JSONL file is downloaded to."""

    def download(self) -> None:
        hf_dataset_file(self.repo_id, "train.jsonl", self.download_dir, self.access_token)

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        path = self.download_dir / "train.jsonl"
        conversations = []
        for i, row in enumerate(read_rows(path)):
            turns = row.get("conversations") if isinstance(row, dict) else None
            if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, str) for t in turns):
                raise ValueError(f"{path}: row {i} needs 'conversations', a list of at least 2 strings")
            roles = ("user", "assistant")
            messages = [{"role": roles[j % 2], "content": t} for j, t in enumerate(turns[: len(turns) // 2 * 2])]
            conversations.append({"messages": messages})
        train, val = self.split(conversations)
        multi = self.include_multiturn_conversations
        return expand_turns(train, multi), expand_turns(val, multi)
