"""Tiny random checkpoints for the generation, chat and API tests (built in milliseconds, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from litgpt import GPT, Config
from tests._tokenizers import make_hf_tokenizer

TINY = dict(
    n_layer=2, n_embd=32, n_head=4, n_query_groups=2, rotary_percentage=1.0, parallel_residual=False,
    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48, bias=False,
)


def tiny_config(name: str = "tiny", vocab_size: int = 256, block_size: int = 128, **overrides: Any) -> Config:
    """A 2-layer, 32-wide Llama-style config."""
    fields = {**TINY, "name": name, "vocab_size": vocab_size, "padded_vocab_size": vocab_size,
              "block_size": block_size, **overrides}
    return Config(**fields)


def make_checkpoint(
    directory: Path,
    config: Optional[Config] = None,
    *,
    seed: int = 0,
    tokenizer_kwargs: Optional[dict] = None,
    special_tokens: tuple[str, ...] = (),
) -> Path:
    """Writes lit_model.pth + model_config.yaml + a tiny byte-level tokenizer into `directory`.

    `special_tokens` are added to the tokenizer (after its 256 entries); the config's vocabulary grows to match.
    """
    directory = Path(directory)
    make_hf_tokenizer(directory, **(tokenizer_kwargs or {}))
    if special_tokens:
        add_special_tokens(directory, special_tokens)
    vocab = 256 + len(special_tokens)
    config = config or tiny_config(vocab_size=vocab)
    torch.manual_seed(seed)
    model = GPT(config)
    torch.save(model.state_dict(), directory / "lit_model.pth")
    config.save(directory)
    return directory


def add_special_tokens(directory: Path, tokens: tuple[str, ...]) -> None:
    """Appends special tokens to `directory/tokenizer.json`."""
    from tokenizers import Tokenizer as HFTokenizer

    path = directory / "tokenizer.json"
    tok = HFTokenizer.from_file(str(path))
    tok.add_special_tokens(list(tokens))
    tok.save(str(path))


def write_tokenizer_config(directory: Path, **entries: Any) -> None:
    """Merges entries into `directory/tokenizer_config.json`."""
    path = directory / "tokenizer_config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(entries)
    path.write_text(json.dumps(data))
