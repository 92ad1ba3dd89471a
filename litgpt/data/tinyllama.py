"""`TinyLlama`: the TinyLlama pretraining mix, SlimPajama and (optionally) Starcoder, as litdata token chunks
written by `python -m litgpt.data.prepare_slimpajama` and `python -m litgpt.data.prepare_starcoder`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from litgpt.data.lit_data import StreamingTokens


@dataclass
class TinyLlama(StreamingTokens):
    """Reads `data_path/slimpajama/train`, `data_path/slimpajama/val` and (with `use_starcoder`)
    `data_path/starcoder`, which is mixed into the training set."""

    data_path: Union[str, Path] = Path("data")
    """The folder (or cloud URL) holding `slimpajama/train`, `slimpajama/val` and `starcoder`."""
    seed: int = 42
    """Seed of the shuffling of the training chunks."""
    num_workers: int = 8
    """DataLoader worker processes."""
    use_starcoder: bool = True
    """Mix the Starcoder code chunks into the training set."""
    batch_size: int = field(default=1, init=False, repr=False)
    seq_length: int = field(default=2048, init=False, repr=False)

    def input_dirs(self, train: bool) -> list[str]:
        base = str(self.data_path).rstrip("/")
        if not train:
            return [f"{base}/slimpajama/val"]
        return [f"{base}/slimpajama/train"] + ([f"{base}/starcoder"] if self.use_starcoder else [])

    def missing_message(self, path: str) -> str:
        return (f"{type(self).__name__} expects data_path to hold `slimpajama/train`, `slimpajama/val`"
                f"{', `starcoder`' if self.use_starcoder else ''} (written by litgpt.data.prepare_slimpajama / "
                f"prepare_starcoder); {path} does not exist. Set it with --data.data_path")
