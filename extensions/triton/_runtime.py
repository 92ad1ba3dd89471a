"""Shared checks of the Triton kernels: where they can run, and argument validation with clear errors."""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _probe_kernel(X):  # never launched: tells whether `triton.jit` built interpreted kernels
    tl.store(X, 0)


@triton.jit
def tanh(x):
    """tanh from exp (which the interpreter and every backend have), without overflow for any x."""
    e = tl.exp(-2.0 * tl.abs(x))  # in (0, 1]
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


INTERPRETED = type(_probe_kernel).__name__ == "InterpretedFunction"
"""True when TRITON_INTERPRET=1 was set before the kernels were defined: they then run on CPU tensors (slowly)."""


def _check_interpreter_consistency() -> None:
    # triton.language's own helpers (tl.sum, tl.max, ...) are defined when triton is first imported; if
    # TRITON_INTERPRET changed since then, the kernels would fail on their first call with an obscure error
    std_interpreted = type(tl.sum).__name__ == "InterpretedFunction"
    if type(tl.sum).__name__ in ("InterpretedFunction", "JITFunction") and std_interpreted != INTERPRETED:
        raise RuntimeError(
            "TRITON_INTERPRET was changed after `triton` had been imported (lightning and litgpt import it): "
            "set TRITON_INTERPRET=1 in the environment before anything imports triton, e.g. at the very top of "
            "the script or in tests/conftest.py"
        )


_check_interpreter_consistency()

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_DTYPE_NAMES = "float32, bfloat16 or float16"


def gpu_available() -> bool:
    """Whether the kernels can run here: a CUDA (or ROCm) GPU, or Triton's CPU interpreter."""
    return INTERPRETED or torch.cuda.is_available()


def require_gpu() -> None:
    """Raises RuntimeError when neither a GPU nor Triton's interpreter is available."""
    if not gpu_available():
        raise RuntimeError(
            "The Triton kernels need a CUDA GPU and none is available (torch.cuda.is_available() is False). "
            "To run them on the CPU for testing, set TRITON_INTERPRET=1 before importing extensions.triton."
        )


def check_device(**tensors: Optional[torch.Tensor]) -> torch.device:
    """All given tensors on one device the kernels can use; returns that device."""
    device = None
    for name, t in tensors.items():
        if t is None:
            continue
        if device is None:
            device = t.device
        elif t.device != device:
            raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")
    if device is not None and device.type != "cuda" and not INTERPRETED:
        first = next(name for name, t in tensors.items() if t is not None)
        raise RuntimeError(
            f"The Triton kernels need CUDA tensors, but {first} is on {device}. Move the model and inputs to "
            "a GPU, or set TRITON_INTERPRET=1 before importing extensions.triton to run on the CPU (testing only)."
        )
    return device


def check_float(name: str, t: torch.Tensor) -> None:
    """ValueError unless `t` is float32, bfloat16 or float16."""
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be {_DTYPE_NAMES}, got {t.dtype}")


def check_int(name: str, t: torch.Tensor) -> None:
    """ValueError unless `t` holds integers (class indices)."""
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{name} must hold integer class indices (e.g. torch.long), got {t.dtype}")


def row_major(t: torch.Tensor) -> torch.Tensor:
    """`t` as a 2-D (rows, last dim) tensor whose last dim is contiguous (copies only when needed)."""
    t = t.reshape(-1, t.size(-1))
    return t if t.stride(-1) == 1 else t.contiguous()


def block_for(n: int, cap: int) -> int:
    """A power-of-two block covering n elements (at least 16, so no kernel sees a degenerate tl.arange), at most cap."""
    return min(max(16, triton.next_power_of_2(max(n, 1))), cap)


def warps_for(block: int) -> int:
    """A number of warps for a program that handles `block` elements at a time."""
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4
