"""bitsandbytes layers (`bnb.nf4`, `bnb.nf4-dq`, `bnb.fp4`, `bnb.fp4-dq`, `bnb.int8`) built from a weight or from
their own saved state, and a probe that tells whether a device runs them."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from litgpt.quantization.modes import QuantSpec

INT8_THRESHOLD = 6.0  # LLM.int8(): input features with outliers above this run in 16 bits


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


class _OnlyOnce(logging.Filter):
    """Lets a log message that starts with `prefix` through the first time only."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        first, self.seen = not self.seen, True
        return first


_INT8_CAST_ONCE = _OnlyOnce("MatMul8bitLt: inputs will be cast")


def _warn_int8_cast_once() -> None:
    # bitsandbytes logs this on every bnb.int8 matmul with bf16 / fp32 inputs (it runs them in float16)
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _INT8_CAST_ONCE not in logger.filters:
        logger.addFilter(_INT8_CAST_ONCE)


def import_bnb(mode: str) -> Any:
    """Imports bitsandbytes, or raises a one-line ImportError saying how to install it.

    Args:
        mode: the requested mode (named in the error).
    """
    # bitsandbytes' CPU backend logs a warning at import when the optional `kernels` package is missing; it
    # then uses its own compiled CPU kernels, so the message is only noise here
    cpu_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    quiet = _DropMessage("kernels-community")
    cpu_logger.addFilter(quiet)
    try:
        import bitsandbytes
    except ImportError as err:
        raise ImportError(
            f"--quantize {mode} needs bitsandbytes ({err}); install it with `pip install bitsandbytes`, or use the "
            "portable modes int8 / int4, which need nothing extra"
        ) from None
    finally:
        cpu_logger.removeFilter(quiet)
    return bitsandbytes


def _empty_module(spec: QuantSpec, in_features: int, out_features: int, bias: bool, dtype: torch.dtype) -> nn.Module:
    bnb = import_bnb(spec.mode)
    if spec.bnb_type == "int8":
        _warn_int8_cast_once()
    with torch.device("meta"):
        if spec.bnb_type == "int8":
            return bnb.nn.Linear8bitLt(
                in_features, out_features, bias=bias, has_fp16_weights=False, threshold=INT8_THRESHOLD
            )
        return bnb.nn.Linear4bit(
            in_features, out_features, bias=bias, compute_dtype=dtype,
            compress_statistics=spec.double_quant, quant_type=spec.bnb_type,
        )


def _plain_cpu_path_for_partial_blocks(module: nn.Module, in_features: int, device: torch.device) -> None:
    # bitsandbytes' packed CPU inference kernel for 4-bit layers needs whole quantization blocks per row (it
    # fails on the first forward otherwise); its plain path handles any size
    if device.type == "cpu" and in_features % module.weight.blocksize and hasattr(module, "support_avx512bf16_for_cpu"):
        module.support_avx512bf16_for_cpu = False


def bnb_linear(
    spec: QuantSpec,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> nn.Module:
    """A bitsandbytes layer on `device` holding `weight` (out, in) quantized (and `bias` in `dtype`).

    Args:
        spec: a bitsandbytes mode.
        weight: the full-precision weight (on the CPU or on `device`); bitsandbytes quantizes it on `device`.
        bias: optional bias.
        device: where the layer runs.
        dtype: the compute dtype.
    """
    bnb = import_bnb(spec.mode)
    out_features, in_features = weight.shape
    module = _empty_module(spec, in_features, out_features, bias is not None, dtype)
    if spec.bnb_type == "int8":
        # Int8Params quantizes when it moves from the CPU to a device (also "cpu"), in float16
        param = bnb.nn.Int8Params(weight.detach().to("cpu", copy=True), requires_grad=False, has_fp16_weights=False)
        module.weight = param.to(device)
    else:
        param = bnb.nn.Params4bit(
            weight.detach().to(dtype=dtype, copy=True), requires_grad=False,
            compress_statistics=spec.double_quant, quant_type=spec.bnb_type, module=module,
        )
        module.weight = param.to(device)
        _plain_cpu_path_for_partial_blocks(module, in_features, device)
    if bias is not None:
        module.bias = nn.Parameter(bias.detach().to(device=device, dtype=dtype, copy=True), requires_grad=False)
    return module


def bnb_state_keys(spec: QuantSpec, prefix: str, state: dict) -> list[str]:
    """The keys of `state` that belong to the saved bitsandbytes layer at `prefix` (ending in a dot)."""
    if spec.bnb_type == "int8":
        return [k for k in (prefix + "weight", prefix + "SCB", prefix + "weight_format", prefix + "bias") if k in state]
    return [k for k in state if k == prefix + "weight" or k == prefix + "bias" or k.startswith(prefix + "weight.")]


def is_saved_bnb_layer(spec: QuantSpec, prefix: str, state: dict) -> bool:
    """Whether `state` holds a saved (already quantized) bitsandbytes layer at `prefix`."""
    if spec.bnb_type == "int8":
        return prefix + "SCB" in state
    return any(k.startswith(prefix + "weight.quant_state.") for k in state)


def bnb_linear_from_state(
    spec: QuantSpec,
    prefix: str,
    state: dict,
    in_features: int,
    out_features: int,
    device: torch.device,
    dtype: torch.dtype,
) -> nn.Module:
    """Rebuilds a saved bitsandbytes layer from its `state_dict` entries (no re-quantization).

    Args:
        spec: the mode the layer was saved with.
        prefix: the layer's key prefix, ending in a dot.
        state: the checkpoint's state dict.
        in_features, out_features: the layer's shape.
        device: where the layer runs.
        dtype: the compute dtype.
    """
    bnb = import_bnb(spec.mode)
    has_bias = prefix + "bias" in state
    module = _empty_module(spec, in_features, out_features, has_bias, dtype)
    data = state[prefix + "weight"]
    if spec.bnb_type == "int8":
        if data.dtype != torch.int8 or tuple(data.shape) != (out_features, in_features):
            raise ValueError(
                f"{prefix}weight: expected int8 {(out_features, in_features)}, got {data.dtype} {tuple(data.shape)}"
            )
        q = data.to(device, copy=True)
        module.weight = bnb.nn.Int8Params(
            q, requires_grad=False, has_fp16_weights=False, CB=q, SCB=state[prefix + "SCB"].to(device, copy=True)
        )
    else:
        stats = {k[len(prefix + "weight."):]: v for k, v in state.items() if k.startswith(prefix + "weight.")}
        module.weight = bnb.nn.Params4bit.from_prequantized(
            data.to(device, copy=True), {k: v.to(device, copy=True) for k, v in stats.items()},
            requires_grad=False, device=device, module=module,
        )
        if tuple(module.weight.quant_state.shape) != (out_features, in_features):
            raise ValueError(
                f"{prefix}weight holds a {tuple(module.weight.quant_state.shape)} matrix, the model config "
                f"expects {(out_features, in_features)}"
            )
        _plain_cpu_path_for_partial_blocks(module, in_features, device)
    if has_bias:
        bias = state[prefix + "bias"].to(device=device, dtype=dtype, copy=True)
        module.bias = nn.Parameter(bias, requires_grad=False)
    return module


@functools.lru_cache(maxsize=None)
def bnb_runs_on(mode: str, device_type: str, dtype: torch.dtype) -> Optional[str]:
    """None if bitsandbytes runs `mode` on this device type in `dtype`, else the first line of its error.

    A 64 x 64 layer is quantized and run there once (the result is cached per process).
    """
    from litgpt.quantization.modes import parse_quantize

    spec = parse_quantize(mode)
    device = torch.device(device_type)

    def probe() -> Optional[str]:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(64, 64, generator=gen)
        layer = bnb_linear(spec, w, torch.zeros(64), device, dtype)
        x = torch.randn(2, 64, generator=gen).to(device=device, dtype=dtype)
        y = layer(x)
        ref = x.float() @ w.to(device).T
        if not torch.isfinite(y).all() or float((y.float() - ref).norm() / ref.norm()) > 0.25:
            return "its output is wrong on this device"
        return None

    return problem_of(probe)


def problem_of(probe: Callable[[], Optional[str]]) -> Optional[str]:
    """Runs `probe` (a try-out of a bitsandbytes layer); returns what it returns, or the first line of the error
    it raised (an ImportError, bitsandbytes missing, propagates)."""
    try:
        return probe()
    except ImportError:
        raise
    except Exception as err:
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
