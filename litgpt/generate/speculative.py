"""Speculative decoding: a small draft model proposes `k` tokens, the target model checks them in one forward.

Greedy decoding gives exactly the target model's own output; with sampling, speculative sampling
(Leviathan et al., 2023; Chen et al., 2023) keeps the target's output distribution. Both models must share
the tokenizer. Batch size 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from litgpt.generate.cpu import native_decode_step
from litgpt.generate.engine import check_sampling_args, sample
from litgpt.model import GPT


@dataclass
class SpeculativeStats:
    """Counters of one speculative run."""

    proposed: int = 0
    """Draft tokens proposed to the target."""
    accepted: int = 0
    """Draft tokens the target accepted."""
    target_calls: int = 0
    """Forward passes of the target model (prefill included)."""
    native: tuple[bool, bool] = (False, False)
    """Whether the target and the draft ran on the native CPU kernels."""

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft tokens (0 when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else 0.0


def _probs(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: float) -> torch.Tensor:
    """The sampling distribution `sample` draws from, as probabilities (..., V), float32."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_idx = torch.sort(probs, dim=-1, descending=True)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs.masked_fill(drop, 0.0))
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class _Forward:
    """One model's forward over new tokens of its cached sequence (batch 1), on the engine `generate` uses: the
    native CPU kernels where they run the model (`litgpt.generate.cpu`, bfloat16 on AVX512-BF16 CPUs), else
    the PyTorch modules. Logits are float32."""

    def __init__(self, model: GPT) -> None:
        self.model = model
        on_cpu = model.lm_head.weight.device.type == "cpu"
        self.native = native_decode_step(model) if on_cpu else None

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """The 1-D prompt at positions 0..T-1; the last token's logits (1, V)."""
        if self.native is not None:
            return self.native.prefill(self.model, [prompt])
        positions = torch.arange(prompt.numel(), device=prompt.device)
        return self.model(prompt.unsqueeze(0), input_pos=positions)[:, -1].float()

    def __call__(self, tokens: list[int], start: int, device: torch.device) -> torch.Tensor:
        """`tokens` at positions start, start + 1, ...; every token's logits (n, V)."""
        if self.native is not None:
            return self.native.extend(self.model, torch.tensor(tokens), start)
        positions = torch.arange(start, start + len(tokens), device=device)
        return self.model(torch.tensor([tokens], device=device), input_pos=positions)[0].float()


@torch.inference_mode()
def speculative_generate(
    target: GPT,
    draft: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    speculative_k: int = 4,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: Sequence[Sequence[int]] = (),
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Generates up to `max_new_tokens` after the 1-D `prompt`. Returns (new token ids, stats).

    Each round the draft proposes `speculative_k` tokens one by one; the target scores all of them in one
    forward and keeps the longest accepted prefix plus one token of its own, so every round yields between
    1 and `speculative_k + 1` tokens. Stops early on any of `stop_tokens` (sequences of ids). Both models run
    on `generate`'s engine: the native CPU kernels where they can (the target's check is one multi-row
    pass, like a prefill), else the PyTorch modules.
    """
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if speculative_k < 1:
        raise ValueError(f"speculative_k must be >= 1, got {speculative_k}")
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise ValueError("prompt must be a non-empty 1-D tensor of token ids")
    if draft.config.padded_vocab_size != target.config.padded_vocab_size:
        raise ValueError(
            f"the draft model's vocabulary ({draft.config.padded_vocab_size}) differs from the target's "
            f"({target.config.padded_vocab_size}): both must use the same tokenizer"
        )
    T = prompt.numel()
    context = min(target.max_seq_length, draft.max_seq_length)
    if T >= context:
        raise ValueError(f"the prompt has {T} tokens, the context holds {context}")
    max_new_tokens = min(max_new_tokens, context - T)
    cache_len = min(context, T + max_new_tokens + speculative_k + 1)
    device = prompt.device
    for model in (target, draft):
        model.set_kv_cache(batch_size=1, max_seq_length=cache_len)
    greedy = temperature == 0.0 or top_k == 1
    stats = SpeculativeStats(target_calls=1)
    stops = [list(s) for s in stop_tokens if len(s)]

    run_target, run_draft = _Forward(target), _Forward(draft)
    stats.native = (run_target.native is not None, run_draft.native is not None)
    prompt = prompt.to(device=device, dtype=torch.long)
    target_logits = run_target.prefill(prompt)  # (1, V)
    run_draft.prefill(prompt)
    first = sample(target_logits, temperature, top_k, top_p, generator)  # (1,)
    out: list[int] = [int(first)]
    # tokens the draft has not seen yet (they sit at positions draft_pos, draft_pos + 1, ...)
    draft_pending = [int(first)]
    draft_pos = T
    pos = T  # position of the last accepted token, not yet fed to the target
    last = int(first)

    def finished() -> bool:
        return len(out) >= max_new_tokens or any(out[-len(s):] == s for s in stops)

    while not finished():
        k = min(speculative_k, max_new_tokens - len(out), cache_len - pos - 1)
        if k < 1:
            break
        # 1) the draft proposes k tokens
        proposals, draft_probs = [], []
        feed = draft_pending
        for _ in range(k):
            logits = run_draft(feed, draft_pos, device)[-1:]  # (1, V)
            draft_pos += len(feed)
            if greedy:
                token = int(logits.argmax(dim=-1))
            else:
                q = _probs(logits, temperature, top_k, top_p)
                token = int(torch.multinomial(q, 1, generator=generator))
                draft_probs.append(q[0])
            proposals.append(token)
            feed = [token]
        # 2) the target scores [last, d_1 .. d_k] in one forward: k + 1 next-token distributions
        logits = run_target([last, *proposals], pos, device)  # (k + 1, V)
        stats.target_calls += 1
        stats.proposed += k
        # 3) accept the longest agreeing prefix, then one token from the target
        n_ok = 0
        if greedy:
            choice = logits.argmax(dim=-1).tolist()
            while n_ok < k and proposals[n_ok] == choice[n_ok]:
                n_ok += 1
            extra = choice[n_ok]
        else:
            p = _probs(logits, temperature, top_k, top_p)  # (k + 1, V)
            extra = None
            for i, d in enumerate(proposals):
                ratio = (p[i, d] / draft_probs[i][d].clamp_min(1e-20)).clamp(max=1.0)
                if torch.rand((), generator=generator, device=p.device) <= ratio:
                    n_ok += 1
                    continue
                residual = (p[i] - draft_probs[i]).clamp_min(0.0)
                residual = residual / residual.sum() if residual.sum() > 0 else p[i]
                extra = int(torch.multinomial(residual, 1, generator=generator))
                break
            if extra is None:
                extra = int(torch.multinomial(p[k], 1, generator=generator))
        stats.accepted += n_ok
        new = proposals[:n_ok] + [extra]
        for token in new:  # respect max_new_tokens and stop sequences inside the round
            out.append(token)
            if finished():
                break
        # the draft has seen last, d_1 .. d_{k-1}; what it still needs before the next round:
        draft_pos = pos + 1 + min(n_ok, k - 1)
        draft_pending = proposals[k - 1 :] + [extra] if n_ok == k else [extra]
        pos += n_ok + 1
        last = extra
    for model in (target, draft):
        model.clear_kv_cache()
    return torch.tensor(out[:max_new_tokens], dtype=torch.long), stats


def main(
    draft_model_checkpoint_dir: Path,
    target_model_checkpoint_dir: Path,
    prompt: str = "What food do llamas eat?",
    *,
    sys_prompt: Optional[str] = None,
    num_samples: int = 1,
    max_new_tokens: int = 50,
    speculative_k: int = 3,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    temperature: float = 0.8,
    quantize: Optional[str] = None,
    precision: Optional[str] = None,
    compile: bool = False,
    seed: int = 1234,
) -> None:
    """Generate with speculative decoding: a small draft model proposes tokens, the target model checks them.

    LitGPT's order: the DRAFT checkpoint first, then the TARGET. Greedy decoding (`--temperature 0`) gives
    exactly the target model's own output (`litgpt generate TARGET --temperature 0`); with sampling, the text
    follows the target's distribution. Both models must share the tokenizer (the target's is used, with its
    prompt style). The text goes to stdout; a line with time, tokens/s and the draft's acceptance rate to stderr.

    Args:
        draft_model_checkpoint_dir: The draft model's checkpoint folder (small and fast, same tokenizer).
        target_model_checkpoint_dir: The target model's checkpoint folder (the model whose output you get).
        prompt: The prompt.
        sys_prompt: A system prompt (default: the prompt style's, if it has one).
        num_samples: How many samples to generate, one after another.
        max_new_tokens: At most this many new tokens per sample (clipped to the context).
        speculative_k: Tokens the draft proposes per round (>= 1).
        top_k: Sample among the k most likely tokens only (1 is greedy).
        top_p: Sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
        temperature: Sampling temperature; 0 is greedy decoding.
        quantize: Weight quantization of both models while loading (as for `litgpt generate`).
        precision: 32-true, bf16-true or 16-true (default as for `litgpt generate`); the draft uses the target's.
        compile: Accepted for LitGPT compatibility; speculative decoding runs without torch.compile here.
        seed: Random seed for sampling.
    """
    import sys
    import time
    import warnings

    from litgpt.api import LLM, check_quantize
    from litgpt.precision import check_inference_precision as check_precision
    from litgpt.utils import check_valid_checkpoint_dir

    check_quantize(quantize)
    check_precision(precision)
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if isinstance(speculative_k, bool) or not isinstance(speculative_k, int) or speculative_k < 1:
        raise ValueError(f"speculative_k must be >= 1, got {speculative_k}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    check_valid_checkpoint_dir(draft_model_checkpoint_dir)
    check_valid_checkpoint_dir(target_model_checkpoint_dir)
    if compile:
        warnings.warn("--compile is not used by speculative decoding (it runs the models as they are)")
    target = LLM.load(str(target_model_checkpoint_dir), distribute=None)
    target.distribute(precision=precision, quantize=quantize)
    draft = LLM.load(str(draft_model_checkpoint_dir), distribute=None)
    draft.distribute(precision=target.precision, quantize=quantize)
    tokenizer = target.tokenizer
    text = target.prompt_style.apply(prompt, sys_prompt=sys_prompt)
    ids = tokenizer.encode(text, device=target.device)
    stops = [list(s) for s in target.prompt_style.stop_tokens(tokenizer)] + [[t] for t in tokenizer.stop_tokens]
    torch.manual_seed(seed)
    total = SpeculativeStats()
    n_tokens, seconds = 0, 0.0
    for i in range(num_samples):
        t0 = time.perf_counter()
        out, stats = speculative_generate(
            target.model, draft.model, ids, max_new_tokens, speculative_k=speculative_k, temperature=temperature,
            top_k=top_k, top_p=top_p, stop_tokens=stops,
        )
        seconds += time.perf_counter() - t0
        n_tokens += len(out)
        total.proposed, total.accepted = total.proposed + stats.proposed, total.accepted + stats.accepted
        total.target_calls += stats.target_calls
        total.native = stats.native
        if num_samples > 1:
            sys.stdout.write(f"--- sample {i + 1} of {num_samples} ---\n")
        sys.stdout.write(tokenizer.decode(out) + "\n")
        sys.stdout.flush()
    engine = {(True, True): "native CPU kernels", (True, False): "target on the native CPU kernels",
              (False, True): "draft on the native CPU kernels"}.get(total.native, target.device.type)
    print(
        f"Time for inference: {seconds:.02f} sec total, {n_tokens / seconds:.02f} tokens/sec ({n_tokens} tokens, "
        f"{engine}, {target.precision}); acceptance rate {total.acceptance_rate:.1%} ({total.accepted}/"
        f"{total.proposed} draft tokens), {total.target_calls} target forward passes",
        file=sys.stderr,
    )
