"""Weight quantization for inference (`--quantize` and `litgpt quantize`).

    from litgpt.quantization import load_model
    model = load_model("checkpoints/HuggingFaceTB/SmolLM2-135M", quantize="int8", dtype="bf16-true", device="cpu")

Modes: bitsandbytes `bnb.nf4`, `bnb.nf4-dq`, `bnb.fp4`, `bnb.fp4-dq`, `bnb.int8`, and the portable weight-only
`int8` (per output channel) and `int4` (group-wise; `int4-g32`, `int4-g64` = `int4`, `int4-g128`) written in
PyTorch, which run on CPU and GPU without bitsandbytes. See `tutorials/quantize.md`. The `litgpt quantize` verb is
`litgpt.quantization.cli.quantize_checkpoint`.
"""

from litgpt.quantization.loading import check_quantize_supported, load_model, quantize_model
from litgpt.quantization.modes import MODES, QuantSpec, parse_quantize, read_quantization_file
from litgpt.quantization.portable import (
    Int4Embedding,
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    dequantize_int4,
    quantize_int4,
    quantize_int8,
    quantized_nbytes,
)

__all__ = [
    "MODES",
    "QuantSpec",
    "Int4Embedding",
    "Int4Linear",
    "Int8Embedding",
    "Int8Linear",
    "check_quantize_supported",
    "dequantize_int4",
    "load_model",
    "parse_quantize",
    "quantize_int4",
    "quantize_int8",
    "quantize_model",
    "quantized_nbytes",
    "read_quantization_file",
]
