"""`LitGPTLM`: the lm-evaluation-harness model interface on our own `GPT` and `Tokenizer`.

No conversion to transformers: the harness's requests are tokenized with the checkpoint's tokenizer and scored
with `litgpt.eval.perplexity.score_rows` (loglikelihood, loglikelihood_rolling) or generated with the engine of
`litgpt.generate.engine` (generate_until), in batches.

    import lm_eval
    from litgpt.eval.lm_eval_model import LitGPTLM
    lm = LitGPTLM(model, tokenizer, batch_size=8)
    results = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, NamedTuple, Optional

import torch
from lm_eval.api.model import LM

from litgpt.eval.perplexity import (
    ScoreRow,
    batched,
    check_int,
    check_max_length,
    compute_dtype,
    model_device,
    prefix_token,
    rolling_windows,
    score_rows,
)
from litgpt.generate.engine import Generation, TextRow
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer


class GenerationSettings(NamedTuple):
    """The generation arguments of a `generate_until` request that our engine uses (hashable, for grouping)."""

    until: tuple[str, ...]
    max_new_tokens: int
    temperature: float
    top_k: Optional[int]
    top_p: float


class LitGPTLM(LM):
    """An `lm_eval.api.model.LM` backed by a litgpt `GPT` and `Tokenizer`.

    Attributes:
        model: the model (eval mode, on `device`).
        tokenizer: its tokenizer.
        batch_size: sequences per forward pass (scoring) or per generation batch.
        max_length: the most tokens the model reads at once; longer contexts are cut from the left.
        max_gen_toks: new tokens for a `generate_until` request that does not set `max_gen_toks`.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        batch_size: int = 1,
        max_length: Optional[int] = None,
        max_gen_toks: int = 256,
        device: Optional[torch.device] = None,
        progress: bool = True,
    ) -> None:
        """
        Args:
            model: the model, already on its device and in its dtype.
            tokenizer: the checkpoint's tokenizer.
            batch_size: sequences per forward pass / generation batch (>= 1).
            max_length: the most tokens per forward pass (default and maximum: the model's context).
            max_gen_toks: default new-token limit of `generate_until` requests (>= 1).
            device: where the model runs (default: where its weights are).
            progress: show tqdm progress bars.
        """
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("max_gen_toks", max_gen_toks, 1)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = check_max_length(model, max_length)
        self.max_gen_toks = max_gen_toks
        self._device = device or model_device(model)
        self.progress = progress
        self._prefix_id = prefix_token(tokenizer)
        self._warned_keys: set[str] = set()

    # ----------------------------------------------------------------------------------------- tokenizing

    def tok_encode(self, text: str, bos: Optional[bool] = None) -> list[int]:
        """Token ids of `text`; `bos` None follows the tokenizer's convention (`use_bos`).

        Args:
            text: the text.
            bos: prepend the bos token.
        """
        return self.tokenizer.encode(text, bos=bos).tolist()

    def _context_tokens(self, context: str) -> list[int]:
        """The context as the model sees it: bos first when the tokenizer adds it; an empty context becomes the
        prefix token (bos or eos), so that the first continuation token is predicted from something."""
        if context:
            return self.tok_encode(context)
        if self._prefix_id is None:
            raise ValueError(
                f"{self.tokenizer.checkpoint_dir}: the tokenizer has neither a bos nor an eos token, so a continuation "
                "of an empty context cannot be scored"
            )
        return [self._prefix_id]

    def _pair_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids), split so that the continuation is tokenized as it is in the whole
        text: spaces ending the context move to the continuation, then the whole text is encoded once."""
        stripped = context.rstrip()
        if stripped != context and stripped:
            continuation = context[len(stripped) :] + continuation
            context = stripped
        context_ids = self._context_tokens(context)
        if not context:
            return context_ids, self.tok_encode(continuation, bos=False)
        whole = self.tok_encode(context + continuation)
        return whole[: len(context_ids)], whole[len(context_ids) :]

    def _loglikelihood_row(self, context_ids: list[int], continuation_ids: list[int]) -> ScoreRow:
        """The row scoring the continuation; the context is cut from the left to fit `max_length` inputs."""
        tokens = (context_ids + continuation_ids)[-(self.max_length + 1) :]
        n_scored = min(len(continuation_ids), len(tokens) - 1)
        if n_scored < len(continuation_ids):
            self._warn_once(
                "long continuation",
                f"a continuation of {len(continuation_ids)} tokens does not fit in max_length={self.max_length}; "
                f"only its last {n_scored} tokens are scored",
            )
        return ScoreRow(tuple(tokens), n_scored)

    # ----------------------------------------------------------------------------------------- the LM API

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """Log-probability of each request's continuation given its context, and whether it is the greedy one.

        Args:
            requests: lm-eval `Instance`s whose `args` are `(context, continuation)`.
        """
        rows = [self._loglikelihood_row(*self._pair_tokens(*req.args)) for req in requests]
        results = score_rows(self.model, rows, self.batch_size, self._device, self._bar("loglikelihood"))
        for req, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """Log-probability of each request's whole text (conditioned on the prefix token), in rolling windows of
        `max_length` tokens so that every token is predicted once with as much context as fits.

        Args:
            requests: lm-eval `Instance`s whose `args` are `(text,)`.
        """
        rows: list[ScoreRow] = []
        owner: list[int] = []
        for i, req in enumerate(requests):
            windows = rolling_windows(self.tok_encode(req.args[0], bos=False), self.max_length, self._prefix_id)
            rows.extend(windows)
            owner.extend([i] * len(windows))
        scores = score_rows(self.model, rows, self.batch_size, self._device, self._bar("loglikelihood_rolling"))
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, scores):
            totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Generated text of each request, cut before its first stop string (`until`) or the tokenizer's stop
        tokens. Requests with the same generation arguments are generated together, longest prompts first.

        Args:
            requests: lm-eval `Instance`s whose `args` are `(context, gen_kwargs)`; gen_kwargs may hold `until`,
                `max_gen_toks`, `do_sample`, `temperature`, `top_k`, `top_p`.
        """
        groups: dict[GenerationSettings, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[self._generation_settings(req.args[1])].append(i)
        results: list[str] = [""] * len(requests)
        bar = self._progress(len(requests), "generate_until")
        try:
            for settings, indices in groups.items():
                prompts = {i: self._prompt(requests[i].args[0], settings.max_new_tokens) for i in indices}
                indices.sort(key=lambda i: len(prompts[i]), reverse=True)
                for chunk in batched(indices, self.batch_size):
                    for i, text in zip(chunk, self._generate([prompts[i] for i in chunk], settings)):
                        results[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(chunk))
        finally:
            bar.close()
            self.model.clear_kv_cache()  # the scoring passes need no cache: give its memory back
        return results

    def get_model_info(self) -> dict[str, Any]:
        """Model facts that lm-eval adds to its results' `config`."""
        config = self.model.config
        return {
            "model_name": config.name,
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "model_dtype": str(compute_dtype(self.model)).removeprefix("torch."),
            "max_length": self.max_length,
        }

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer's folder name (lm-eval fingerprints request caches with it)."""
        return self.tokenizer.model_name

    # ----------------------------------------------------------------------------------------- generation

    def _generation_settings(self, gen_kwargs: Optional[dict]) -> GenerationSettings:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
        top_k = kwargs.pop("top_k", None)
        top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
        for key in kwargs:
            self._warn_once(key, f"generation argument {key}={kwargs[key]!r} is not supported and ignored")
        if not do_sample:
            temperature, top_k, top_p = 0.0, None, 1.0
        max_new = max(1, min(max_new, self.max_length - 1))
        return GenerationSettings(tuple(until), max_new, temperature, None if top_k is None else int(top_k), top_p)

    def _prompt(self, context: str, max_new_tokens: int) -> torch.Tensor:
        """The prompt ids, cut from the left so that prompt + new tokens fit in `max_length`."""
        ids = self._context_tokens(context)[-(self.max_length - max_new_tokens) :]
        return torch.tensor(ids, dtype=torch.long, device=self._device)

    def _generate(self, prompts: list[torch.Tensor], settings: GenerationSettings) -> list[str]:
        rows = [TextRow(self.tokenizer, self.tokenizer.stop_tokens, settings.until) for _ in prompts]
        generation = Generation(
            self.model, prompts, rows, settings.max_new_tokens,
            temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
        )
        return generation.run().texts

    # ----------------------------------------------------------------------------------------- helpers

    def _bar(self, description: str) -> Optional[str]:
        return description if self.progress else None

    def _progress(self, total: int, description: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=description, disable=not self.progress)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned_keys:
            self._warned_keys.add(key)
            warnings.warn(message, stacklevel=3)

