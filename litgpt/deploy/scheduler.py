"""Continuous batching: one engine thread decodes every running request together, one token per step.

Requests arrive from any thread (`Scheduler.submit`). The engine thread owns the model and a KV cache of up
to `max_batch_size` rows (slots). Each turn of its loop it

1. admits waiting requests into free slots: their prompts are prefilled as one right-padded batch written
   straight into those rows of the cache (each row keeps its own positions, so a row's keys and values are
   the ones it would get alone),
2. runs ONE decode step for all running requests, each at its own position,
3. samples each row's next token with the row's own settings (temperature, top_k, top_p, its own seeded
   random generator), hands the new text to the request's `sink`, and
4. retires the rows that finished (stop tokens, stop strings, max_new_tokens, end of the context, cancelled):
   the last running row moves into the freed slot, so the running rows always fill slots 0..n-1 and a step
   computes exactly n rows.

The cache grows on demand (rows and positions, in powers of two) up to `max_batch_size` x `max_seq_length`.
Each step attends over the first L positions only (L = the longest running row, rounded up to a multiple of
64): the layers' `kv_cache` are pointed at views of the big cache, so nothing is copied.

The tensor work is the engine of `litgpt generate`: where `litgpt.generate.cpu.native_decode_problem` finds
nothing against it (a bfloat16 model on an AVX512-BF16 CPU), prompts and steps run through the same native
kernels (`NativeDecoder.prefill` into the request's cache rows, one batched `NativeDecoder` step for all
running rows); elsewhere through `prefill` / `decode_one_token`. Sampling (`sample`) and the text handling of
`TextRow` (incremental decoding, stop tokens and stop strings) are shared too, so a greedy request gives the
same tokens here as alone with `generate`, `LLM.generate` or `litgpt generate`.
"""

from __future__ import annotations

import queue
import random
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import torch

from litgpt.utils import check_int
from litgpt.generate.engine import (
    StopTokens,
    TextRow,
    check_sampling_args,
    decode_one_token,
    normalize_stop_tokens,
    prefill,
    right_pad,
    sample,
)
from litgpt.generate.cpu import native_decode_problem, native_decode_step
from litgpt.model import GPT, KVCache

LENGTH_STEP = 64  # attention spans the running rows' positions rounded up to this many slots


@dataclass(frozen=True)
class Event:
    """What a request receives from the engine: new text, and at the end the outcome.

    Attributes:
        text: text released since the previous event (may be "" on the final event).
        done: True on the request's last event.
        finish_reason: on the last event: "stop" (stop token or stop string), "length" (max_new_tokens or the
            end of the context), "cancelled", or "error".
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated so far (a final stop token included).
        token_ids: on the last event, every token generated (a final stop token included).
        error: on an "error" event, what went wrong.
    """

    text: str
    done: bool = False
    finish_reason: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: tuple[int, ...] = ()
    error: Optional[str] = None


Sink = Callable[[Event], None]


class GenerationRequest:
    """One prompt to complete, with its own sampling settings. Hand it to `Scheduler.submit`.

    Attributes:
        prompt: the prompt's token ids.
        max_new_tokens: at most this many new tokens (clipped by `submit` to what the context leaves).
        cancelled: set by `cancel()`; the engine drops the request at its next step.
    """

    def __init__(
        self,
        prompt: Union[Sequence[int], torch.Tensor],
        sink: Sink,
        *,
        max_new_tokens: int = 50,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        stop_tokens: StopTokens = (),
        stop_strings: Iterable[str] = (),
    ) -> None:
        """
        Args:
            prompt: token ids (a list or a 1-D tensor), at least one.
            sink: called from the engine thread with each `Event`; it must return quickly (e.g. put the event
                on a queue). An exception in it cancels the request.
            max_new_tokens: at most this many new tokens (>= 1).
            temperature, top_k, top_p: sampling, as in `litgpt.generate.engine.sample` (temperature 0: greedy).
            seed: seed of this request's random generator (same seed, same sample, whatever runs beside it);
                None draws a fresh one.
            stop_tokens: ids or id sequences that end the output (left out of the text).
            stop_strings: strings that end the output (the text stops right before the first one).
        """
        check_sampling_args(temperature, top_k, top_p, max_new_tokens)
        ids = prompt.reshape(-1).tolist() if isinstance(prompt, torch.Tensor) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("the prompt holds no tokens")
        if seed is not None:
            check_int("seed", seed, 0, 2**63 - 1)
        self.prompt = ids
        self.sink = sink
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.stop_tokens = normalize_stop_tokens(stop_tokens)
        self.stop_strings = [s for s in stop_strings if s]
        self.cancelled = False

    @property
    def greedy(self) -> bool:
        """Whether the next token is always the most likely one."""
        return self.temperature == 0 or self.top_k == 1

    def cancel(self) -> None:
        """Stops the request (its slot is freed at the engine's next step; the last event says "cancelled")."""
        self.cancelled = True


@dataclass(frozen=True)
class Completion:
    """A finished request (see `Scheduler.generate`)."""

    text: str
    finish_reason: str
    token_ids: tuple[int, ...]
    prompt_tokens: int


@dataclass
class _Slot:
    """A running request: its text state and where its next token goes."""

    request: GenerationRequest
    row: TextRow
    generator: Optional[torch.Generator]
    pos: int = 0  # cache position the pending token is written to
    pending: int = 0  # the last sampled token, fed at the next step


@dataclass
class SchedulerStats:
    """Counters of the engine (for monitoring and tests).

    Attributes:
        steps: decode steps run.
        prefills: prefill batches run.
        admitted: requests admitted into a slot.
        tokens: tokens sampled (over all requests).
        max_running: the most requests decoded together in one step.
        running: requests in a slot now.
        waiting: requests queued for a slot now.
    """

    steps: int = 0
    prefills: int = 0
    admitted: int = 0
    tokens: int = 0
    max_running: int = 0
    running: int = 0
    waiting: int = 0


class _CacheView(KVCache):
    """A layer's KV cache backed by a slice of the scheduler's cache (writes land in the big tensors)."""

    native_decode = True  # plain k / v tensors: the native CPU decode step reads and writes them in place

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        torch.nn.Module.__init__(self)
        self.k, self.v = k, v


class Scheduler:
    """Runs many generation requests on one model with continuous batching (see the module docstring).

    Use it as a context manager, or call `close()` when done:

        with Scheduler(model, tokenizer, max_batch_size=16) as scheduler:
            print(scheduler.generate(ids, max_new_tokens=20, temperature=0).text)

    Attributes:
        native_problem: None when the steps run through the native CPU kernels (as in `litgpt generate`),
            else why they run through the PyTorch modules.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer,
        *,
        max_batch_size: int = 16,
        max_seq_length: Optional[int] = None,
        prefill_tokens: int = 8192,
        memory_budget: Optional[int] = None,
    ) -> None:
        """
        Args:
            model: the model, on its device, in its precision (e.g. from `LLM.distribute`). The scheduler owns
                it from now on: it sets the layers' KV caches; do not use it elsewhere while the scheduler runs.
            tokenizer: its `litgpt.Tokenizer` (to decode the text and find stop strings).
            max_batch_size: requests decoded together at most (slots of the KV cache); more wait for a slot.
            max_seq_length: positions per request (prompt + new tokens); default and maximum: the model's
                block_size. It bounds the KV cache: max_batch_size x max_seq_length positions at most.
            prefill_tokens: admitted prompts are prefilled together while their padded batch stays under this
                many tokens (a longer prompt is prefilled alone).
            memory_budget: bytes the KV cache may take at most; `max_batch_size` is lowered (with a warning) so
                that max_batch_size x max_seq_length positions fit. None: no limit.
        """
        check_int("max_batch_size", max_batch_size, 1)
        check_int("prefill_tokens", prefill_tokens, 1)
        block_size = model.config.block_size
        if max_seq_length is None:
            max_seq_length = block_size
        check_int("max_seq_length", max_seq_length, 2, block_size, " (the model's block_size)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.context = max_seq_length
        self.prefill_tokens = prefill_tokens
        if model.max_seq_length < max_seq_length:
            model.max_seq_length = max_seq_length  # RoPE tables for every position a request may reach
        self.device = model.cos.device
        self.native_problem: Optional[str] = "not on the CPU"
        self._layout = self._cache_layout()
        self._decoder = None  # the native decode step bound to the current cache (CPU bfloat16 models)
        self.bytes_per_row = max_seq_length * sum(2 * g * h * d.itemsize for g, h, d in self._layout)
        if memory_budget is not None and self.bytes_per_row * max_batch_size > memory_budget:
            fitting = max(1, memory_budget // self.bytes_per_row)
            warnings.warn(
                f"a KV cache of {max_batch_size} x {max_seq_length} positions needs "
                f"{self.bytes_per_row * max_batch_size / 2**30:.1f} GiB but {memory_budget / 2**30:.1f} GiB are free: "
                f"decoding at most {fitting} requests together (lower max_seq_length to allow more)",
                stacklevel=2,
            )
            self.max_batch_size = fitting
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        self._rows_cap = 0
        self._len_cap = 0
        self._bound: Optional[tuple] = None
        self._running: list[_Slot] = []
        self._waiting: list[GenerationRequest] = []
        self._cond = threading.Condition()
        self._closing = False
        self._stats = SchedulerStats()
        self._seeds = random.SystemRandom()
        self._thread = threading.Thread(target=self._loop, name="litgpt-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------- public API

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        """Queues a request; its events reach `request.sink` from the engine thread. Returns the request.

        Raises a ValueError when the prompt leaves no room to generate in `max_seq_length`; `max_new_tokens`
        is clipped to the room left (the request then ends with finish_reason "length").

        Args:
            request: the request.
        """
        prompt_len = len(request.prompt)
        if prompt_len >= self.context:
            raise ValueError(
                f"the prompt is {prompt_len} tokens but the context holds {self.context}: a prompt may be at "
                f"most {self.context - 1} tokens"
            )
        vocab = self.model.config.padded_vocab_size
        bad = [t for t in request.prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the model's vocabulary [0, {vocab})")
        request.max_new_tokens = min(request.max_new_tokens, self.context - prompt_len)
        with self._cond:
            if self._closing:
                raise RuntimeError("the scheduler is closed")
            self._waiting.append(request)
            self._cond.notify()
        return request

    def stream(self, prompt: Union[Sequence[int], torch.Tensor], **kwargs) -> Iterator[Event]:
        """Submits a prompt and yields its events as they come (blocking). Leaving the loop early cancels it.

        Args:
            prompt: token ids.
            kwargs: the settings of `GenerationRequest` (max_new_tokens, temperature, ..., stop_strings).
        """
        events: "queue.SimpleQueue[Event]" = queue.SimpleQueue()
        request = self.submit(GenerationRequest(prompt, events.put, **kwargs))
        done = False
        try:
            while not done:
                event = events.get()
                done = event.done
                yield event
        finally:
            if not done:
                request.cancel()

    def generate(self, prompt: Union[Sequence[int], torch.Tensor], **kwargs) -> Completion:
        """Submits a prompt and waits for its whole output (safe to call from many threads at once).

        Args:
            prompt: token ids.
            kwargs: the settings of `GenerationRequest` (max_new_tokens, temperature, ..., stop_strings).
        """
        pieces = []
        for event in self.stream(prompt, **kwargs):
            if event.error is not None:
                raise RuntimeError(f"generation failed: {event.error}")
            pieces.append(event.text)
        return Completion("".join(pieces), event.finish_reason, event.token_ids, event.prompt_tokens)

    @property
    def stats(self) -> SchedulerStats:
        """A snapshot of the engine's counters."""
        with self._cond:
            snapshot = SchedulerStats(**vars(self._stats))
            snapshot.running, snapshot.waiting = len(self._running), len(self._waiting)
        return snapshot

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Stops the engine thread; running and waiting requests end with finish_reason "cancelled".

        Args:
            timeout: seconds to wait for the thread.
        """
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- engine thread

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._waiting or self._running or self._closing):
                        self._cond.wait()
                    if self._closing:
                        break
                    free = self.max_batch_size - len(self._running)
                    admitted, self._waiting = self._waiting[:free], self._waiting[free:]
                try:
                    self._admit([r for r in admitted if not self._drop_if_cancelled(r)])
                    if self._running:
                        self._step()
                except Exception as err:  # a failed step must not stop the server: fail its requests
                    self._fail_running(f"{type(err).__name__}: {err}")
        for slot in self._running:
            self._finish(slot, "cancelled")
        with self._cond:
            waiting, self._waiting = self._waiting, []
        for request in waiting:
            _deliver(request, Event("", True, "cancelled", len(request.prompt)))
        self._running = []
        self._release_cache()

    def _drop_if_cancelled(self, request: GenerationRequest) -> bool:
        if request.cancelled:
            _deliver(request, Event("", True, "cancelled", len(request.prompt)))
        return request.cancelled

    def _admit(self, requests: list[GenerationRequest]) -> None:
        """Prefills the new requests (in batches of similar length) into the slots after the running ones."""
        requests = sorted(requests, key=lambda r: len(r.prompt))
        while requests:
            chunk = [requests.pop(0)]
            while requests and (len(chunk) + 1) * len(requests[0].prompt) <= self.prefill_tokens:
                chunk.append(requests.pop(0))
            self._prefill(chunk)

    def _prefill(self, requests: list[GenerationRequest]) -> None:
        start, count = len(self._running), len(requests)
        prompts = [torch.tensor(r.prompt, dtype=torch.long, device=self.device) for r in requests]
        self._reserve(start + count, max(len(r.prompt) for r in requests))
        try:
            if self._bind_native():  # no padding: every prompt token is a row of one pass
                logits = self._decoder.prefill(self.model, prompts, first_row=start)
            else:
                batch, lengths = right_pad(prompts)
                self._bind(slice(start, start + count), batch.size(1))
                logits = prefill(self.model, batch, lengths - 1)
        except Exception as err:  # e.g. out of memory on a long prompt: these requests fail, the others go on
            for r in requests:
                _deliver(r, Event("", True, "error", len(r.prompt), error=f"{type(err).__name__}: {err}"))
            return
        slots = [
            _Slot(r, TextRow(self.tokenizer, r.stop_tokens, r.stop_strings), self._generator(r), pos=len(r.prompt))
            for r in requests
        ]
        self._running.extend(slots)
        with self._cond:
            self._stats.prefills += 1
            self._stats.admitted += count
        self._take_tokens(logits, start)

    def _step(self) -> None:
        n = len(self._running)
        tokens = torch.tensor([s.pending for s in self._running], dtype=torch.long, device=self.device).view(n, 1)
        positions = [s.pos for s in self._running]
        input_pos = torch.tensor(positions, dtype=torch.long, device=self.device).view(n, 1)
        needed = max(positions) + 1
        self._reserve(n, needed)
        if self._bind_native():
            logits = self._decoder(self.model, tokens, input_pos)  # attends each row's own positions only
        else:
            span = min(self._len_cap, -(-needed // LENGTH_STEP) * LENGTH_STEP)
            self._bind(slice(0, self._rows_cap), span)
            logits = decode_one_token(self.model, tokens, input_pos)
        for slot in self._running:
            slot.pos += 1
        with self._cond:
            self._stats.steps += 1
            self._stats.max_running = max(self._stats.max_running, n)
        self._take_tokens(logits, 0)

    def _take_tokens(self, logits: torch.Tensor, start: int) -> None:
        """Samples the next token of the rows start.. (one row of `logits` each), delivers the new text and
        retires the rows that finished."""
        slots = self._running[start:start + logits.size(0)]
        tokens = self._sample(logits, slots)
        finished = []
        for i, (slot, token) in enumerate(zip(slots, tokens)):
            request, row = slot.request, slot.row
            stop = row.add(token)
            slot.pending = token
            if request.cancelled:
                finished.append((start + i, "cancelled"))
            elif stop or len(row.tokens) >= request.max_new_tokens:
                finished.append((start + i, None))
            else:
                piece = row.take()
                if piece:
                    self._send(slot, Event(piece, prompt_tokens=len(request.prompt), completion_tokens=len(row.tokens)))
        with self._cond:
            self._stats.tokens += len(tokens)
        for index, reason in reversed(finished):  # highest first: a moved row is never one still to retire
            self._finish(self._running[index], reason)
            self._retire(index)

    def _sample(self, logits: torch.Tensor, slots: list[_Slot]) -> list[int]:
        greedy = logits.argmax(dim=-1).tolist()
        for i, slot in enumerate(slots):
            r = slot.request
            if not r.greedy:
                greedy[i] = int(sample(logits[i:i + 1], r.temperature, r.top_k, r.top_p, slot.generator)[0])
        return greedy

    def _generator(self, request: GenerationRequest) -> Optional[torch.Generator]:
        if request.greedy:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(request.seed if request.seed is not None else self._seeds.randrange(2**63))
        return generator

    def _finish(self, slot: _Slot, reason: Optional[str]) -> None:
        """Sends a slot's last event; `reason` overrides the row's own ("stop" / "length")."""
        row = slot.row
        row.finish()
        text = row.take()
        self._send(slot, Event(
            text, True, reason or row.finish_reason, len(slot.request.prompt), len(row.tokens), tuple(row.tokens),
        ))

    def _send(self, slot: _Slot, event: Event) -> None:
        if not _deliver(slot.request, event):
            slot.request.cancel()

    def _retire(self, index: int) -> None:
        """Frees slot `index`: the last running row moves into it (its cache rows too)."""
        last = len(self._running) - 1
        if index != last:
            moved = self._running[last]
            filled = moved.pos  # positions 0..pos-1 hold its keys and values
            for k, v in zip(self._k, self._v):
                k[index, :, :filled] = k[last, :, :filled]
                v[index, :, :filled] = v[last, :, :filled]
            self._running[index] = moved
        self._running.pop()

    def _fail_running(self, message: str) -> None:
        for slot in self._running:
            self._send(slot, Event(
                slot.row.take(), True, "error", len(slot.request.prompt), len(slot.row.tokens), error=message,
            ))
        self._running = []
        self._release_cache()

    # ------------------------------------------------------------------------------------------- the KV cache

    def _cache_layout(self) -> list[tuple[int, int, torch.dtype]]:
        """(groups, head size, dtype) of each layer's cache, as the model itself would allocate them. Also
        decides, as `generate` does, whether the native CPU decode step can run the model (`native_problem`)."""
        self.model.set_kv_cache(batch_size=1, max_seq_length=1, device=self.device)
        layout = [(b.attn.kv_cache.k.size(1), b.attn.kv_cache.k.size(3), b.attn.kv_cache.k.dtype)
                  for b in self.model.transformer.h]
        if self.device.type == "cpu":
            self.native_problem = native_decode_problem(self.model)
        self.model.clear_kv_cache()
        return layout

    def _reserve(self, rows: int, length: int) -> None:
        """Grows the cache (powers of two, within the limits) to hold `rows` rows of `length` positions."""
        rows_cap = max(self._rows_cap, min(self.max_batch_size, _next_power_of_two(rows)))
        len_cap = max(self._len_cap, min(self.context, max(LENGTH_STEP, _next_power_of_two(length))))
        if (rows_cap, len_cap) == (self._rows_cap, self._len_cap):
            return
        old_rows, old_len = self._rows_cap, self._len_cap
        new_k, new_v = [], []
        for layer, (groups, head_size, dtype) in enumerate(self._layout):
            shape = (rows_cap, groups, len_cap, head_size)
            k = torch.zeros(shape, device=self.device, dtype=dtype)
            v = torch.zeros(shape, device=self.device, dtype=dtype)
            if old_rows:
                k[:old_rows, :, :old_len] = self._k[layer]
                v[:old_rows, :, :old_len] = self._v[layer]
                self._k[layer] = self._v[layer] = None  # free the old layer before the next is allocated
            new_k.append(k)
            new_v.append(v)
        self._k, self._v = new_k, new_v
        self._rows_cap, self._len_cap = rows_cap, len_cap
        self._bound = None

    def _bind_native(self) -> bool:
        """Binds the whole cache for the native step (rebuilt when the cache grew); False on the PyTorch path."""
        if self.native_problem is not None:
            return False
        if self._bound != (0, self._rows_cap, self._len_cap) or self._decoder is None:
            self._bind(slice(0, self._rows_cap), self._len_cap)
            self._decoder = native_decode_step(self.model)
            if self._decoder is None:  # cannot happen for an eligible model; the PyTorch path is always right
                self.native_problem = native_decode_problem(self.model) or "the native step is unavailable"
                return False
        return True

    def _bind(self, rows: slice, length: int) -> None:
        """Points every layer's `kv_cache` at rows `rows`, positions 0..length-1 of the cache."""
        key = (rows.start, rows.stop, length)
        if key == self._bound:
            return
        for block, k, v in zip(self.model.transformer.h, self._k, self._v):
            block.attn.kv_cache = _CacheView(k[rows, :, :length], v[rows, :, :length])
        self._bound = key

    def _release_cache(self) -> None:
        self.model.clear_kv_cache()
        self._decoder = None
        self._k, self._v = [], []
        self._rows_cap = self._len_cap = 0
        self._bound = None


def _deliver(request: GenerationRequest, event: Event) -> bool:
    """Calls the request's sink; False when it failed (the receiver is gone)."""
    try:
        request.sink(event)
        return True
    except Exception:
        return False


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
