"""Tokenizes SlimPajama-627B (`*.jsonl.zst` files) into litdata token chunks for `TinyLlama` / `MicroLlama`.

    python -m litgpt.data.prepare_slimpajama --input_dir data/SlimPajama-627B/train \
        --output_dir data/slimpajama/train --tokenizer_path checkpoints/meta-llama/Llama-2-7b-hf

Needs the `litdata` and `zstandard` packages. Documents of the GitHub subset are skipped (TinyLlama takes
code from Starcoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from litgpt.data.lit_data import TokenRecipe, optimize_tokens
from litgpt.tokenizer import Tokenizer


class SlimPajamaDataRecipe(TokenRecipe):
    """One work item per `.jsonl.zst` file; one token tensor per document."""

    def prepare_structure(self, input_dir: Any) -> list[str]:
        return sorted(str(p) for p in Path(input_dir).rglob("*.jsonl.zst"))

    def prepare_item(self, filepath: Any) -> Iterator[Any]:
        try:
            import zstandard
        except ImportError:
            raise ImportError("reading SlimPajama's .jsonl.zst files needs zstandard: pip install zstandard") from None
        import io

        with open(filepath, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
            for line in io.TextIOWrapper(stream, encoding="utf-8"):
                if not line.strip():
                    continue
                row = json.loads(line)
                if (row.get("meta") or {}).get("redpajama_set_name") == "RedPajamaGithub":
                    continue
                yield self.encode(row["text"])


def prepare(
    input_dir: Path = Path("data/SlimPajama-627B/train"),
    output_dir: Path = Path("data/slimpajama/train"),
    tokenizer_path: Path = Path("checkpoints/Llama-2-7b-hf"),
    chunk_size: int = (2049 * 16384),
    fast_dev_run: bool = False,
) -> None:
    """Tokenizes the SlimPajama files of `input_dir` into token chunks in `output_dir`.

    Args:
        input_dir: folder of SlimPajama `.jsonl.zst` files (one split).
        output_dir: where the chunks are written.
        tokenizer_path: checkpoint folder holding the tokenizer.
        chunk_size: tokens per chunk file.
        fast_dev_run: process only a few files (a quick check).
    """
    optimize_tokens(SlimPajamaDataRecipe(Tokenizer(tokenizer_path), chunk_size), Path(input_dir), Path(output_dir),
                    fast_dev_run=fast_dev_run)


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(prepare)
