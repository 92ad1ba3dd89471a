"""Losses of the training loop: summed token cross-entropy (the loop normalises by the token count of the
whole optimizer step, so any split into micro-batches and devices gives the same gradient), and a fused
LM-head + cross-entropy that never materialises the full (tokens x vocabulary) logits."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.data.base import IGNORE_INDEX


def token_loss_sum(
    logits: Union[torch.Tensor, list[torch.Tensor]], labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Sum over tokens of the cross-entropy of logits (B, T, V) (or chunks of it along T) against labels
    (B, T); labels equal to `ignore_index` add nothing. Computed in float32."""
    if isinstance(logits, (list, tuple)):
        total = None
        start = 0
        for chunk in logits:
            t = chunk.size(1)
            part = token_loss_sum(chunk, labels[:, start : start + t], ignore_index)
            total = part if total is None else total + part
            start += t
        return total
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=ignore_index, reduction="sum")


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_t CE(h_t @ W^T + b, y_t), computing the gradients chunk by chunk during the forward pass.

    Only `chunk_size` rows of logits exist at a time; their gradient (softmax - onehot) is turned into
    grad_h and grad_W at once, so the backward pass is a multiplication by the incoming scalar.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index: int, chunk_size: int, compute_dtype):
        n = hidden.size(0)
        needs_h, needs_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        needs_b = bias is not None and ctx.needs_input_grad[2]
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        grad_h = torch.empty_like(hidden) if needs_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if needs_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            h = hidden[start : start + chunk_size].to(compute_dtype)
            y = labels[start : start + chunk_size]
            logits = h @ w.t()
            if b is not None:
                logits = logits + b
            logits = logits.float()
            valid = y != ignore_index
            safe_y = torch.where(valid, y, torch.zeros_like(y))
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe_y[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if needs_h or needs_w or needs_b:
                grad = torch.softmax(logits, dim=-1)  # d loss / d logits = softmax - onehot, zero where ignored
                grad.scatter_add_(1, safe_y[:, None], -torch.ones_like(picked)[:, None])
                grad *= valid[:, None]
                g = grad.to(compute_dtype)
                if needs_h:
                    grad_h[start : start + chunk_size] = (g @ w).to(hidden.dtype)
                if needs_w:
                    grad_w += (g.t() @ h).float()
                if needs_b:
                    grad_b += grad.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        gh = grad_h * grad_output.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_output).to(ctx.weight_dtype) if grad_w is not None else None
        gb = (grad_b * grad_output).to(ctx.bias_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
    compute_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Sum of token cross-entropies of `hidden @ weight.T + bias` against `labels`, with gradients for
    hidden, weight and bias, holding at most `chunk_size` rows of logits in memory.

    Args:
        hidden: (N, C) or (B, T, C) final hidden states.
        weight: (V, C) LM-head matrix.
        bias: (V,) or None.
        labels: (N,) or (B, T) target ids; `ignore_index` entries add nothing.
        ignore_index: label value without loss.
        chunk_size: rows of logits computed at once.
        compute_dtype: dtype of the matrix products (default: the autocast dtype when autocast is on,
            else hidden's dtype); the softmax is always float32.
    """
    if compute_dtype is None:
        device_type = hidden.device.type
        if torch.is_autocast_enabled(device_type):
            compute_dtype = torch.get_autocast_dtype(device_type)
        else:
            compute_dtype = hidden.dtype
    hidden = hidden.reshape(-1, hidden.size(-1))
    labels = labels.reshape(-1)
    with torch.autocast(hidden.device.type, enabled=False):
        return _FusedLinearCrossEntropy.apply(hidden, weight, bias, labels, ignore_index, chunk_size, compute_dtype)


class LMHeadForFusedLoss(nn.Module):
    """Swapped in for the model's `lm_head` (same `weight` / `bias` parameters, so checkpoints keep their
    names): returns the hidden states unchanged while `emit_hidden` is set, so the loop computes the loss
    with `fused_linear_cross_entropy`, and ordinary logits otherwise (validation, generation)."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.weight = head.weight
        self.bias = head.bias
        self.in_features, self.out_features = head.in_features, head.out_features
        self.emit_hidden = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.emit_hidden:
            return x
        return F.linear(x, self.weight, self.bias)


FUSED_LOSS_MIN_VOCAB = 32768
"""Below this vocabulary size the logits are small and the plain loss is as fast (measured on CPU)."""


def install_fused_head(model: nn.Module, min_vocab: Optional[int] = None) -> Optional[LMHeadForFusedLoss]:
    """Replaces `model.lm_head` by `LMHeadForFusedLoss` where that is exact (a plain linear head, no final
    logit softcapping) and worth it (at least `min_vocab` rows); returns the new head or None when left alone."""
    head = getattr(model, "lm_head", None)
    config = getattr(model, "config", None)
    if type(head) is not nn.Linear or config is None or getattr(config, "final_logit_softcapping", None):
        return None
    if head.out_features < (FUSED_LOSS_MIN_VOCAB if min_vocab is None else min_vocab):
        return None
    fused = LMHeadForFusedLoss(head)
    model.lm_head = fused
    return fused
