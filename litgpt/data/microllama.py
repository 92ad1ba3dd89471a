"""`MicroLlama`: the MicroLlama pretraining set, SlimPajama only (TinyLlama's layout without Starcoder)."""

from __future__ import annotations

from dataclasses import dataclass, field

from litgpt.data.tinyllama import TinyLlama


@dataclass
class MicroLlama(TinyLlama):
    """Reads `data_path/slimpajama/train` and `data_path/slimpajama/val`."""

    use_starcoder: bool = field(default=False, init=False)
    """Always False: MicroLlama trains on SlimPajama only."""
