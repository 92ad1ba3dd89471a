"""Losses of the training loop: summed token cross-entropy (the loop normalises by the token count of the
whole optimizer step, so any split into micro-batches and devices gives the same gradient), and a fused
LM-head + cross-entropy that never materialises the full (tokens x vocabulary) logits."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.data.base import IGNORE_INDEX
from litgpt.utils import CompiledKernel


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


def _block_loss_and_grad(logits: torch.Tensor, y: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For one block of logits (c, V): the summed cross-entropy over rows where `ok`, and d loss / d logits
    (softmax - onehot, zero on the other rows) in the logits' dtype. Float32 inside. Written without in-place
    operations so that torch.compile fuses it into a couple of passes over the block."""
    lf = logits.float()
    top = lf.amax(dim=1, keepdim=True)
    e = (lf - top).exp()
    norm = e.sum(dim=1, keepdim=True)
    lse = (top + norm.log()).squeeze(1)
    picked = lf.gather(1, y[:, None]).squeeze(1)
    loss = torch.where(ok, lse - picked, torch.zeros_like(lse)).sum()
    onehot = (torch.arange(lf.size(1), device=lf.device)[None, :] == y[:, None]).float()
    grad = (e / norm - onehot) * ok[:, None].float()
    return loss, grad.to(logits.dtype)


def _block_loss_and_grad_eager(logits: torch.Tensor, y: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as `_block_loss_and_grad` with in-place operations (fewer temporaries when not compiled)."""
    picked = logits.gather(1, y[:, None]).squeeze(1).float()
    top = logits.amax(dim=1, keepdim=True).float()
    lf = logits.sub_(top) if logits.dtype == torch.float32 else logits - top
    lf.exp_()
    norm = lf.sum(dim=1, keepdim=True)
    lse = top.squeeze(1) + norm.squeeze(1).log()
    loss = torch.where(ok, lse - picked, torch.zeros_like(lse)).sum()
    grad = lf.div_(norm) if lf.dtype == logits.dtype else torch.div(lf, norm).to(logits.dtype)
    grad.scatter_add_(1, y[:, None], -ok.to(grad.dtype)[:, None])
    if not bool(ok.all()):
        grad.mul_(ok.to(grad.dtype)[:, None])
    return loss, grad


_block_kernel = CompiledKernel(_block_loss_and_grad, eager=_block_loss_and_grad_eager, env_var="LITGPT_COMPILE_LOSS")


def _run_block(logits: torch.Tensor, y: torch.Tensor, ok: torch.Tensor, compiled: bool):
    return _block_kernel(logits, y, ok) if compiled else _block_loss_and_grad_eager(logits, y, ok)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_t CE(h_t @ W^T + b, y_t), with the gradients computed during the forward pass.

    The logits are made `chunk_size` rows at a time; each block's loss and d loss / d logits come from one
    fused kernel, and the block's gradient is multiplied into grad_h and grad_W at once, so neither the
    full logits nor their gradient ever exist. The backward pass only scales the stored gradients.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index: int, chunk_size: int, compute_dtype, compiled: bool):
        needs_h, needs_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        needs_b = bias is not None and ctx.needs_input_grad[2]
        h = hidden.to(compute_dtype)
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        valid = labels != ignore_index
        rows = None
        if not bool(valid.all()):  # rows without a target (padding, masked prompts) add nothing: skip their logits
            rows = valid.nonzero().squeeze(1)
            h, labels = h.index_select(0, rows), labels.index_select(0, rows)
            valid = torch.ones_like(labels, dtype=torch.bool)
        n = h.size(0)
        grad_h = h.new_empty(h.shape, dtype=hidden.dtype) if needs_h else None
        grad_w = grad_b = None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            h_block = h[start:stop]
            logits = h_block @ w.t() if b is None else torch.addmm(b, h_block, w.t())  # (c, V)
            # copies, not views: the compiled kernel would guard on the size of a view's base
            loss, grad = _run_block(logits, labels[start:stop].clone(), valid[start:stop].clone(), compiled)
            total += loss
            if needs_h:
                grad_h[start:stop] = grad @ w
            if needs_w:
                part = grad.t() @ h_block  # (V, C)
                grad_w = part.float() if grad_w is None else grad_w.add_(part)
            if needs_b:
                part = grad.float().sum(0)
                grad_b = part if grad_b is None else grad_b.add_(part)
        if rows is not None and grad_h is not None:
            grad_h = torch.zeros_like(hidden).index_copy_(0, rows, grad_h)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = lambda g: None if g is None else g * grad_output.to(g.dtype)
        return scale(grad_h), scale(grad_w), scale(grad_b), None, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: Optional[int] = None,
    compute_dtype: Optional[torch.dtype] = None,
    compiled: bool = True,
) -> torch.Tensor:
    """Sum of token cross-entropies of `hidden @ weight.T + bias` against `labels`, with gradients for
    hidden, weight and bias, holding at most `chunk_size` rows of logits in memory.

    Args:
        hidden: (N, C) or (B, T, C) final hidden states.
        weight: (V, C) LM-head matrix.
        bias: (V,) or None.
        labels: (N,) or (B, T) target ids; `ignore_index` entries add nothing.
        ignore_index: label value without loss.
        chunk_size: rows of logits computed at once (default: about 64M logits per block when compiled, 32M
            otherwise).
        compute_dtype: dtype of the matrix products (default: the autocast dtype when autocast is on,
            else hidden's dtype); the softmax is always float32.
        compiled: run the per-block softmax kernel through torch.compile (falls back to eager operations,
            with one warning, where compiling fails; LITGPT_COMPILE_LOSS=0 or LITGPT_COMPILE_KERNELS=0 turns it off).
    """
    if compute_dtype is None:
        device_type = hidden.device.type
        if torch.is_autocast_enabled(device_type):
            compute_dtype = torch.get_autocast_dtype(device_type)
        else:
            compute_dtype = hidden.dtype
    hidden = hidden.reshape(-1, hidden.size(-1))
    labels = labels.reshape(-1)
    if chunk_size is None:
        # compiled, a block costs its bf16 logits and gradient; eager, also float32 temporaries
        budget = (64 << 20) if compiled and _block_kernel.enabled else (32 << 20)
        chunk_size = max(1, budget // weight.size(0))
    with torch.autocast(hidden.device.type, enabled=False):
        return _FusedLinearCrossEntropy.apply(hidden, weight, bias, labels, ignore_index, chunk_size, compute_dtype,
                                              compiled)


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
