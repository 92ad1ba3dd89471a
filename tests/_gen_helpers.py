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


FAMILIES = [
    "pythia-14m", "gpt2", "Llama-2-7b-hf", "Llama-3.2-1B", "Mistral-7B-v0.1", "Mixtral-8x7B-v0.1", "Gemma-2b",
    "Gemma-2-2b", "Gemma-3-1b-it", "phi-1_5", "phi-2", "Phi-3-mini-4k-instruct", "phi-4", "Qwen2.5-0.5B",
    "Qwen3-0.6B", "Qwen3-30B-A3B", "OLMo-1B-hf", "OLMo-2-1124-7B", "falcon-7b", "falcon-40b", "Falcon3-1B-Base",
    "SmolLM2-135M", "tiny-llama-1.1b", "stablelm-base-alpha-3b", "stablelm-3b-4e1t", "salamandra-2b",
    "open_llama_3b", "CodeLlama-7b-hf",
]


def shrunk(name: str) -> Config:
    """The registry config `name` with tiny dimensions (its architectural switches kept, sliding windows of 4)."""
    full = Config.from_name(name)
    groups = 4 if full.n_query_groups == full.n_head else (1 if full.n_query_groups == 1 else 2)
    overrides = dict(n_layer=2, n_embd=64, n_head=4, head_size=16, n_query_groups=groups, intermediate_size=64,
                     vocab_size=96, padded_vocab_size=96, block_size=48)
    if full.sliding_window_size is not None:
        overrides["sliding_window_size"] = 4
    if full.n_expert:
        overrides.update(n_expert=4, n_expert_per_token=2)
    if full.moe_intermediate_size:
        overrides["moe_intermediate_size"] = 32
    return Config.from_name(name, **overrides)
