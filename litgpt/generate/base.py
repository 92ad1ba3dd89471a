"""`litgpt.generate.base` as LitGPT users import it: the engine's names plus LitGPT's functions.

The engine lives in `litgpt.generate.engine` (prefill, decode step, sampling, batched streaming); this
verb-layer module re-exports it, so `from litgpt.generate.base import ...` keeps working, and adds LitGPT
0.5's names with LitGPT's signatures: `generate`, `generate_fn`, `batched_generate_fn`, `next_token`,
`batched_next_token`, `sample`, `batched_sample`, `sample_top_p`, `multinomial_num_samples_1` and `main`.
Each is a thin wrapper over the one engine; the differences from LitGPT are in the docstrings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from litgpt.generate import engine
from litgpt.generate.engine import (  # noqa: F401  (re-exports)
    Generation,
    StepFn,
    StopStringFilter,
    StopTokens,
    TextRow,
    check_sampling_args,
    compile_decode_step,
    decode_one_token,
    fit_to_context,
    generate_stream,
    kv_cache_shape,
    model_context,
    normalize_stop_tokens,
    prefill,
    prepare_cache,
    right_pad,
    stream_text,
    top_p_filter,
)
from litgpt.model import GPT

# ------------------------------------------------------------------------------------------------------------
# sampling


def litgpt_sampling(temperature: float = 1.0, top_k: Optional[int] = None, top_p: float = 1.0) -> dict[str, Any]:
    """LitGPT's sampling settings as the engine's: LitGPT's top_p=0 (only the most likely token) is greedy."""
    if isinstance(top_p, (int, float)) and not isinstance(top_p, bool) and top_p == 0:
        temperature, top_p = 0.0, 1.0
    check_sampling_args(temperature, top_k, top_p)
    return dict(temperature=temperature, top_k=top_k, top_p=top_p)


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """LitGPT's `sample`: the next token id of each row, (B,) long.

    `logits` may be LitGPT's (B, T, V) (the last position of each row is used), the engine's (B, V), or one
    (V,) vector (returns (1,)). LitGPT samples only row 0 of (B, T, V) and returns (1,); for B = 1 the two
    agree. Greedy when temperature is 0, top_k is 1 or top_p is 0.
    """
    if logits.dim() == 3:
        logits = logits[:, -1]  # (B, V)
    elif logits.dim() == 1:
        logits = logits[None]
    elif logits.dim() != 2:
        raise ValueError(f"logits must be (B, T, V), (B, V) or (V,), got shape {tuple(logits.shape)}")
    return engine.sample(logits, **litgpt_sampling(temperature, top_k, top_p), generator=generator)


def batched_sample(logits: list[torch.Tensor], kwargs: list[dict]) -> torch.Tensor:
    """LitGPT's `batched_sample`: `sample(logits[i], **kwargs[i])` for each row, concatenated: (B,)."""
    if len(logits) != len(kwargs):
        raise ValueError(f"need one dict of sampling settings per row, got {len(kwargs)} for {len(logits)} rows")
    return torch.cat([sample(row, **kw) for row, kw in zip(logits, kwargs)])


def sample_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """LitGPT's `sample_top_p`: the logits with -inf outside the smallest set of most likely tokens whose
    probability mass reaches `top_p` (over the last dimension; LitGPT takes a (V,) vector)."""
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    return top_p_filter(logits, top_p)


def multinomial_num_samples_1(probs: torch.Tensor) -> torch.Tensor:
    """LitGPT's `multinomial_num_samples_1`: one index drawn from `probs` (..., V), shape (..., 1)."""
    return torch.multinomial(probs, num_samples=1)


# ------------------------------------------------------------------------------------------------------------
# one step with the caller's KV cache


def next_token(
    model: GPT, input_pos: torch.Tensor, x: torch.Tensor, input_pos_maxp1: Optional[int] = None, **sample_kwargs: Any
) -> torch.Tensor:
    """LitGPT's `next_token`: runs tokens x (B, T) at positions input_pos (T,) through the model (its KV cache
    must be set, as in LitGPT) and samples the next token of each row: (B,) in x's dtype.

    Args:
        model: the model, with a KV cache (`model.set_kv_cache`).
        input_pos: the positions of x's tokens.
        x: the token ids.
        input_pos_maxp1: accepted for LitGPT's signature; not needed here (the cache is written by index).
        sample_kwargs: temperature, top_k, top_p (see `sample`).
    """
    B, T = x.shape
    logits = model(x, input_pos=input_pos, logits_at=torch.full((B,), T - 1, device=x.device))[:, 0]  # (B, V)
    return sample(logits, **sample_kwargs).to(dtype=x.dtype)


def batched_next_token(
    model: GPT, input_pos: torch.Tensor, x: torch.Tensor, kwargs: Union[dict, list[dict]]
) -> torch.Tensor:
    """LitGPT's `batched_next_token`: like `next_token` for a batch x (B, T), with one dict of sampling
    settings for all rows or one per row. Returns (B, 1) in x's dtype."""
    B, T = x.shape
    settings = _per_row(kwargs, B)
    logits = model(x, input_pos=input_pos, logits_at=torch.full((B,), T - 1, device=x.device))[:, 0]  # (B, V)
    return batched_sample(list(logits[:, None]), settings).view(B, 1).to(dtype=x.dtype)


def _per_row(settings: Union[dict, Sequence[dict]], rows: int) -> list[dict]:
    if isinstance(settings, dict):
        return [settings] * rows
    settings = list(settings)
    if len(settings) != rows:
        raise ValueError(f"need one dict of sampling settings per row, got {len(settings)} for {rows} rows")
    return settings


# ------------------------------------------------------------------------------------------------------------
# whole generations (the engine allocates the KV cache)


def _new_tokens(model: GPT, prompt_len: int, max_returned_tokens: int) -> int:
    """How many new tokens `max_returned_tokens` (prompt included, LitGPT's budget) leaves."""
    if max_returned_tokens > model.max_seq_length:
        raise NotImplementedError(
            f"max_returned_tokens={max_returned_tokens} exceeds the model's max_seq_length={model.max_seq_length}"
        )
    if prompt_len >= max_returned_tokens:
        raise ValueError(
            f"max_returned_tokens={max_returned_tokens} leaves no room to generate after a prompt of {prompt_len} "
            "tokens (it counts the prompt)"
        )
    return max_returned_tokens - prompt_len


def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_returned_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    eos_id: Optional[int] = None,
    include_prompt: bool = True,
) -> torch.Tensor:
    """LitGPT's `generate`: prompt (T,) -> at most `max_returned_tokens` ids, the prompt included (unless
    `include_prompt=False`), ending with `eos_id` when it was generated. Unlike LitGPT, the KV cache is set up
    as needed (no `set_kv_cache` call first). For batches, stop strings and streaming see
    `litgpt.generate.engine`."""
    prompt = prompt.reshape(-1)
    max_new_tokens = _new_tokens(model, prompt.numel(), max_returned_tokens)
    stops = () if eos_id is None else (eos_id,)
    new = engine.generate(model, [prompt], max_new_tokens, stop_tokens=stops, **litgpt_sampling(temperature, top_k, top_p))[0]
    new = new.to(prompt.device)
    return torch.cat([prompt.long(), new]) if include_prompt else new


def generate_fn(
    model: GPT,
    prompt: torch.Tensor,
    max_returned_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: tuple[list[int], ...] = (),
    include_prompt: bool,
    include_eos: bool,
) -> Iterator[torch.Tensor]:
    """LitGPT's `generate_fn`: yields the prompt (if `include_prompt`), then each new token as a (1,) tensor.

    Generation ends with a stop-token sequence of `stop_tokens` (yielded only with `include_eos`; without,
    tokens that may begin one are held back until the sequence completes or breaks) or at
    `max_returned_tokens` ids in all.
    """
    prompt = prompt.reshape(-1)
    max_new_tokens = _new_tokens(model, prompt.numel(), max_returned_tokens)
    row = TextRow(stop_tokens=stop_tokens, decode=False, include_stop=include_eos)
    if include_prompt:
        yield prompt
    for _, ids in stream_text(model, [prompt], [row], max_new_tokens, **litgpt_sampling(temperature, top_k, top_p)):
        for t in ids:
            yield torch.tensor([t], device=prompt.device)


def batched_generate_fn(
    model: GPT,
    prompts: Union[torch.Tensor, Sequence[torch.Tensor]],
    max_returned_tokens: int,
    *,
    sample_args: Union[list[dict], dict],
    stop_tokens: tuple[list[int], ...] = (),
    include_prompt: bool,
    include_eos: bool,
) -> Iterator[list[Optional[torch.Tensor]]]:
    """LitGPT's `batched_generate_fn`: yields, step by step, one entry per prompt: a tensor of the ids it
    released at that step (usually one) or None (nothing new: finished, or ids held back).

    Args:
        model: the model, in eval mode.
        prompts: (B, T) ids, or (here also) a list of 1-D prompts of different lengths.
        max_returned_tokens: ids per row in all, prompt included.
        sample_args: temperature / top_k / top_p, one dict for all rows or one per row.
        stop_tokens: id sequences that end a row.
        include_prompt: first yield the prompts, one position per step (as LitGPT does).
        include_eos: yield the stop sequence too (else tokens that may begin one are held back until the
            sequence completes or breaks; LitGPT checks only a sequence's first token here).
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must not be empty")
    prompts = [p.reshape(-1) for p in prompts]
    settings = [litgpt_sampling(**kw) for kw in _per_row(sample_args, len(prompts))]
    longest = max(p.numel() for p in prompts)
    max_new_tokens = _new_tokens(model, longest, max_returned_tokens)
    device = prompts[0].device
    if include_prompt:
        for j in range(longest):
            yield [p[j : j + 1] if j < p.numel() else None for p in prompts]
    rows = [TextRow(stop_tokens=stop_tokens, decode=False, include_stop=include_eos) for _ in prompts]
    shared = settings[0] if all(s == settings[0] for s in settings) else None

    def per_row(logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([engine.sample(logits[i : i + 1], **s) for i, s in enumerate(settings)])

    prepare_cache(model, len(prompts), longest + max_new_tokens)
    stream = generate_stream(
        model, prompts, max_new_tokens, **(shared or {}), stop_check=lambda i, t: rows[i].add(t),
        sample_fn=None if shared else per_row,
    )

    def released() -> list[Optional[torch.Tensor]]:
        return [torch.tensor(ids, device=device) if (ids := row.take()) else None for row in rows]

    for step in stream:
        for row, t in zip(rows, step):
            if t is None:
                row.finish()
        yield released()
    for row in rows:  # tokens held back as a possible stop sequence that never completed
        row.finish()
    last = released()
    if any(t is not None for t in last):
        yield last


# ------------------------------------------------------------------------------------------------------------
# the verb


def main(
    checkpoint_dir: Path,
    prompt: str = "What food do llamas eat?",
    *,
    sys_prompt: Optional[str] = None,
    num_samples: int = 1,
    max_new_tokens: int = 50,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    temperature: float = 0.8,
    quantize: Optional[str] = None,
    precision: Optional[str] = None,
    compile: bool = False,
) -> None:
    """LitGPT's `litgpt.generate.base.main`: generates from a prompt with a checkpoint (the `litgpt generate`
    verb, `litgpt.generate.cli.main`, which also takes `--stop` and `--seed`).

    Args:
        checkpoint_dir: A checkpoint folder (lit_model.pth, model_config.yaml and the tokenizer files).
        prompt: The prompt.
        sys_prompt: A system prompt (default: the prompt style's, if it has one).
        num_samples: How many samples to draw for the prompt.
        max_new_tokens: At most this many new tokens per sample.
        top_k: Sample among the k most likely tokens only.
        top_p: Sample among the most likely tokens whose probability mass reaches top_p (0: greedy).
        temperature: Sampling temperature; 0 is greedy decoding.
        quantize: Weight quantization while loading (int8, int4, bnb.nf4, ...).
        precision: 32-true, bf16-true or 16-true.
        compile: Compile the decode step with torch.compile.
    """
    from litgpt.generate.cli import main as generate_main

    sampling = litgpt_sampling(temperature, top_k, top_p)
    generate_main(
        checkpoint_dir, prompt, sys_prompt=sys_prompt, num_samples=num_samples, max_new_tokens=max_new_tokens,
        quantize=quantize, precision=precision, compile=compile, **sampling,
    )
