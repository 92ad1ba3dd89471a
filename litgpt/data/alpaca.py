"""Alpaca-format instruction datasets: `Alpaca` (the cleaned 52k), `AlpacaGPT4` (answers by GPT-4) and
`Alpaca2k` (a 2,000-row sample on the Hugging Face Hub). Rows are {"instruction", "input", "output"}."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from litgpt.data.sft import SFTDataModule, check_rows, download_url, hf_dataset_files, read_rows


class DownloadedSFT(SFTDataModule):
    """An instruction dataset fetched once into `download_dir` by `prepare_data`. Subclasses declare their
    own fields (LitGPT's, in its order) and say how to `download` and read their files."""

    download_dir: Path

    def __post_init__(self) -> None:
        super().__post_init__()
        self.download_dir = Path(self.download_dir)

    def download(self) -> None:
        """Fetches the files `load_rows` reads."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        self.download()

    def load_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.download()
        return self.rows_from_files()

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        raise NotImplementedError


@dataclass
class Alpaca(DownloadedSFT):
    """The cleaned Alpaca dataset (52k instructions; tloen/alpaca-lora's `alpaca_data_cleaned_archive.json`)."""

    val_split_fraction: float = 0.03865
    """Fraction held out for validation (0.03865 leaves 2,000 rows, as LitGPT does)."""
    download_dir: Path = Path("data/alpaca")
    """Folder the JSON file is downloaded to."""
    file_url: str = field(repr=False, default=(
        "https://raw.githubusercontent.com/tloen/alpaca-lora/main/alpaca_data_cleaned_archive.json"))
    """Where the JSON file comes from."""
    file_name: str = field(repr=False, default="alpaca_data_cleaned_archive.json")
    """Its name in download_dir."""

    def download(self) -> None:
        download_url(self.file_url, self.download_dir / self.file_name)

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        path = self.download_dir / self.file_name
        return self.split(check_rows(read_rows(path), str(path)))


@dataclass
class AlpacaGPT4(Alpaca):
    """Alpaca's instructions answered by GPT-4 (Peng et al. 2023, `alpaca_gpt4_data.json`)."""

    val_split_fraction: float = 0.03847
    """Fraction held out for validation (2,000 rows, as LitGPT does)."""
    download_dir: Path = Path("data/alpacagpt4")
    """Folder the JSON file is downloaded to."""
    file_url: str = field(repr=False, default=(
        "https://raw.githubusercontent.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM/main/data/alpaca_gpt4_data.json"))
    """Where the JSON file comes from."""
    file_name: str = field(repr=False, default="alpacagpt4_data_cleaned_archive.json")
    """Its name in download_dir."""


@dataclass
class Alpaca2k(Alpaca):
    """A 2,000-row sample of Alpaca on the Hugging Face Hub (`mhenrichsen/alpaca_2k_test`), for quick runs.
    (`file_url` / `file_name` are inherited from `Alpaca` and unused.)"""

    val_split_fraction: float = 0.05
    """Fraction held out for validation."""
    download_dir: Path = Path("data/alpaca2k")
    """Folder the dataset's files are downloaded to."""
    file_name: str = field(repr=False, default="alpaca2k_data_cleaned_archive.json")
    """Unused (LitGPT's field)."""
    repo_id: str = field(repr=False, default="mhenrichsen/alpaca_2k_test")
    """The dataset repository on the Hugging Face Hub."""
    access_token: Optional[str] = field(default=None, kw_only=True, repr=False)
    """Hugging Face token (default: the HF_TOKEN environment variable)."""

    def download(self) -> None:
        hf_dataset_files(self.repo_id, self.download_dir, ("*.parquet", "*.json", "*.jsonl"), self.access_token)

    def rows_from_files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = []
        for path in _data_files(self.download_dir):
            rows.extend(check_rows(read_rows(path), str(path)))
        return self.split(rows)


def _data_files(folder: Path, split: Optional[str] = None) -> list[Path]:
    """The .parquet / .json / .jsonl files under `folder` (only those naming `split`, when given)."""
    files = sorted(p for ext in ("*.parquet", "*.jsonl", "*.json") for p in Path(folder).rglob(ext)
                   if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if split is not None:
        files = [p for p in files if split in p.name]
    if not files:
        raise FileNotFoundError(f"{folder} holds no dataset files{f' for the {split} split' if split else ''}")
    return files

