"""Cross-entropy over the vocabulary, on given logits or fused with the LM head.

`cross_entropy(logits, targets)`: one program per row walks the vocabulary in blocks, keeping a running max
and sum of exponentials (online logsumexp) in float32 registers. The logits are read in their own dtype
and never copied to float32; the forward pass stores one float32 per row (the logsumexp), the backward
pass reads the logits once more and writes the gradient in the logits' dtype.

`fused_linear_cross_entropy(hidden, weight, bias, targets)`: the LM head and the loss together. Rows of
tokens are processed in chunks: the chunk's logits come from one matrix product, the kernel turns them
into their gradient in place (softmax minus one-hot), and two more products give the chunk's share of the
gradients of the hidden states and of the weight. Only one chunk of logits ever exists; the backward pass
multiplies the stored gradients by the incoming scalar.

Optional final-logit softcapping (Gemma 2), z = cap * tanh(logit / cap), is fused in both. Targets equal to
`ignore_index` add nothing to the loss (and are not counted by reduction='mean'); any other target outside
[0, V) gives a NaN loss rather than reading out of bounds.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from extensions.triton._runtime import block_for, check_device, check_float, check_int, row_major, tanh, warps_for

MAX_BLOCK = 4096
"""Vocabulary entries a program holds at once."""

REDUCTIONS = ("mean", "sum", "none")


@triton.jit
def _softcapped(z, cap, SOFTCAP: tl.constexpr):
    if SOFTCAP:
        z = cap * tanh(z / cap)
    return z


@triton.jit
def _row_logsumexp(row_ptr, n_cols, cap, SOFTCAP: tl.constexpr, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    m = tl.full([], float("-inf"), tl.float32)  # running max and sum of exp(z - max): float32 scalars
    s = tl.full([], 0.0, tl.float32)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        z = tl.load(row_ptr + c, mask=mask, other=0.0).to(tl.float32)
        z = tl.where(mask, _softcapped(z, cap, SOFTCAP), float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    return m + tl.log(s)


@triton.jit
def _row_gradient(row_ptr, grad_ptr, target, lse, scale, n_cols, cap, SOFTCAP: tl.constexpr, BLOCK: tl.constexpr):
    # d loss / d logit = (softmax - onehot) * scale, times the softcap's derivative 1 - (z / cap)^2.
    # grad_ptr may be row_ptr: each element is read before it is overwritten, by the same program.
    cols = tl.arange(0, BLOCK)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        z = tl.load(row_ptr + c, mask=mask, other=0.0).to(tl.float32)
        z = _softcapped(z, cap, SOFTCAP)
        g = tl.exp(z - lse) - tl.where(c == target, 1.0, 0.0)
        if SOFTCAP:
            r = z / cap
            g = g * (1.0 - r * r)
        tl.store(grad_ptr + c, (g * scale).to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ce_fwd_kernel(
    LOGITS, stride_l, TARGETS, LOSS, LSE, GRAD, stride_g, SCALE, n_cols, ignore_index, cap,
    SOFTCAP: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * stride_l
    target = tl.load(TARGETS + row).to(tl.int64)
    lse = _row_logsumexp(row_ptr, n_cols, cap, SOFTCAP, BLOCK)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < n_cols)
    z_t = tl.load(row_ptr + tl.where(in_range, target, 0)).to(tl.float32)
    z_t = _softcapped(z_t, cap, SOFTCAP)
    loss = tl.where(in_range, lse - z_t, float("nan"))
    tl.store(LOSS + row, tl.where(valid, loss, 0.0))
    tl.store(LSE + row, lse)
    if WRITE_GRAD:
        scale = tl.where(valid, tl.load(SCALE), 0.0)
        _row_gradient(row_ptr, GRAD + row * stride_g, target, lse, scale, n_cols, cap, SOFTCAP, BLOCK)


@triton.jit
def _ce_bwd_kernel(
    LOGITS, stride_l, TARGETS, LSE, DLOSS, stride_dloss, SCALE, GRAD, stride_g, n_cols, ignore_index, cap,
    SOFTCAP: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(TARGETS + row).to(tl.int64)
    scale = tl.load(DLOSS + row * stride_dloss).to(tl.float32) * tl.load(SCALE)
    scale = tl.where(target != ignore_index, scale, 0.0)
    lse = tl.load(LSE + row)
    _row_gradient(LOGITS + row * stride_l, GRAD + row * stride_g, target, lse, scale, n_cols, cap, SOFTCAP, BLOCK)


@triton.jit
def _scale_kernel(X, S, Y, n, BLOCK: tl.constexpr):
    # Y = X * S[0] in float32 arithmetic (a device scalar: no host synchronisation)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, (x * tl.load(S)).to(Y.dtype.element_ty), mask=mask)


def _scaled(x: torch.Tensor, s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x * s (s a float32 device scalar) as a new contiguous tensor of `dtype`."""
    x = x.contiguous()
    y = torch.empty(x.shape, dtype=dtype, device=x.device)
    n = x.numel()
    if n:
        _scale_kernel[(triton.cdiv(n, 1024),)](x, s, y, n, BLOCK=1024, num_warps=4)
    return y


def _block(n_cols: int, block_size: Optional[int]) -> int:
    return block_size if block_size is not None else block_for(n_cols, MAX_BLOCK)


def _launch_forward(logits, targets, loss_rows, lse, grad, scale, ignore_index, softcap, block) -> None:
    n_rows, n_cols = logits.shape
    if n_rows == 0:
        return
    _ce_fwd_kernel[(n_rows,)](
        logits, logits.stride(0), targets, loss_rows, lse,
        grad if grad is not None else logits, grad.stride(0) if grad is not None else 0,
        scale, n_cols, ignore_index, softcap or 1.0,
        SOFTCAP=softcap is not None, WRITE_GRAD=grad is not None, BLOCK=block, num_warps=warps_for(block),
    )


def _reduce(loss_rows: torch.Tensor, count: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()
    return total if reduction == "sum" else total / count  # mean over no target: 0/0 = nan, like PyTorch


class CrossEntropyFunction(torch.autograd.Function):
    """Autograd wrapper of the cross-entropy kernels on (N, V) logits. Use `cross_entropy`, which validates."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int, softcap: Optional[float], reduction: str, block: int):
        n_rows = logits.size(0)
        loss_rows = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        count = (targets != ignore_index).sum()
        if reduction == "mean":
            scale = 1.0 / count.clamp(min=1).to(torch.float32)
        else:
            scale = torch.ones((), dtype=torch.float32, device=logits.device)
        _launch_forward(logits, targets, loss_rows, lse, None, scale, ignore_index, softcap, block)
        ctx.save_for_backward(logits, targets, lse, scale)
        ctx.ignore_index, ctx.softcap, ctx.block = ignore_index, softcap, block
        return _reduce(loss_rows, count, reduction)

    @staticmethod
    def backward(ctx, dloss):
        logits, targets, lse, scale = ctx.saved_tensors
        n_rows, n_cols = logits.shape
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        dloss = dloss.to(torch.float32).contiguous()
        if n_rows:
            block = ctx.block
            _ce_bwd_kernel[(n_rows,)](
                logits, logits.stride(0), targets, lse, dloss, dloss.stride(0) if dloss.dim() else 0, scale,
                grad, grad.stride(0), n_cols, ctx.ignore_index, ctx.softcap or 1.0,
                SOFTCAP=ctx.softcap is not None, BLOCK=block, num_warps=warps_for(block),
            )
        return grad, None, None, None, None, None


def _check_common(ignore_index: int, reduction: str, softcap: Optional[float], block_size: Optional[int]) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be a positive number or None, got {softcap!r}")
    if block_size is not None and (block_size < 16 or block_size & (block_size - 1)):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    softcap: Optional[float] = None,
    block_size: Optional[int] = None,
) -> torch.Tensor:
    """Cross-entropy of `logits` against `targets` with the Triton kernels (forward and backward).

    Equals `F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction=reduction)` without
    the float32 copy of the logits. The gradient has the logits' dtype.

    Args:
        logits: (..., V) float32, bfloat16 or float16.
        targets: (...) integer class indices, the leading shape of logits.
        ignore_index: targets with this value add no loss and no gradient.
        reduction: 'mean' (over non-ignored targets), 'sum' or 'none' (one loss per target).
        softcap: if set, the logits are first mapped to softcap * tanh(logits / softcap).
        block_size: vocabulary entries per step of a program (a power of two); None picks one.

    Returns:
        A float32 scalar, or float32 losses shaped like targets for reduction='none'.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 2:
        raise ValueError("logits must be a tensor of shape (..., V) with at least 2 dimensions")
    if not isinstance(targets, torch.Tensor):
        raise ValueError("targets must be a tensor of class indices")
    check_float("logits", logits)
    check_int("targets", targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape {tuple(logits.shape[:-1])} (logits' leading dims), got {tuple(targets.shape)}"
        )
    if logits.size(-1) == 0:
        raise ValueError("logits must have at least one class (V > 0)")
    _check_common(ignore_index, reduction, softcap, block_size)
    check_device(logits=logits, targets=targets)
    flat = row_major(logits)
    loss = CrossEntropyFunction.apply(
        flat, targets.reshape(-1).contiguous(), ignore_index, softcap, reduction, _block(flat.size(1), block_size)
    )
    return loss.view(targets.shape) if reduction == "none" else loss


# --------------------------------------------------------------------------------------------------
# fused with the LM head
LOGITS_CHUNK_BYTES = 1 << 30
"""Default size of one chunk of logits in the fused loss (the chunk's rows are clamped to [256, 8192])."""


def default_chunk_rows(vocab_size: int, dtype: torch.dtype) -> int:
    """Rows of logits per chunk of the fused loss: about `LOGITS_CHUNK_BYTES` of them, 256 to 8192 rows."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(256, min(8192, LOGITS_CHUNK_BYTES // max(1, vocab_size * itemsize)))


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    """Autograd wrapper of the LM head fused with the loss. Use `fused_linear_cross_entropy`, which validates."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, softcap, reduction, chunk_rows, compute_dtype, block):
        needs_h, needs_w, needs_b = ctx.needs_input_grad[:3]
        needs_b = needs_b and bias is not None
        write_grad = needs_h or needs_w or needs_b
        device = hidden.device
        n_rows = hidden.size(0)
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        count = (targets != ignore_index).sum()
        ones = torch.ones((), dtype=torch.float32, device=device)
        inv_count = 1.0 / count.clamp(min=1).to(torch.float32) if reduction == "mean" else ones
        # the 1/count of a mean goes into the kernel (float32, before rounding to the logits' dtype), except in
        # float16, where gradients that small would underflow: they are scaled in the backward pass instead
        kernel_scale, later_scale = (ones, inv_count) if compute_dtype == torch.float16 else (inv_count, ones)

        loss_rows = torch.empty(n_rows, dtype=torch.float32, device=device)
        lse = torch.empty(n_rows, dtype=torch.float32, device=device)
        grad_h = torch.empty_like(hidden) if needs_h else None
        # weight gradient accumulated by the GEMMs in place when dtypes allow, else in float32
        acc_dtype = compute_dtype if weight.dtype == compute_dtype else torch.float32
        grad_w = None
        if needs_w:
            grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=device)
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=device) if needs_b else None

        for start in range(0, n_rows, chunk_rows):
            end = min(start + chunk_rows, n_rows)
            h = hidden[start:end].to(compute_dtype)  # (n, C)
            logits = torch.addmm(b, h, w.t()) if b is not None else torch.mm(h, w.t())  # (n, V)
            _launch_forward(logits, targets[start:end], loss_rows[start:end], lse[start:end],
                            logits if write_grad else None, kernel_scale, ignore_index, softcap, block)
            if not write_grad:
                continue
            g = logits  # now d loss / d logits of the chunk
            if needs_h:
                grad_h[start:end] = torch.mm(g, w)
            if needs_w:
                if acc_dtype == compute_dtype:
                    grad_w.addmm_(g.t(), h)
                else:
                    grad_w.add_(torch.mm(g.t(), h))
            if needs_b:
                grad_b += g.sum(0, dtype=torch.float32)
            del logits, g

        ctx.save_for_backward(grad_h, grad_w, grad_b, later_scale)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return _reduce(loss_rows, count, reduction)

    @staticmethod
    def backward(ctx, dloss):
        grad_h, grad_w, grad_b, later_scale = ctx.saved_tensors
        s = (dloss.to(torch.float32) * later_scale).reshape(1)
        gh = _scaled(grad_h, s, grad_h.dtype) if grad_h is not None else None
        gw = _scaled(grad_w, s, ctx.weight_dtype) if grad_w is not None else None
        gb = _scaled(grad_b, s, ctx.bias_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None, None, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    softcap: Optional[float] = None,
    chunk_size: Optional[int] = None,
    compute_dtype: Optional[torch.dtype] = None,
    block_size: Optional[int] = None,
) -> torch.Tensor:
    """Cross-entropy of the LM head `hidden @ weight.T + bias` against `targets`, without materialising the
    logits: at most `chunk_size` rows of them exist at a time, and never in float32.

    The argument order is that of `litgpt.train.loss.fused_linear_cross_entropy` (with reduction='sum' it is
    a drop-in replacement). Gradients flow to hidden, weight and bias (those that require grad); they are
    computed during the forward pass, chunk by chunk, so the backward pass only scales them.

    Args:
        hidden: (N, C) or (..., C) final hidden states (after the final norm).
        weight: (V, C) LM-head matrix.
        bias: (V,) LM-head bias, or None.
        targets: (N,) or (...) integer target ids, the leading shape of hidden.
        ignore_index: targets with this value add no loss and no gradient.
        reduction: 'mean' (over non-ignored targets) or 'sum'.
        softcap: final-logit softcapping (Gemma 2): logits -> softcap * tanh(logits / softcap).
        chunk_size: rows of logits per chunk; None: about 1 GiB of logits (see `default_chunk_rows`).
        compute_dtype: dtype of the matrix products and of the logits chunk; default: the autocast dtype
            when autocast is on, else hidden's dtype. The softmax is computed in float32.
        block_size: vocabulary entries per step of a kernel program (a power of two); None picks one.

    Returns:
        A float32 scalar.
    """
    for name, t in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor")
    check_float("hidden", hidden)
    check_float("weight", weight)
    check_int("targets", targets)
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (V, C), got {tuple(weight.shape)}")
    V, C = weight.shape
    if hidden.dim() < 2 or hidden.size(-1) != C:
        raise ValueError(f"hidden must have shape (..., C) with C={C} (weight's columns), got {tuple(hidden.shape)}")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(
            f"targets must have shape {tuple(hidden.shape[:-1])} (hidden's leading dims), got {tuple(targets.shape)}"
        )
    if bias is not None:
        check_float("bias", bias)
        if bias.shape != (V,):
            raise ValueError(f"bias must have shape ({V},) or be None, got {tuple(bias.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' for the fused loss, got {reduction!r}")
    _check_common(ignore_index, reduction, softcap, block_size)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if V == 0:
        raise ValueError("weight must have at least one row (V > 0)")
    device = check_device(hidden=hidden, weight=weight, bias=bias, targets=targets)
    if compute_dtype is None:
        if torch.is_autocast_enabled(device.type):
            compute_dtype = torch.get_autocast_dtype(device.type)
        else:
            compute_dtype = hidden.dtype
    if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"compute_dtype must be float32, bfloat16 or float16, got {compute_dtype}")
    chunk_rows = chunk_size or default_chunk_rows(V, compute_dtype)
    if not torch.is_grad_enabled():  # validation: no gradients are computed along the way
        hidden, weight = hidden.detach(), weight.detach()
        bias = bias.detach() if bias is not None else None
    with torch.autocast(device.type, enabled=False):
        return FusedLinearCrossEntropyFunction.apply(
            row_major(hidden), weight, bias, targets.reshape(-1).contiguous(), ignore_index, softcap, reduction,
            chunk_rows, compute_dtype, _block(V, block_size),
        )
