"""RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w (or * (1 + w), Gemma), in float32.

Any width: each row is walked in blocks of at most `MAX_BLOCK` features. The backward pass computes dx row
by row and dw as per-program partial sums (float32) added up at the end. When a row fits in one block
(every model of the registry), one backward kernel reads x and dy once for both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from extensions.triton._runtime import block_for, check_device, check_float, row_major, warps_for

MAX_BLOCK = 8192
"""Widest block of features a program holds at once; wider rows are processed in several blocks."""


@triton.jit
def _rms_norm_fwd_kernel(
    X, W, Y, RSTD, stride_x, stride_y, n_cols, eps,
    UNIT_OFFSET: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x
    y_row = Y + row * stride_y
    cols = tl.arange(0, BLOCK)
    sq = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        x = tl.load(x_row + c, mask=c < n_cols, other=0.0).to(tl.float32)
        sq += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(sq, axis=0) / n_cols + eps)
    tl.store(RSTD + row, rstd)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        x = tl.load(x_row + c, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        if UNIT_OFFSET:
            w = w + 1.0
        tl.store(y_row + c, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_one_block_kernel(
    X, W, DY, RSTD, DX, DW_PARTIAL, stride_x, stride_dy, stride_dx, n_rows, n_cols, rows_per_program,
    UNIT_OFFSET: tl.constexpr, BLOCK: tl.constexpr,
):
    # each program: `rows_per_program` consecutive rows, a whole row per block; dw summed in registers
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if UNIT_OFFSET:
        w = w + 1.0
    dw = tl.full([BLOCK], 0.0, tl.float32)
    first = pid.to(tl.int64) * rows_per_program
    for i in range(0, rows_per_program):
        row = first + i
        m = mask & ((tl.zeros_like(cols) + row) < n_rows)  # both blocks: the interpreter mis-types block & scalar
        x = tl.load(X + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=m, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row, mask=row < n_rows, other=0.0)
        x_hat = x * rstd
        dyw = dy * w
        mean_dot = tl.sum(dyw * x_hat, axis=0) / n_cols
        dx = (dyw - x_hat * mean_dot) * rstd
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=m)
        dw += dy * x_hat
    tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw, mask=mask)


@triton.jit
def _rms_norm_bwd_dx_kernel(
    X, W, DY, RSTD, DX, stride_x, stride_dy, stride_dx, n_cols,
    UNIT_OFFSET: tl.constexpr, BLOCK: tl.constexpr,
):
    # one row per program, walked in blocks twice: the dot product first, then dx
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    rstd = tl.load(RSTD + row)
    dot = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        x = tl.load(X + row * stride_x + c, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + c, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        if UNIT_OFFSET:
            w = w + 1.0
        dot += dy * w * x
    mean_dot = tl.sum(dot, axis=0) * rstd / n_cols
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        x = tl.load(X + row * stride_x + c, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + c, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        if UNIT_OFFSET:
            w = w + 1.0
        dx = (dy * w - x * rstd * mean_dot) * rstd
        tl.store(DX + row * stride_dx + c, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_dw_kernel(
    X, DY, RSTD, DW_PARTIAL, stride_x, stride_dy, n_rows, n_cols, rows_per_program, BLOCK: tl.constexpr,
):
    # program (i, j): rows [i * rows_per_program, ...) of the feature block j; partial sums of dy * x_hat
    pid_r = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = c < n_cols
    dw = tl.full([BLOCK], 0.0, tl.float32)
    first = pid_r.to(tl.int64) * rows_per_program
    for i in range(0, rows_per_program):
        row = first + i
        m = mask & ((tl.zeros_like(c) + row) < n_rows)
        x = tl.load(X + row * stride_x + c, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + c, mask=m, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row, mask=row < n_rows, other=0.0)
        dw += dy * x * rstd
    tl.store(DW_PARTIAL + pid_r.to(tl.int64) * n_cols + c, dw, mask=mask)


def _row_programs(n_rows: int, device: torch.device) -> int:
    """How many programs share the rows when partial dw sums are kept per program."""
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 8
    return max(1, min(n_rows, target))


class RMSNormFunction(torch.autograd.Function):
    """Autograd wrapper of the RMSNorm kernels. Use `rms_norm`, which validates the arguments."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, unit_offset: bool) -> torch.Tensor:
        shape = x.shape
        x2 = row_major(x)  # (N, C)
        n_rows, n_cols = x2.shape
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = block_for(n_cols, MAX_BLOCK)
        if n_rows > 0:
            _rms_norm_fwd_kernel[(n_rows,)](
                x2, weight, y, rstd, x2.stride(0), y.stride(0), n_cols, eps,
                UNIT_OFFSET=unit_offset, BLOCK=block, num_warps=warps_for(block),
            )
        ctx.save_for_backward(x2, weight, rstd)
        ctx.unit_offset = unit_offset
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        shape = dy.shape
        dy2 = row_major(dy)
        n_rows, n_cols = x2.shape
        dx = torch.empty((n_rows, n_cols), dtype=x2.dtype, device=x2.device)
        block = block_for(n_cols, MAX_BLOCK)
        n_prog = _row_programs(n_rows, x2.device)
        rows_per_program = triton.cdiv(n_rows, n_prog) if n_rows else 0
        n_prog = triton.cdiv(n_rows, rows_per_program) if n_rows else 0
        # every program writes its whole row of partial sums; with no rows, dw is zero
        alloc = torch.empty if n_rows else torch.zeros
        partial = alloc((max(n_prog, 1), n_cols), dtype=torch.float32, device=x2.device)
        if n_rows == 0:
            pass
        elif n_cols <= block:
            _rms_norm_bwd_one_block_kernel[(n_prog,)](
                x2, weight, dy2, rstd, dx, partial, x2.stride(0), dy2.stride(0), dx.stride(0),
                n_rows, n_cols, rows_per_program,
                UNIT_OFFSET=ctx.unit_offset, BLOCK=block, num_warps=warps_for(block),
            )
        else:
            _rms_norm_bwd_dx_kernel[(n_rows,)](
                x2, weight, dy2, rstd, dx, x2.stride(0), dy2.stride(0), dx.stride(0), n_cols,
                UNIT_OFFSET=ctx.unit_offset, BLOCK=block, num_warps=warps_for(block),
            )
            dw_block = min(block, 1024)
            _rms_norm_bwd_dw_kernel[(n_prog, triton.cdiv(n_cols, dw_block))](
                x2, dy2, rstd, partial, x2.stride(0), dy2.stride(0), n_rows, n_cols, rows_per_program,
                BLOCK=dw_block, num_warps=warps_for(dw_block),
            )
        dw = partial.sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        return dx.view(shape), dw, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, add_unit_offset: bool = False) -> torch.Tensor:
    """RMSNorm of `x` over its last dimension with the Triton kernels (forward and backward).

    Matches `litgpt.model.RMSNorm`: computed in float32, returned in x's dtype.

    Args:
        x: (..., C) float32, bfloat16 or float16.
        weight: (C,) scale.
        eps: added to the mean of squares.
        add_unit_offset: scale by (1 + weight) instead of weight (Gemma).

    Returns:
        A tensor shaped and typed like x.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x must be a tensor of shape (..., C)")
    check_float("x", x)
    check_float("weight", weight)
    if weight.dim() != 1 or weight.size(0) != x.size(-1):
        raise ValueError(
            f"weight must have shape ({x.size(-1)},) to match x's last dimension, got {tuple(weight.shape)}"
        )
    check_device(x=x, weight=weight)
    return RMSNormFunction.apply(x, weight.contiguous(), float(eps), bool(add_unit_offset))
