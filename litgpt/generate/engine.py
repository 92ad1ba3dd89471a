"""The generation engine: small functions (prefill, one decode step, sampling) over the static KV cache.

Layers, from the bottom up:

* `sample`, `prefill`, `decode_one_token`: tensor in, tensor out, no data-dependent Python control flow, so
  `torch.compile` takes the decode step whole (`compile_decode_step`).
* `generate_stream`: decodes one or several prompts as one batch and yields each step's new token per row.
  Prompts of different lengths are right-padded and every row keeps its own positions, so a row's result is
  the one it gets alone (greedy). A row stops on its own when its output ends with a stop-token sequence,
  when a `stop_check` callback says so, or after `max_new_tokens`.
* `TextRow` + `stream_text`: text on top of the tokens: incremental decoding, tokens that may begin a stop
  sequence held back, the text cut at the first stop string (also when it spans tokens).
* `generate`: the whole batch at once, as token ids.

Python bookkeeping (stopping, streaming, decoding) stays outside the tensor functions.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import torch

from litgpt.generate.cpu import native_decode_step
from litgpt.model import GPT

StopTokens = Sequence[Union[int, Sequence[int]]]
StepFn = Callable[..., torch.Tensor]


# ------------------------------------------------------------------------------------------------------------
# argument checks


def check_sampling_args(
    temperature: float = 1.0, top_k: Optional[int] = None, top_p: float = 1.0, max_new_tokens: int = 1
) -> None:
    """Raises a ValueError naming the argument and its valid range.

    Args:
        temperature: must be >= 0 (0 is greedy decoding).
        top_k: must be None or >= 1.
        top_p: must be in (0, 1].
        max_new_tokens: must be >= 1.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature != temperature:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def normalize_stop_tokens(stop_tokens: StopTokens) -> list[list[int]]:
    """Stop tokens as a list of id sequences: an int `t` becomes `[t]`, empty sequences are dropped.

    Args:
        stop_tokens: ids and/or sequences of ids, e.g. `[2, [13, 13]]` or a tokenizer's flat `stop_tokens`.
    """
    out: list[list[int]] = []
    for item in stop_tokens:
        seq = [int(item)] if isinstance(item, int) or (isinstance(item, torch.Tensor) and item.dim() == 0) else [
            int(t) for t in item
        ]
        if seq and seq not in out:
            out.append(seq)
    return out


def fit_to_context(prompt_len: int, max_new_tokens: int, context: int) -> int:
    """`max_new_tokens`, clipped (with one warning) so that prompt + new tokens fit in `context` slots.

    Raises a ValueError when the prompt alone leaves no room for a new token.

    Args:
        prompt_len: length of the (longest) prompt in tokens.
        max_new_tokens: how many tokens were asked for.
        context: how many positions the model (or its fixed KV cache) holds.
    """
    if prompt_len >= context:
        raise ValueError(
            f"the prompt is {prompt_len} tokens but the model's context holds {context}: "
            f"a prompt must be shorter than the context (at most {context - 1} tokens) to leave room to generate"
        )
    room = context - prompt_len
    if max_new_tokens > room:
        warnings.warn(
            f"max_new_tokens={max_new_tokens} does not fit in the context of {context} tokens after a prompt of "
            f"{prompt_len} tokens; generating at most {room} tokens",
            stacklevel=3,
        )
        return room
    return max_new_tokens


# ------------------------------------------------------------------------------------------------------------
# the tensor functions (compilable)


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Picks the next token of each row from logits (B, V). Returns (B,) ids.

    Greedy (argmax) when `temperature == 0` or `top_k == 1`; otherwise samples from the softmax of
    `logits / temperature`, restricted to the `top_k` largest logits and then to the smallest set of tokens
    whose probability mass reaches `top_p`.
    """
    if temperature == 0.0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The logits (..., V) with -inf outside the nucleus: the smallest set of most likely tokens whose
    softmax mass reaches `top_p` (the most likely token always stays)."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits.float(), dim=-1)
    drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # the mass before a token already reaches top_p
    return logits.masked_fill(drop.scatter(-1, sorted_idx, drop), float("-inf"))


def prefill(model: GPT, idx: torch.Tensor, last: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Runs the prompts (B, T) through the model, filling cache slots 0..T-1.

    Returns the logits (B, V) at each row's position `last` (B,) (default: T - 1 for every row).
    """
    input_pos = torch.arange(idx.size(1), device=idx.device)
    if last is None:
        last = torch.full((idx.size(0),), idx.size(1) - 1, device=idx.device)
    return model(idx, input_pos=input_pos, logits_at=last)[:, 0]  # only the needed rows reach the LM head


def decode_one_token(
    model: GPT, token: torch.Tensor, input_pos: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """One decode step: token (B, 1) at position input_pos, (1,) shared or (B, 1) per row. Returns logits (B, V)."""
    return model(token, input_pos=input_pos, key_padding_mask=key_padding_mask)[:, -1]


def compile_decode_step(backend: str = "inductor", **kwargs) -> StepFn:
    """`torch.compile(decode_one_token)` with static shapes and the whole step as one graph.

    Pass the result as `step_fn` to `generate_stream` / `stream_text` / `generate`. The first steps compile
    (slow); later calls with the same batch size and KV cache length reuse the compiled code.

    Args:
        backend: the `torch.compile` backend ("inductor"; "aot_eager" checks the capture without codegen).
        kwargs: further `torch.compile` options (e.g. `mode="reduce-overhead"` on CUDA).
    """
    options = {"fullgraph": True, "dynamic": False, **kwargs}
    return torch.compile(decode_one_token, backend=backend, **options)


# ------------------------------------------------------------------------------------------------------------
# batching and the KV cache


def right_pad(prompts: Sequence[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks 1-D prompts into (B, T_max), padding on the right. Returns the batch and the lengths (B,).

    With per-row positions, the padding sits after each prompt where causal attention never looks, and
    each row's new tokens overwrite it: no padding mask is needed and absolute positions stay exact.
    """
    lengths = [int(p.numel()) for p in prompts]
    if min(lengths) == 0:
        raise ValueError("every prompt must hold at least one token")
    device = prompts[0].device
    batch = torch.full((len(prompts), max(lengths)), pad_id, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        batch[i, : lengths[i]] = p.to(device=device, dtype=torch.long).reshape(-1)
    return batch, torch.tensor(lengths, device=device)


def kv_cache_shape(model: GPT) -> Optional[tuple[int, int]]:
    """(batch size, slots) of the model's KV cache, None when it has none."""
    kv = model.transformer.h[0].attn.kv_cache
    return None if kv is None else (kv.k.size(0), kv.k.size(2))


def prepare_cache(
    model: GPT, batch_size: int, needed_len: int, fixed_len: Optional[int] = None, bucket: bool = False
) -> None:
    """Allocates (or reuses) a KV cache for `batch_size` rows and at least `needed_len` slots.

    Args:
        model: the model.
        batch_size: rows the cache must hold.
        needed_len: slots a call needs (longest prompt + new tokens).
        fixed_len: allocate exactly this many slots (one fixed shape, e.g. for a compiled decode step).
        bucket: round the number of slots up to a power of two (at most max_seq_length), so that a compiled
            decode step sees few distinct shapes.
    """
    context = fixed_len or model.max_seq_length
    if needed_len > context:
        raise ValueError(
            f"prompt + max_new_tokens = {needed_len} tokens exceed the model's context of {context}"
        )
    shape = kv_cache_shape(model)
    if fixed_len is not None:
        target = fixed_len
    elif bucket:
        target = min(max(64, 1 << (needed_len - 1).bit_length()), model.max_seq_length)
    else:
        target = needed_len
    if shape is not None and shape[0] >= batch_size:
        if (fixed_len is not None or bucket) and shape[1] == target:
            return
        if fixed_len is None and not bucket and needed_len <= shape[1] <= 2 * needed_len:
            return  # reuse; a far larger cache would slow every step (attention reads all slots)
    model.set_kv_cache(batch_size=batch_size, max_seq_length=target)


def model_context(model: GPT, fixed_len: Optional[int] = None) -> int:
    """How many positions one sequence may use: the fixed KV cache length if given, else max_seq_length."""
    return fixed_len or model.max_seq_length


# ------------------------------------------------------------------------------------------------------------
# token-level generation


@torch.inference_mode()
def generate_stream(
    model: GPT,
    prompts: Sequence[torch.Tensor],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: StopTokens = (),
    generator: Optional[torch.Generator] = None,
    stop_check: Optional[Callable[[int, int], bool]] = None,
    step_fn: Optional[StepFn] = None,
    sample_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Iterator[list[Optional[int]]]:
    """Decodes the prompts together; yields, per step, a list with each row's new token (None once the
    row has finished).

    The model must have a KV cache of batch size >= len(prompts) and at least max(prompt lengths) +
    max_new_tokens slots (see `prepare_cache`).

    Args:
        model: the model, in eval mode.
        prompts: 1-D tensors of token ids (different lengths allowed).
        max_new_tokens: at most this many tokens per row.
        temperature, top_k, top_p: sampling (see `sample`).
        stop_tokens: a row finishes when its output ends with one of these (ids or sequences of ids); the
            stop tokens are yielded.
        generator: random generator for sampling (on the model's device).
        stop_check: `stop_check(row, token) -> bool`, called for each new token of a live row after the
            stop-token check; True finishes the row (e.g. a stop string appeared in its text).
        step_fn: the decode step, e.g. from `compile_decode_step`; default: `litgpt.generate.cpu.native_decode_step`
            where it can run (bfloat16 weights on an AVX512-BF16 CPU), else `decode_one_token`.
        sample_fn: picks the next ids (B,) from logits (B, V) in place of `sample` with the settings above
            (e.g. different settings per row).
    """
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if not len(prompts):
        raise ValueError("prompts must not be empty (got an empty list)")
    batch, lengths = right_pad(prompts)
    B, T = batch.shape
    device = batch.device
    uniform = bool((lengths == T).all())
    # bfloat16 models on AVX512-BF16 CPUs take the native kernels (prefill and steps), the rest the modules
    native = native_decode_step(model) if step_fn is None and device.type == "cpu" else None
    if native is not None:
        logits = native.prefill(model, prompts)
    else:
        logits = prefill(model, batch, None if uniform else lengths - 1)
    step_fn = step_fn or native or decode_one_token
    # positions of the next token: shared (1,) when all prompts have the same length, else per row (B, 1)
    input_pos = torch.tensor([T], device=device) if uniform else lengths.view(B, 1).clone()
    outputs: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    stops = normalize_stop_tokens(stop_tokens)
    for step in range(max_new_tokens):
        tokens = sample(logits, temperature, top_k, top_p, generator) if sample_fn is None else sample_fn(logits)  # (B,)
        token_list = tokens.tolist()
        new: list[Optional[int]] = []
        for i in range(B):
            if done[i]:
                new.append(None)
                continue
            t = token_list[i]
            outputs[i].append(t)
            new.append(t)
            if any(outputs[i][-len(s):] == s for s in stops) or (stop_check is not None and stop_check(i, t)):
                done[i] = True
        yield new
        if all(done) or step == max_new_tokens - 1:
            return
        logits = step_fn(model, tokens.view(B, 1), input_pos)
        input_pos = input_pos + 1


def generate(
    model: GPT,
    prompts: Union[Sequence[torch.Tensor], torch.Tensor],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: StopTokens = (),
    include_stop: bool = True,
    generator: Optional[torch.Generator] = None,
    step_fn: Optional[StepFn] = None,
    fixed_cache_len: Optional[int] = None,
    bucket_cache: bool = False,
) -> list[torch.Tensor]:
    """Generates up to max_new_tokens for each prompt. Allocates the KV cache as needed.

    Args:
        model: the model, in eval mode.
        prompts: a 1-D tensor of ids, a (B, T) tensor, or a list of 1-D tensors (lengths may differ).
        max_new_tokens: at most this many new tokens per prompt; clipped (with a warning) to the context.
        temperature, top_k, top_p: sampling (see `sample`).
        stop_tokens: ids or id sequences that end a row.
        include_stop: keep the stop sequence at the end of a row's output.
        generator: random generator for sampling.
        step_fn: the decode step (see `compile_decode_step`).
        fixed_cache_len: allocate a KV cache of exactly this many slots.
        bucket_cache: round the KV cache length up to a power of two (few shapes for a compiled step).

    Returns:
        The new ids of each prompt, 1-D long tensors on the CPU.
    """
    if isinstance(prompts, torch.Tensor):
        prompts = [prompts] if prompts.dim() == 1 else list(prompts)
    if not len(prompts):
        raise ValueError("prompts must not be empty (got an empty list)")
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    longest = max(p.numel() for p in prompts)
    max_new_tokens = fit_to_context(longest, max_new_tokens, model_context(model, fixed_cache_len))
    prepare_cache(model, len(prompts), longest + max_new_tokens, fixed_cache_len, bucket_cache)
    outputs: list[list[int]] = [[] for _ in prompts]
    for step_tokens in generate_stream(
        model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        stop_tokens=stop_tokens, generator=generator, step_fn=step_fn,
    ):
        for i, t in enumerate(step_tokens):
            if t is not None:
                outputs[i].append(t)
    stops = normalize_stop_tokens(stop_tokens)
    results = []
    for out in outputs:
        if not include_stop:
            out = out[: len(out) - _stop_suffix_len(out, stops)]
        results.append(torch.tensor(out, dtype=torch.long))
    return results


def _stop_suffix_len(tokens: list[int], stops: list[list[int]]) -> int:
    """Length of the stop sequence `tokens` ends with (0 if none)."""
    for s in stops:
        if len(tokens) >= len(s) and tokens[-len(s):] == s:
            return len(s)
    return 0


def _pending_prefix_len(tokens: list[int], start: int, stops: list[list[int]]) -> int:
    """Length of the longest suffix of tokens[start:] that is a proper prefix of some stop sequence."""
    best = 0
    n = len(tokens) - start
    for s in stops:
        for k in range(min(len(s) - 1, n), best, -1):
            if tokens[len(tokens) - k:] == s[:k]:
                best = k
                break
    return best


# ------------------------------------------------------------------------------------------------------------
# text


class StopStringFilter:
    """Cuts a stream of text at the first occurrence of any stop string.

    Text that might be the beginning of a stop string is held back until it is known not to be one, so no
    piece ever passes the cut, also when the stop string is spread over several pieces.
    """

    def __init__(self, stop_strings: Iterable[str] = ()) -> None:
        """
        Args:
            stop_strings: strings that end the text (empty strings are ignored).
        """
        self.stop_strings = [s for s in stop_strings if s]
        self.held = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """Takes the next piece of text; returns the part that is safe to emit."""
        if self.stopped or not piece:
            return ""
        if not self.stop_strings:
            return piece
        text = self.held + piece
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stopped = True
            self.held = ""
            return text[: min(hits)]
        keep = 0
        for s in self.stop_strings:
            for k in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:k]):
                    keep = k
                    break
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The text still held back (end of the stream)."""
        out, self.held = ("" if self.stopped else self.held), ""
        return out


class TextRow:
    """One row of a generation: tokens in, text pieces (or, with `decode=False`, token ids) out.

    Tokens that may be the beginning of a stop-token sequence are held back until the sequence completes
    (then they are dropped) or breaks (then they are released); released tokens are decoded incrementally
    (multi-byte characters and leading spaces come out right) and the text is cut at the first stop string.

    Attributes:
        tokens: every token the row generated (stop sequence included).
        text: the text emitted so far ("" with `decode=False`).
        finish_reason: "stop" (stop tokens or a stop string), "length", or None while running.
        first_token_time: `time.perf_counter()` when the first token arrived (None before).
    """

    def __init__(
        self,
        tokenizer=None,
        stop_tokens: StopTokens = (),
        stop_strings: Iterable[str] = (),
        skip_special_tokens: bool = True,
        decode: bool = True,
        include_stop: bool = False,
    ) -> None:
        """
        Args:
            tokenizer: a `litgpt.Tokenizer` (needed when `decode`).
            stop_tokens: ids / id sequences that end the row (left out of the output).
            stop_strings: strings that end the row; the text stops right before the first one.
            skip_special_tokens: leave special tokens out of the text.
            decode: produce text; False produces the released token ids instead (no stop strings then).
            include_stop: keep the stop-token sequence in the output (then nothing is held back).
        """
        stop_strings = [s for s in stop_strings if s]
        if decode and tokenizer is None:
            raise ValueError("TextRow needs a tokenizer to decode text")
        if stop_strings and not decode:
            raise ValueError("stop strings need text output (decode=True)")
        self.tokenizer = tokenizer
        self.decode = decode
        self.include_stop = include_stop
        self.stops = normalize_stop_tokens(stop_tokens)
        self.filter = StopStringFilter(stop_strings)
        self.decoder = tokenizer.incremental_decoder(skip_special_tokens=skip_special_tokens) if decode else None
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: Optional[str] = None
        self.first_token_time: Optional[float] = None
        self._released = 0  # tokens handed on (to the decoder, or out as ids)
        self._pending: Union[str, list[int]] = "" if decode else []

    @property
    def stopped_by_string(self) -> bool:
        """Whether a stop string ended the row."""
        return self.filter.stopped

    def add(self, token: int) -> bool:
        """Takes the next token; returns True when the row must end (a stop sequence or stop string)."""
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.tokens.append(int(token))
        if _stop_suffix_len(self.tokens, self.stops):
            if self.include_stop:
                self._release(len(self.tokens))
            return True  # `finish` drops the sequence (unless include_stop)
        hold = 0 if self.include_stop else _pending_prefix_len(self.tokens, self._released, self.stops)
        self._release(len(self.tokens) - hold)
        return self.filter.stopped

    def finish(self) -> None:
        """Ends the row: releases what was held back (minus a trailing stop sequence)."""
        if self.finish_reason is not None:
            return
        stop_len = _stop_suffix_len(self.tokens, self.stops)
        self._release(len(self.tokens) - (0 if self.include_stop else stop_len))
        if self.decode:
            self._emit(self.decoder.flush())
            self._emit(self.filter.flush())
        self.finish_reason = "stop" if (stop_len or self.filter.stopped) else "length"

    def take(self) -> Union[str, list[int]]:
        """The text (or, with `decode=False`, the ids) produced since the last call."""
        out, self._pending = self._pending, ("" if self.decode else [])
        return out

    def token_ids(self) -> list[int]:
        """The row's ids without the stop sequence (with it, for `include_stop`); after a stop string, only
        the tokens whose text lies wholly before it."""
        ids = self.tokens if self.include_stop else self.tokens[: len(self.tokens) - _stop_suffix_len(self.tokens, self.stops)]
        if self.filter.stopped:
            limit = len(self.text)
            k = min(len(ids), self._released)
            while k > 0 and len(self.tokenizer.decode(ids[:k])) > limit:
                k -= 1
            ids = ids[:k]
        return ids

    def _release(self, upto: int) -> None:
        if not self.decode:
            if upto > self._released:
                self._pending.extend(self.tokens[self._released:upto])  # type: ignore[union-attr]
                self._released = upto
            return
        while self._released < upto and not self.filter.stopped:
            piece = self.decoder.add(self.tokens[self._released])
            self._released += 1
            if piece:
                self._emit(self.filter.push(piece))

    def _emit(self, text: str) -> None:
        if text:
            self.text += text
            self._pending += text  # type: ignore[operator]


@torch.inference_mode()
def stream_text(
    model: GPT,
    prompts: Sequence[torch.Tensor],
    rows: Sequence[TextRow],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
    step_fn: Optional[StepFn] = None,
    fixed_cache_len: Optional[int] = None,
    bucket_cache: bool = False,
) -> Iterator[tuple[int, Union[str, list[int]]]]:
    """Generates for a batch of prompts; yields `(row index, piece)` as output is released.

    A piece is text (or a list of ids for rows made with `decode=False`). The pieces of a row join to its
    full output (`rows[i].text`), which ends before its stop tokens and its first stop string; `rows[i]`
    also holds the row's tokens and finish reason afterwards. Allocates the KV cache.

    Args:
        model: the model, in eval mode.
        prompts: 1-D tensors of token ids.
        rows: one `TextRow` per prompt (they carry the tokenizer, stop tokens and stop strings).
        max_new_tokens: at most this many tokens per row; clipped (with a warning) to the context.
        temperature, top_k, top_p: sampling (see `sample`).
        generator: random generator for sampling.
        step_fn: the decode step (see `compile_decode_step`).
        fixed_cache_len: allocate a KV cache of exactly this many slots.
        bucket_cache: round the KV cache length up to a power of two.
    """
    if not len(prompts):
        raise ValueError("prompts must not be empty (got an empty list)")
    if len(rows) != len(prompts):
        raise ValueError(f"need one TextRow per prompt, got {len(rows)} for {len(prompts)} prompts")
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    longest = max(p.numel() for p in prompts)
    max_new_tokens = fit_to_context(longest, max_new_tokens, model_context(model, fixed_cache_len))
    prepare_cache(model, len(prompts), longest + max_new_tokens, fixed_cache_len, bucket_cache)
    finished = [False] * len(rows)
    for step_tokens in generate_stream(
        model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        generator=generator, step_fn=step_fn, stop_check=lambda i, t: rows[i].add(t),
    ):
        for i, t in enumerate(step_tokens):
            if t is None and not finished[i]:
                finished[i] = True
                rows[i].finish()
            piece = rows[i].take()
            if piece:
                yield i, piece
    # rows still running hit max_new_tokens; rows that stopped on the last step end here too
    for i, row in enumerate(rows):
        if not finished[i]:
            row.finish()
            piece = row.take()
            if piece:
                yield i, piece


class Generation:
    """One batched generation: iterate it for `(row, piece)` events as output is released; afterwards it
    holds each row's text / ids and the timings.

    Arguments are checked (and max_new_tokens clipped to the context, with one warning) when it is made, so
    bad input fails before any work. Iterate it once (or call `run()`).

    Attributes:
        rows: the `TextRow` of each prompt.
        seconds: wall time of the whole generation (prefill included).
        first_token_seconds: time until the first new token was sampled.
        max_new_tokens: the (possibly clipped) limit used.
    """

    def __init__(
        self,
        model: GPT,
        prompts: Sequence[torch.Tensor],
        rows: Sequence[TextRow],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: float = 1.0,
        generator: Optional[torch.Generator] = None,
        step_fn: Optional[StepFn] = None,
        fixed_cache_len: Optional[int] = None,
        bucket_cache: bool = False,
    ) -> None:
        """
        Args:
            model: the model, in eval mode, on the prompts' device.
            prompts: 1-D tensors of token ids (at least one token each).
            rows: one `TextRow` per prompt.
            max_new_tokens, temperature, top_k, top_p, generator, step_fn, fixed_cache_len, bucket_cache:
                as in `stream_text`.
        """
        check_sampling_args(temperature, top_k, top_p, max_new_tokens)
        if not len(prompts):
            raise ValueError("prompts must not be empty (got an empty list)")
        if len(rows) != len(prompts):
            raise ValueError(f"need one TextRow per prompt, got {len(rows)} for {len(prompts)} prompts")
        for i, p in enumerate(prompts):
            if p.numel() == 0:
                raise ValueError(f"prompt {i} holds no tokens")
        longest = max(int(p.numel()) for p in prompts)
        self.max_new_tokens = fit_to_context(longest, max_new_tokens, model_context(model, fixed_cache_len))
        self.model, self.prompts, self.rows = model, list(prompts), list(rows)
        self._options = dict(
            temperature=temperature, top_k=top_k, top_p=top_p, generator=generator, step_fn=step_fn,
            fixed_cache_len=fixed_cache_len, bucket_cache=bucket_cache,
        )
        self.seconds: Optional[float] = None
        self.first_token_seconds: Optional[float] = None
        self._started = False

    def __iter__(self) -> Iterator[tuple[int, Union[str, list[int]]]]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        sync = _synchronizer(self.prompts[0].device)
        sync()
        start = time.perf_counter()
        yield from stream_text(self.model, self.prompts, self.rows, self.max_new_tokens, **self._options)
        sync()
        self.seconds = time.perf_counter() - start
        firsts = [r.first_token_time for r in self.rows if r.first_token_time is not None]
        self.first_token_seconds = (min(firsts) - start) if firsts else None

    def run(self) -> "Generation":
        """Generates to the end without handling the pieces; returns self."""
        for _ in self:
            pass
        return self

    @property
    def texts(self) -> list[str]:
        """Each row's text (without stop tokens, cut before the first stop string)."""
        return [r.text for r in self.rows]

    @property
    def token_ids(self) -> list[list[int]]:
        """Each row's new ids, without the stop sequence (see `TextRow.token_ids`)."""
        return [r.token_ids() for r in self.rows]

    @property
    def tokens_generated(self) -> int:
        """New tokens sampled, summed over the rows (each counted once; a final stop token included)."""
        return sum(len(r.tokens) for r in self.rows)

    @property
    def tokens_per_second(self) -> float:
        """`tokens_generated / seconds` (0.0 before the generation ran)."""
        return self.tokens_generated / self.seconds if self.seconds else 0.0


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
