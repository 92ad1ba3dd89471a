"""Rotary position embedding in the rotate-half (GPT-NeoX) layout, full or partial.

For the first `n_elem` features of each head, with halves x1 = x[:n/2] and x2 = x[n/2:n]:
    y1 = x1 * cos1 - x2 * sin1        y2 = x2 * cos2 + x1 * sin2
(cos1/cos2 the halves of the cos table; they are equal for standard tables but need not be). Features past
`n_elem` pass through. The backward pass is the transposed rotation. Any head size and any even `n_elem`
work: blocks are padded to powers of two and masked. The input may be a strided view (the attention's q
and k are transposed views of the qkv projection): strides are passed to the kernel, nothing is copied.
Each program loads a block of positions of cos/sin once and rotates a group of up to 8 heads with it.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from extensions.triton._runtime import block_for, check_device, check_float


@triton.jit
def _rope_kernel(
    X, COS, SIN, Y,
    heads_per_program, seq_len, half, n_pass,
    sx_b, sx_h, sx_t, sx_d,
    sy_b, sy_h, sy_t,
    sc_b, sc_t, sc_d,
    ss_b, ss_t, ss_d,
    BACKWARD: tl.constexpr, HAS_PASS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_PASS: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    j = tl.arange(0, BLOCK_HALF)  # (BLOCK_HALF,)
    rows = t[:, None] < seq_len
    mask = rows & (j[None, :] < half)  # (BLOCK_T, BLOCK_HALF)

    c_ptr = COS + b * sc_b + t[:, None] * sc_t + j[None, :] * sc_d
    s_ptr = SIN + b * ss_b + t[:, None] * ss_t + j[None, :] * ss_d
    cos1 = tl.load(c_ptr, mask=mask, other=0.0).to(tl.float32)
    cos2 = tl.load(c_ptr + half * sc_d, mask=mask, other=0.0).to(tl.float32)
    sin1 = tl.load(s_ptr, mask=mask, other=0.0).to(tl.float32)
    sin2 = tl.load(s_ptr + half * ss_d, mask=mask, other=0.0).to(tl.float32)

    first_head = tl.program_id(2).to(tl.int64) * heads_per_program
    x_head = X + b * sx_b + first_head * sx_h
    y_head = Y + b * sy_b + first_head * sy_h
    x_off = t[:, None] * sx_t + j[None, :] * sx_d
    y_off = t[:, None] * sy_t + j[None, :]
    n_rot = 2 * half
    p = tl.arange(0, BLOCK_PASS)
    pass_mask = rows & (p[None, :] < n_pass)
    xp_off = t[:, None] * sx_t + (n_rot + p[None, :]) * sx_d
    yp_off = t[:, None] * sy_t + n_rot + p[None, :]
    for _ in range(0, heads_per_program):
        x1 = tl.load(x_head + x_off, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_head + x_off + half * sx_d, mask=mask, other=0.0).to(tl.float32)
        if BACKWARD:  # the transpose of the rotation
            y1 = x1 * cos1 + x2 * sin2
            y2 = x2 * cos2 - x1 * sin1
        else:
            y1 = x1 * cos1 - x2 * sin1
            y2 = x2 * cos2 + x1 * sin2
        tl.store(y_head + y_off, y1.to(Y.dtype.element_ty), mask=mask)
        tl.store(y_head + y_off + half, y2.to(Y.dtype.element_ty), mask=mask)
        if HAS_PASS:  # features past n_elem are copied unchanged
            xp = tl.load(x_head + xp_off, mask=pass_mask, other=0.0)
            tl.store(y_head + yp_off, xp.to(Y.dtype.element_ty), mask=pass_mask)
        x_head += sx_h
        y_head += sy_h


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: int, backward: bool) -> torch.Tensor:
    """Runs the kernel on x (B, H, T, D) with tables (Bc, T, n_elem); returns a contiguous (B, H, T, D)."""
    B, H, T, D = x.shape
    y = torch.empty((B, H, T, D), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    half = n_elem // 2
    n_pass = D - n_elem
    block_half = block_for(half, 1 << 30)
    block_pass = block_for(n_pass, 1 << 30)
    block_t = max(1, min(block_for(T, 1 << 30), 2048 // block_half))
    # heads share the cos/sin block of a program; groups of them spread the work over more programs
    heads_per_program = max(d for d in range(1, min(H, 8) + 1) if H % d == 0)
    grid = (B, triton.cdiv(T, block_t), H // heads_per_program)
    bc_stride_cos = cos.stride(0) if cos.size(0) > 1 else 0
    bc_stride_sin = sin.stride(0) if sin.size(0) > 1 else 0
    _rope_kernel[grid](
        x, cos, sin, y,
        heads_per_program, T, half, n_pass,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2),
        bc_stride_cos, cos.stride(1), cos.stride(2),
        bc_stride_sin, sin.stride(1), sin.stride(2),
        BACKWARD=backward, HAS_PASS=n_pass > 0, BLOCK_T=block_t, BLOCK_HALF=block_half, BLOCK_PASS=block_pass,
        num_warps=4,
    )
    return y


class RoPEFunction(torch.autograd.Function):
    """Autograd wrapper of the RoPE kernel. Use `apply_rope` / `apply_rope_partial`, which validate."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: int) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        ctx.n_elem = n_elem
        return _launch(x, cos, sin, n_elem, backward=False)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _launch(dy, cos, sin, ctx.n_elem, backward=True), None, None, None


def _tables(name: str, table: torch.Tensor, B: int, T: int, n_elem: int) -> torch.Tensor:
    """cos or sin as (1 or B, T, n_elem) from (T, n), (B, T, n) or (B, 1, T, n)."""
    check_float(name, table)
    if table.requires_grad:
        raise ValueError(f"{name} must not require grad: the RoPE kernels do not differentiate the tables")
    shape = tuple(table.shape)
    if table.dim() == 4 and table.size(1) == 1:
        table = table[:, 0]
    elif table.dim() == 2:
        table = table.unsqueeze(0)
    if table.dim() != 3 or table.size(0) not in (1, B) or table.size(1) != T or table.size(2) != n_elem:
        raise ValueError(
            f"{name} must have shape (T, n_elem), (B, T, n_elem) or (B, 1, T, n_elem) with T={T}, B={B}, "
            f"n_elem={n_elem}; got {shape}"
        )
    return table


def apply_rope_partial(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: int) -> torch.Tensor:
    """RoPE on the first `n_elem` features of each head of x, the rest passed through (Triton kernels).

    Matches `litgpt.model.apply_rope_partial` (rotate-half layout, float32 arithmetic).

    Args:
        x: queries or keys (B, n_heads, T, head_size); float32, bfloat16 or float16; may be a strided view.
        cos: (T, n_elem), (B, T, n_elem) or (B, 1, T, n_elem) table, usually float32.
        sin: like cos.
        n_elem: how many leading features of each head to rotate: even, 2 <= n_elem <= head_size.

    Returns:
        A contiguous tensor shaped and typed like x.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (B, n_heads, T, head_size), got {shape}")
    check_float("x", x)
    B, _, T, D = x.shape
    if not isinstance(n_elem, int) or n_elem < 2 or n_elem > D or n_elem % 2:
        raise ValueError(f"n_elem must be an even number of features in [2, head_size={D}], got {n_elem!r}")
    cos3 = _tables("cos", cos, B, T, n_elem)
    sin3 = _tables("sin", sin, B, T, n_elem)
    check_device(x=x, cos=cos, sin=sin)
    return RoPEFunction.apply(x, cos3, sin3, n_elem)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: Optional[int] = None) -> torch.Tensor:
    """RoPE on all features of each head (`n_elem` defaults to head_size); see `apply_rope_partial`.

    Args:
        x: (B, n_heads, T, head_size).
        cos: (T, head_size) table (or batched, see `apply_rope_partial`).
        sin: like cos.
        n_elem: rotated features; None for all of them.

    Returns:
        A contiguous tensor shaped and typed like x.
    """
    if n_elem is None:
        n_elem = x.size(-1) if isinstance(x, torch.Tensor) and x.dim() else 0
    return apply_rope_partial(x, cos, sin, n_elem)
