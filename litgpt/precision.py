"""Precision names, the dtype each one computes in, the default per device, and their validation.

Lightning's precision names are used everywhere: training takes any of `TRAINING_PRECISIONS` (mixed ones keep
float32 weights and compute in the low dtype), inference and saving take one dtype (`INFERENCE_PRECISIONS`).
Layer 0: imports nothing from the project.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

Precision = Literal["32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "32", "bf16", "16"]
"""A training precision flag: Lightning's names, and the short ones Lightning (and LitGPT) also accept."""

SHORT_NAMES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
"""Lightning's short precision names and what they mean."""

COMPUTE_DTYPES: dict[str, torch.dtype] = {
    "32-true": torch.float32,
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
}
"""Every precision name -> the dtype matrix products run in."""

TRAINING_PRECISIONS: tuple[str, ...] = tuple(COMPUTE_DTYPES)
INFERENCE_PRECISIONS: dict[str, torch.dtype] = {
    name: dtype for name, dtype in COMPUTE_DTYPES.items() if name.endswith("-true")
}
"""Precisions a model is loaded, served or saved in: one dtype for every weight."""
MIXED_PRECISIONS: dict[str, torch.dtype] = {
    name: dtype for name, dtype in COMPUTE_DTYPES.items() if name.endswith("-mixed")
}


def check_training_precision(precision: Optional[str]) -> Optional[str]:
    """Returns the full name of a training precision (`bf16` -> `bf16-mixed`, as Lightning reads it), None for
    None, else a one-line ValueError."""
    precision = SHORT_NAMES.get(str(precision), precision) if precision is not None else None
    if precision is None or precision in TRAINING_PRECISIONS:
        return precision
    raise ValueError(f"precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {precision!r}")


def check_inference_precision(precision: Optional[str]) -> Optional[str]:
    """Returns `precision` if it is 32-true / bf16-true / 16-true (or None), else a one-line ValueError."""
    if precision is None or precision in INFERENCE_PRECISIONS:
        return precision
    hint = ""
    if isinstance(precision, str) and precision.endswith("-mixed"):
        hint = " (mixed precision is for training; inference runs in one dtype)"
    raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}{hint}")


def default_training_precision(accelerator: str = "auto") -> str:
    """bf16-mixed, or 16-mixed on GPUs without bfloat16 (LitGPT's choice for training)."""
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "16-mixed"
    return "bf16-mixed"


def default_inference_precision(device: torch.device) -> str:
    """bf16-true where the device computes in bfloat16 natively, else 32-true.

    CUDA: bf16 when `torch.cuda.is_bf16_supported()`. CPU: bf16 on CPUs with AVX512-BF16 or AMX (decoding a
    SmolLM2-135M-sized model there runs faster in bf16, which also halves the memory); 32-true elsewhere,
    where bf16 matmuls are emulated and slower than float32. MPS: 32-true.
    """
    if device.type == "cuda":
        return "bf16-true" if torch.cuda.is_bf16_supported() else "32-true"
    if device.type == "cpu":
        return "bf16-true" if cpu_has_native_bf16() else "32-true"
    return "32-true"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a probe missing from this build
            continue
    return False


def resolve_device(accelerator: str = "auto") -> torch.device:
    """The torch device for an accelerator name: "auto" (CUDA if available, else MPS, else CPU), "cpu",
    "cuda" / "gpu" or "mps"; a one-line ValueError for an unknown or unavailable one."""
    name = str(accelerator).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ValueError(f"accelerator={accelerator!r} but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device("cuda")
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError("accelerator='mps' but MPS is not available; use 'cpu' or 'auto'")
        return torch.device("mps")
    raise ValueError(f"accelerator must be one of auto, cpu, cuda, gpu, mps, got {accelerator!r}")
