"""Scoring token sequences with a `GPT`: batched log-likelihoods, rolling windows, perplexity over text files.

The unit of work is a `ScoreRow`: a token sequence whose last `n_scored` tokens are scored, each given the
tokens before it in the row. `score_rows` runs rows through the model in batches (longest first, right-padded)
and returns each row's summed log-probability and whether greedy decoding would have produced the scored
tokens. Both the lm-evaluation-harness model class (`litgpt.eval.lm_eval_model`) and the perplexity evaluation
below are built on it.

    from litgpt.eval.perplexity import perplexity
    stats = perplexity(model, tokenizer, ["some text", "more text"], max_length=1024, batch_size=4)
    print(stats.perplexity, stats.nll, stats.tokens)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch

from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer
from litgpt.utils import check_int


@dataclass(frozen=True)
class ScoreRow:
    """A token sequence to score.

    Attributes:
        tokens: the model reads `tokens[:-1]`; `tokens[1:]` are the targets.
        n_scored: how many of the last targets count (the ones before only serve as context).
    """

    tokens: tuple[int, ...]
    n_scored: int


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer, for models whose weights are quantized buffers)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def compute_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype the model computes in: that of its first floating-point parameter or buffer."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prefix_token(tokenizer: Tokenizer) -> Optional[int]:
    """The token a document is conditioned on: bos, else eos (as lm-eval does), else None."""
    return tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id


def rolling_windows(
    tokens: Sequence[int], max_length: int, prefix_id: Optional[int] = None, stride: Optional[int] = None
) -> list[ScoreRow]:
    """Rows that score every token of a document exactly once with windows of at most `max_length` inputs.

    The document is `[prefix_id] + tokens` (the prefix is context only). Each window scores the next `stride`
    targets (default `max_length`: disjoint windows) and reads up to `max_length` tokens before them, so a
    window after the first starts with `max_length - stride` tokens of context from the windows before it
    (and the last window, which may score fewer, is still filled with full context).

    Args:
        tokens: the document's token ids.
        max_length: the most tokens one window feeds to the model (the model's context at most).
        prefix_id: token prepended as context for the first token (bos / eos); None scores from the second token.
        stride: targets scored per window, 1 <= stride <= max_length; smaller values give each window more
            context at the price of more windows.
    """
    stride = max_length if stride is None else stride
    check_int("max_length", max_length, 1)
    check_int("stride", stride, 1)
    if stride > max_length:
        raise ValueError(f"stride must be between 1 and max_length={max_length}, got {stride}")
    full = ([prefix_id] if prefix_id is not None else []) + [int(t) for t in tokens]
    rows = []
    for start in range(1, len(full), stride):
        end = min(start + stride, len(full))
        first = max(0, end - 1 - max_length)
        rows.append(ScoreRow(tuple(full[first:end]), end - start))
    return rows


@torch.inference_mode()
def score_rows(
    model: GPT,
    rows: Sequence[ScoreRow],
    batch_size: int = 1,
    device: Optional[torch.device] = None,
    progress: Optional[str] = None,
) -> list[tuple[float, bool]]:
    """(sum of the log-probabilities of the scored tokens, whether greedy decoding picks all of them) per row.

    Rows are batched longest first (an out-of-memory error shows on the first batch), right-padded (causal
    attention never reads the padding), and identical rows are scored once. Log-softmax runs in float32.

    Args:
        model: the model, in eval mode.
        rows: the rows; each may hold at most `model.max_seq_length + 1` tokens.
        batch_size: rows per forward pass.
        device: where the model runs (default: where its weights are).
        progress: a tqdm progress bar with this description; None shows none.
    """
    check_int("batch_size", batch_size, 1)
    device = device or model_device(model)
    unique = {row: None for row in rows if row.n_scored > 0}
    for row in unique:
        if len(row.tokens) - 1 > model.max_seq_length:
            raise ValueError(
                f"a row of {len(row.tokens) - 1} inputs exceeds the model's context of {model.max_seq_length}"
            )
        if row.n_scored > len(row.tokens) - 1:
            raise ValueError(f"a row scores {row.n_scored} tokens but holds only {len(row.tokens) - 1} targets")
    order = sorted(unique, key=lambda r: len(r.tokens), reverse=True)
    bar = _progress_bar(len(order), progress)
    for batch in batched(order, batch_size):
        for row, result in zip(batch, _score_batch(model, batch, device)):
            unique[row] = result
        bar.update(len(batch))
    bar.close()
    return [unique[row] if row.n_scored > 0 else (0.0, True) for row in rows]


def _score_batch(model: GPT, batch: Sequence[ScoreRow], device: torch.device) -> list[tuple[float, bool]]:
    width = max(len(r.tokens) for r in batch) - 1
    idx = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        idx[i, : len(row.tokens) - 1] = torch.tensor(row.tokens[:-1])
    logits = model(idx.to(device))  # (B, T, V)
    logprobs, greedy = [], []
    for i, row in enumerate(batch):
        n_inputs, n = len(row.tokens) - 1, row.n_scored
        scored = logits[i, n_inputs - n : n_inputs].float().log_softmax(dim=-1)  # (n, V)
        targets = torch.tensor(row.tokens[-n:], device=device)
        logprobs.append(scored.gather(-1, targets[:, None]).sum())
        greedy.append((scored.argmax(dim=-1) == targets).all())
    return list(zip(torch.stack(logprobs).tolist(), torch.stack(greedy).tolist()))


def _progress_bar(total: int, description: Optional[str]):
    from tqdm import tqdm

    return tqdm(total=total, desc=description or "", disable=description is None, unit="row")


# ------------------------------------------------------------------------------------------------------------
# perplexity over text files


@dataclass(frozen=True)
class PerplexityResult:
    """Token-level perplexity of a set of documents.

    Attributes:
        perplexity: exp(nll).
        nll: mean negative log-likelihood per scored token, in nats.
        tokens: how many tokens were scored.
        documents: how many documents (files) were read.
        windows: how many model windows were run.
    """

    perplexity: float
    nll: float
    tokens: int
    documents: int
    windows: int


def text_files(data_dir: Union[str, Path]) -> list[Path]:
    """The `*.txt` files under `data_dir` (recursively, sorted); a one-line error when there are none.

    Args:
        data_dir: the folder to read.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data_dir {data_dir} is not a directory")
    files = sorted(p for p in data_dir.rglob("*.txt") if p.is_file())
    if not files:
        raise FileNotFoundError(f"--data_dir {data_dir} holds no .txt files")
    return files


def perplexity(
    model: GPT,
    tokenizer: Tokenizer,
    texts: Iterable[Union[str, Path]],
    max_length: Optional[int] = None,
    batch_size: int = 1,
    stride: Optional[int] = None,
    device: Optional[torch.device] = None,
    progress: Optional[str] = "perplexity",
) -> PerplexityResult:
    """Perplexity of the model over documents, each scored on its own in rolling windows (see `rolling_windows`).

    Every token of every document is predicted exactly once; the first one is conditioned on the bos token (eos
    when the tokenizer has no bos; with neither, the first token is context only).

    Args:
        model: the model, in eval mode.
        tokenizer: its tokenizer.
        texts: the documents: strings, or paths of UTF-8 text files.
        max_length: tokens per window (default and maximum: the model's context).
        batch_size: windows per forward pass.
        stride: targets scored per window (default `max_length`: disjoint windows).
        device: where the model runs (default: where its weights are).
        progress: description of the tqdm progress bar; None shows none.
    """
    max_length = check_max_length(model, max_length)
    prefix_id = prefix_token(tokenizer)
    rows: list[ScoreRow] = []
    documents = 0
    for text in texts:
        if isinstance(text, Path):
            text = text.read_text(encoding="utf-8")
        documents += 1
        ids = tokenizer.encode(text, bos=False).tolist()
        rows.extend(rolling_windows(ids, max_length, prefix_id, stride))
    tokens = sum(r.n_scored for r in rows)
    if tokens == 0:
        raise ValueError("the documents hold no tokens to score")
    scores = score_rows(model, rows, batch_size, device=device, progress=progress)
    nll = -sum(logprob for logprob, _ in scores) / tokens
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, tokens=tokens, documents=documents, windows=len(rows))


def check_max_length(model: GPT, max_length: Optional[int]) -> int:
    """`max_length`, or the model's context when None; a ValueError when it is < 2 or exceeds the context.

    Args:
        model: the model.
        max_length: the requested number of tokens per window.
    """
    context = model.max_seq_length
    if max_length is None:
        return context
    check_int("max_length", max_length, 2)
    if max_length > context:
        raise ValueError(f"max_length={max_length} exceeds the model's context of {context} tokens")
    return max_length
