"""The generation engine: small functions (prefill, one decode step, sampling) over the static KV cache.

`generate` decodes one or several prompts (left-padded into one batch, each row stopping on its own);
`generate_stream` yields token ids as they are decoded. Every kind of checkpoint goes through here.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch

from litgpt.model import GPT


def check_sampling_args(
    temperature: float = 1.0, top_k: Optional[int] = None, top_p: float = 1.0, max_new_tokens: int = 1
) -> None:
    """Raises a ValueError naming the argument and its valid range."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Picks the next token of each row from logits (B, V): greedy when temperature == 0. Returns (B,)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_idx = torch.sort(probs, dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        drop = cumulative - sorted_probs > top_p  # keep the smallest set whose mass reaches top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def prefill(
    model: GPT, idx: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Runs the prompts (B, T) through the model, filling cache slots 0..T-1. Returns last logits (B, V)."""
    input_pos = torch.arange(idx.size(1), device=idx.device)
    return model(idx, input_pos=input_pos, key_padding_mask=key_padding_mask)[:, -1]


def decode_one_token(
    model: GPT, token: torch.Tensor, input_pos: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """One decode step: token (B, 1) at slot input_pos (1,). Returns logits (B, V)."""
    return model(token, input_pos=input_pos, key_padding_mask=key_padding_mask)[:, -1]


def left_pad(prompts: Sequence[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Stacks 1-D prompts into (B, T_max), padding on the left. Returns the batch and a (B, T_max) mask of
    real tokens (None when all prompts have the same length)."""
    lengths = [p.numel() for p in prompts]
    t_max = max(lengths)
    device = prompts[0].device
    batch = torch.full((len(prompts), t_max), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), t_max), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        batch[i, t_max - p.numel():] = p
        mask[i, t_max - p.numel():] = True
    return batch, (None if min(lengths) == t_max else mask)


@torch.inference_mode()
def generate_stream(
    model: GPT,
    prompts: Sequence[torch.Tensor],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: Sequence[Sequence[int]] = (),
    generator: Optional[torch.Generator] = None,
) -> Iterator[list[Optional[int]]]:
    """Decodes the prompts together; yields, per step, a list with each row's new token (None once the
    row has finished). A row finishes when its output ends with one of `stop_tokens` (sequences of ids,
    e.g. [[eos_id]]) or after max_new_tokens. The model must have a KV cache of batch size >= len(prompts)
    and at least max(prompt lengths) + max_new_tokens slots (see `prepare_cache`)."""
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if not prompts:
        raise ValueError("prompts must not be empty")
    batch, real = left_pad(prompts)
    B, T = batch.shape
    device = batch.device
    key_padding_mask = None
    if real is not None:
        cache_len = model.transformer.h[0].attn.kv_cache.k.size(2)
        key_padding_mask = torch.ones((B, cache_len), dtype=torch.bool, device=device)
        key_padding_mask[:, :T] = real
    logits = prefill(model, batch, key_padding_mask)
    outputs: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    stops = [list(s) for s in stop_tokens if len(s)]
    input_pos = torch.tensor([T], device=device)
    for step in range(max_new_tokens):
        tokens = sample(logits, temperature, top_k, top_p, generator)  # (B,)
        new: list[Optional[int]] = []
        token_list = tokens.tolist()
        for i in range(B):
            if done[i]:
                new.append(None)
                continue
            outputs[i].append(token_list[i])
            new.append(token_list[i])
            if any(outputs[i][-len(s):] == s for s in stops):
                done[i] = True
        yield new
        if all(done) or step == max_new_tokens - 1:
            return
        logits = decode_one_token(model, tokens.unsqueeze(-1), input_pos, key_padding_mask)
        input_pos = input_pos + 1


def prepare_cache(model: GPT, batch_size: int, needed_len: int) -> None:
    """Allocates (or reuses) a KV cache for `batch_size` rows and `needed_len` slots."""
    kv = model.transformer.h[0].attn.kv_cache
    if kv is not None and kv.k.size(0) >= batch_size and kv.k.size(2) >= needed_len:
        return
    if needed_len > model.max_seq_length:
        raise ValueError(
            f"prompt + max_new_tokens = {needed_len} tokens exceed the model's context of {model.max_seq_length}"
        )
    model.set_kv_cache(batch_size=batch_size, max_seq_length=needed_len)


def generate(
    model: GPT,
    prompts: Sequence[torch.Tensor] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: Sequence[Sequence[int]] = (),
    include_stop: bool = True,
    generator: Optional[torch.Generator] = None,
) -> list[torch.Tensor]:
    """Generates up to max_new_tokens for each prompt (1-D id tensors). Returns the new ids per prompt
    (with the stop sequence at the end when `include_stop`). Allocates the KV cache as needed."""
    if isinstance(prompts, torch.Tensor):
        prompts = [prompts] if prompts.dim() == 1 else list(prompts)
    if not len(prompts):
        raise ValueError("prompts must not be empty")
    longest = max(p.numel() for p in prompts)
    prepare_cache(model, len(prompts), longest + max_new_tokens)
    outputs: list[list[int]] = [[] for _ in prompts]
    for step_tokens in generate_stream(
        model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        stop_tokens=stop_tokens, generator=generator,
    ):
        for i, t in enumerate(step_tokens):
            if t is not None:
                outputs[i].append(t)
    results = []
    stops = [list(s) for s in stop_tokens if len(s)]
    for out in outputs:
        if not include_stop:
            for s in stops:
                if out[-len(s):] == s:
                    out = out[: -len(s)]
                    break
        results.append(torch.tensor(out, dtype=torch.long))
    return results
