"""Data modules for the training verbs: `--data NAME --data.FIELD VALUE` on the command line.

Pretraining: `TextFiles`, `TinyStories`, `OpenWebText`, `LitData`, `TinyLlama`, `MicroLlama`. Instruction
tuning: `JSON`, `Alpaca`, `Alpaca2k`, `AlpacaGPT4`, `Dolly`, `LIMA`, `LongForm`, `FLAN`, `Deita`. Preference
pairs (`finetune_dpo`): `Preference`, `UltraFeedback`, `AnthropicHH`. The names,
fields and defaults are LitGPT 0.5.x's (`litgpt.data`); `SFTDataset` and `get_sft_collate_fn` too.
"""

from litgpt.data.alpaca import Alpaca, Alpaca2k, AlpacaGPT4
from litgpt.data.base import IGNORE_INDEX, DataModule, SFTDataset, TokenWindows, get_sft_collate_fn
from litgpt.data.deita import Deita
from litgpt.data.dolly import Dolly
from litgpt.data.flan import FLAN
from litgpt.data.json_data import JSON
from litgpt.data.lima import LIMA
from litgpt.data.lit_data import LitData
from litgpt.data.longform import LongForm
from litgpt.data.microllama import MicroLlama
from litgpt.data.openwebtext import OpenWebText
from litgpt.data.preference import AnthropicHH, Preference, PreferenceDataModule, UltraFeedback
from litgpt.data.sft import SFTDataModule
from litgpt.data.text import TextFiles, TokenizedCorpus
from litgpt.data.tinyllama import TinyLlama
from litgpt.data.tinystories import TinyStories

__all__ = [
    "IGNORE_INDEX", "DataModule", "SFTDataModule", "SFTDataset", "get_sft_collate_fn", "TokenWindows",
    "TokenizedCorpus", "TextFiles", "TinyStories", "OpenWebText", "LitData", "TinyLlama", "MicroLlama",
    "JSON", "Alpaca", "Alpaca2k", "AlpacaGPT4", "Dolly", "LIMA", "LongForm", "FLAN", "Deita",
    "PreferenceDataModule", "Preference", "UltraFeedback", "AnthropicHH",
]
