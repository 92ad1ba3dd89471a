"""Gated linear units of the MLPs: SwiGLU `silu(a) * b` (Llama) and GeGLU `gelu(a) * b` (Gemma).

`a` and `b` are the outputs of `fc_1` and `fc_2`. One kernel reads both and writes the product (eager
PyTorch writes and rereads `silu(a)` in between); the backward kernel reads a, b and the incoming gradient
once and writes both gradients, recomputing the activation instead of storing it. Arithmetic is float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from extensions.triton._runtime import check_device, check_float, tanh

ACTIVATIONS = {"silu": 0, "gelu": 1, "gelu_tanh": 2}
"""Activation name -> the kernels' code: silu (SwiGLU), exact erf GELU and tanh-approximated GELU (GeGLU)."""

_BLOCK = 1024


@triton.jit
def _act_and_grad(a, ACT: tl.constexpr):
    # (act(a), act'(a)) in float32. Constants: 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi) and GELU's 0.044715
    if ACT == 0:
        s = tl.sigmoid(a)
        f = a * s
        df = s * (1.0 + a * (1.0 - s))
    elif ACT == 1:
        cdf = 0.5 * (1.0 + tl.erf(a * 0.7071067811865476))
        f = a * cdf
        df = cdf + a * 0.3989422804014327 * tl.exp(-0.5 * a * a)
    else:
        inner = 0.7978845608028654 * (a + 0.044715 * a * a * a)
        t = tanh(inner)
        f = 0.5 * a * (1.0 + t)
        df = 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * a * a)
    return f, df


@triton.jit
def _glu_fwd_kernel(A, B, Y, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    f, _ = _act_and_grad(a, ACT)
    tl.store(Y + offs, (f * b).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _glu_bwd_kernel(A, B, DY, DA, DB, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    f, df = _act_and_grad(a, ACT)
    tl.store(DA + offs, (dy * b * df).to(DA.dtype.element_ty), mask=mask)
    tl.store(DB + offs, (dy * f).to(DB.dtype.element_ty), mask=mask)


class GLUFunction(torch.autograd.Function):
    """Autograd wrapper of the gated-unit kernels. Use `swiglu` / `geglu`, which validate the arguments."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, act: int) -> torch.Tensor:
        a, b = a.contiguous(), b.contiguous()
        y = torch.empty_like(a)
        n = a.numel()
        if n:
            _glu_fwd_kernel[(triton.cdiv(n, _BLOCK),)](a, b, y, n, ACT=act, BLOCK=_BLOCK, num_warps=4)
        ctx.save_for_backward(a, b)
        ctx.act = act
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        a, b = ctx.saved_tensors
        dy = dy.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        if n:
            _glu_bwd_kernel[(triton.cdiv(n, _BLOCK),)](a, b, dy, da, db, n, ACT=ctx.act, BLOCK=_BLOCK, num_warps=4)
        return da, db, None


def _glu(a: torch.Tensor, b: torch.Tensor, activation: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError("a and b must be tensors")
    check_float("a", a)
    check_float("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    check_device(a=a, b=b)
    return GLUFunction.apply(a, b, ACTIVATIONS[activation])


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`silu(a) * b` with the Triton kernels, as in `litgpt.model.LLaMAMLP`.

    Args:
        a: gate pre-activation, the output of `fc_1`; any shape; float32, bfloat16 or float16.
        b: the output of `fc_2`, same shape and dtype as a.

    Returns:
        A tensor like a.
    """
    return _glu(a, b, "silu")


def geglu(a: torch.Tensor, b: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """`gelu(a, approximate) * b` with the Triton kernels, as in `litgpt.model.GemmaMLP`.

    Args:
        a: gate pre-activation, the output of `fc_1`; any shape; float32, bfloat16 or float16.
        b: the output of `fc_2`, same shape and dtype as a.
        approximate: 'none' (erf GELU) or 'tanh', as in `torch.nn.functional.gelu`.

    Returns:
        A tensor like a.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _glu(a, b, "gelu" if approximate == "none" else "gelu_tanh")
