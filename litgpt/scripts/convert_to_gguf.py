"""`litgpt convert_to_gguf`: a checkpoint folder -> one GGUF v3 file for llama.cpp, Ollama and LM Studio.

The file holds the architecture keys llama.cpp reads, the tokenizer (vocabulary, merges or scores, token
types, special tokens, the chat template of `tokenizer_config.json`) and the tensors under llama.cpp's names
and layouts. Tables: `litgpt.scripts.gguf_families`. `litgpt convert_to_litgpt FILE.gguf` reads one back.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal, Optional

import torch

from litgpt.config import Config
from litgpt.scripts.gguf_families import (
    DTYPES,
    check_exportable,
    gguf_tensor_plan,
    write_metadata,
    write_tokenizer,
)
from litgpt.utils import atomic_path, check_state_dict_matches, load_state_dict

__all__ = ["convert_to_gguf"]

GGUFDtype = Literal["f32", "f16", "bf16", "q8_0", "q4_0"]


def convert_to_gguf(
    checkpoint_dir: Path,
    out: Optional[Path] = None,
    dtype: GGUFDtype = "f16",
    pretrained_checkpoint_dir: Optional[Path] = None,
) -> Path:
    """Writes a checkpoint as a GGUF file (llama.cpp, Ollama, LM Studio).

    A LoRA or adapter run's step folder (`lit_model.pth.lora` / `.adapter` without `lit_model.pth`) is merged
    first, as `litgpt merge_lora` does (which writes `lit_model.pth` into the folder).

    Args:
        checkpoint_dir: Folder holding `lit_model.pth`, `model_config.yaml` and the tokenizer files.
        out: The GGUF file to write (default: `<checkpoint_dir>/<model name>-<dtype>.gguf`).
        dtype: Type of the matrices: f32, f16, bf16, or q8_0 / q4_0 (quantized by the `gguf` package).
            Norms, biases and matrices whose rows are not a multiple of 32 (quantized types) stay f32 / f16,
            as in llama.cpp's own files.
        pretrained_checkpoint_dir: For a LoRA / adapter step folder: the base checkpoint it finetuned
            (default: the one its hyperparameters.yaml records).

    Returns:
        The path of the written file.
    """
    from litgpt.scripts.gguf_families import _gguf

    gguf = _gguf()
    checkpoint_dir = Path(checkpoint_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir} does not exist")
    if not (checkpoint_dir / "lit_model.pth").is_file() and any(
        (checkpoint_dir / f"lit_model.pth.{kind}").is_file() for kind in ("lora", "adapter")
    ):
        from litgpt.scripts.merge_lora import merge_lora

        merge_lora(checkpoint_dir, pretrained_checkpoint_dir)
    for required in ("lit_model.pth", "model_config.yaml"):
        if not (checkpoint_dir / required).is_file():
            raise FileNotFoundError(f"{checkpoint_dir} has no {required}: give a checkpoint folder")
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    gfam, _, plans = gguf_tensor_plan(config)
    check_exportable(config, gfam)
    out = Path(out) if out is not None else checkpoint_dir / f"{config.name or checkpoint_dir.name}-{dtype}.gguf"
    if out.suffix != ".gguf":
        raise ValueError(f"--out {out} must end in .gguf")

    start = time.perf_counter()
    state = load_state_dict(checkpoint_dir / "lit_model.pth")
    with torch.device("meta"):
        from litgpt.model import GPT

        expected = GPT(config).state_dict()
    check_state_dict_matches(expected, state, checkpoint_dir / "lit_model.pth",
                             optional=("lm_head.weight",) if config.tie_embeddings else ())

    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), gfam.arch)
        rope_freqs = write_metadata(writer, config, gfam, config.name or checkpoint_dir.name)
        writer.add_file_type(_FILE_TYPES[dtype](gguf))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_tokenizer(writer, checkpoint_dir, config.padded_vocab_size, gfam.arch)
        if rope_freqs is not None:
            writer.add_tensor("rope_freqs.weight", rope_freqs.numpy())
        converted: dict[int, list[torch.Tensor]] = {}
        for plan in plans:
            rule = plan.rule
            if id(rule) not in converted:
                converted = {id(rule): rule.to_hf([state[k] for k in rule.lit])}
            tensor = plan.to_gguf(converted[id(rule)][plan.position]).contiguous()
            data, kind = _encode(tensor, dtype, gguf)
            writer.add_tensor(plan.name, data, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
    size = out.stat().st_size / 2**20
    print(f"Saved {config.name!r} as GGUF {gfam.arch} {dtype} ({len(plans)} tensors, {size:.1f} MiB) to {out} "
          f"in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return out


_FILE_TYPES = {
    "f32": lambda g: g.LlamaFileType.ALL_F32,
    "f16": lambda g: g.LlamaFileType.MOSTLY_F16,
    "bf16": lambda g: g.LlamaFileType.MOSTLY_BF16,
    "q8_0": lambda g: g.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": lambda g: g.LlamaFileType.MOSTLY_Q4_0,
}


def _encode(tensor: torch.Tensor, dtype: str, gguf) -> tuple:
    """(numpy data, GGML type) for one tensor: 1-D tensors f32; matrices in `dtype`, f16 where a quantized
    type's 32-value blocks do not fit the rows."""
    Q = gguf.GGMLQuantizationType
    if tensor.dim() < 2 or dtype == "f32":
        return tensor.float().numpy(), Q.F32
    if dtype in ("q8_0", "q4_0"):
        kind = Q.Q8_0 if dtype == "q8_0" else Q.Q4_0
        block = gguf.GGML_QUANT_SIZES[kind][0]
        if tensor.shape[-1] % block == 0:
            return gguf.quants.quantize(tensor.float().numpy(), kind), kind
        dtype = "f16"
    if dtype == "bf16":
        raw = tensor.to(torch.bfloat16).view(torch.int16).numpy().view("uint8")
        return raw, Q.BF16
    return tensor.to(torch.float16).numpy(), Q.F16
