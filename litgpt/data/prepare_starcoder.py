"""Tokenizes Starcoder data (`*.parquet` files with a `content` column) into litdata token chunks for
`TinyLlama`.

    python -m litgpt.data.prepare_starcoder --input_dir data/starcoderdata --output_dir data/starcoder \
        --tokenizer_path checkpoints/meta-llama/Llama-2-7b-hf

Needs the `litdata` and `pyarrow` packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from litgpt.data.lit_data import TokenRecipe, optimize_tokens
from litgpt.tokenizer import Tokenizer


class StarcoderDataRecipe(TokenRecipe):
    """One work item per parquet file; one token tensor per source file in it."""

    def prepare_structure(self, input_dir: Any) -> list[str]:
        return sorted(str(p) for p in Path(input_dir).rglob("*.parquet"))

    def prepare_item(self, item_metadata: Any) -> Iterator[Any]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("reading parquet files needs pyarrow: pip install 'litgpt[data]'") from None
        parquet = pq.ParquetFile(item_metadata)
        for group in range(parquet.num_row_groups):
            for text in parquet.read_row_group(group, columns=["content"]).column("content").to_pylist():
                if text:
                    yield self.encode(text)


def prepare(
    input_dir: Path = Path("data/starcoderdata"),
    output_dir: Path = Path("data/starcoder"),
    tokenizer_path: Path = Path("checkpoints/Llama-2-7b-hf"),
    chunk_size: int = (2049 * 8192),
    fast_dev_run: bool = False,
) -> None:
    """Tokenizes the Starcoder parquet files of `input_dir` into token chunks in `output_dir`.

    Args:
        input_dir: folder of Starcoder `.parquet` files.
        output_dir: where the chunks are written.
        tokenizer_path: checkpoint folder holding the tokenizer.
        chunk_size: tokens per chunk file.
        fast_dev_run: process only a few files (a quick check).
    """
    optimize_tokens(StarcoderDataRecipe(Tokenizer(tokenizer_path), chunk_size), Path(input_dir), Path(output_dir),
                    fast_dev_run=fast_dev_run)


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(prepare)
