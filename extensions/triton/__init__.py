"""Triton kernels for training litgpt models: fused cross-entropy (optionally with the LM head), RoPE,
SwiGLU / GeGLU and RMSNorm, each a `torch.autograd.Function` with a forward and a backward kernel.

    from extensions.triton import enable
    model, loss_fn = enable(model)   # swaps the kernels into a built GPT; loss_fn: the fused LM-head loss

The kernels need a CUDA GPU. For tests, set `TRITON_INTERPRET=1` before importing this package: they then
run on CPU tensors through Triton's interpreter (slowly). See extensions/README.md and tutorials/kernels.md.
"""

import importlib
import importlib.util

if importlib.util.find_spec("triton") is None:
    raise ImportError(
        "extensions.triton needs the `triton` package, which is not installed: pip install 'litgpt[triton]' "
        "(Triton ships Linux wheels for NVIDIA and AMD GPUs)"
    )

# name -> submodule. Loaded on first use (PEP 562), so `python -m extensions.triton.bench` can still set
# TRITON_INTERPRET before any kernel is defined.
_EXPORTS = {
    "INTERPRETED": "_runtime",
    "gpu_available": "_runtime",
    "require_gpu": "_runtime",
    "swiglu": "glu",
    "geglu": "glu",
    "cross_entropy": "loss",
    "default_chunk_rows": "loss",
    "fused_linear_cross_entropy": "loss",
    "rms_norm": "norm",
    "apply_rope": "rope",
    "apply_rope_partial": "rope",
    "TritonCausalSelfAttention": "patch",
    "TritonGemmaMLP": "patch",
    "TritonLLaMAMLP": "patch",
    "TritonRMSNorm": "patch",
    "count_swapped": "patch",
    "disable": "patch",
    "enable": "patch",
    "lm_head_loss": "patch",
    "summed_fused_linear_cross_entropy": "patch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'extensions.triton' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"extensions.triton.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
