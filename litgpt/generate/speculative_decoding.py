"""LitGPT's `litgpt.generate.speculative_decoding`: the `generate_speculatively` verb under LitGPT's module name.

Thin names over `litgpt.generate.speculative` (one implementation, on `generate`'s engine).
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from litgpt.generate.base import sample
from litgpt.generate.speculative import main, speculative_generate
from litgpt.model import GPT

__all__ = ["generate", "main", "sample", "speculative_generate"]


def generate(
    draft_model: GPT,
    target_model: GPT,
    prompt: torch.Tensor,
    max_returned_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: tuple[list[int], ...] = (),
    include_prompt: bool = True,
    speculative_k: int,
) -> Iterator[torch.Tensor]:
    """LitGPT's streaming speculative `generate`: yields the prompt (when `include_prompt`) and then the new tokens
    of `target_model`'s output, with `draft_model` proposing `speculative_k` tokens a round, until
    `max_returned_tokens` tokens in all or a stop sequence."""
    prompt = prompt.reshape(-1)
    new, _ = speculative_generate(
        target_model, draft_model, prompt, max_returned_tokens - prompt.numel(), speculative_k=speculative_k,
        temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stop_tokens,
    )
    if include_prompt:
        yield prompt
    for token in new:
        yield token.reshape(1)
