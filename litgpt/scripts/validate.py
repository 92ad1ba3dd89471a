"""`litgpt validate`: a pre-flight check of a checkpoint folder before a long job (ours; LitGPT has no such verb).

Checks, without running the model: the files, the config, the tokenizer (and that its ids fit the embedding),
every tensor's name and shape against the config (the adapter modules of an adapter run's folder included), the
weights' dtype, and an estimate of the memory that generation needs against what the device has. Prints one
line per check; exits non-zero with the problems listed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from litgpt.utils import TOKENIZER_FILES


def validate(
    checkpoint_dir: Path,
    model_filename: str = "lit_model.pth",
    dtype: Optional[str] = None,
    training: bool = False,
    *,
    precision: Optional[str] = None,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Check a checkpoint folder before a long job: files, config, tokenizer, tensor names and shapes, dtype,
    and whether the weights plus a full-context KV cache fit the device's memory.

    Args:
        checkpoint_dir: The checkpoint folder (lit_model.pth, model_config.yaml and the tokenizer files).
        model_filename: The weights file in the folder.
        dtype: The dtype for the memory estimate (float32, float16, bfloat16), as LitGPT's `--dtype`; default: the
            precision's, else the weights' own.
        training: Estimate the memory of training (gradients and AdamW's two moments in float32 added) instead
            of inference with a full-context KV cache.
        precision: The precision the job will run in (32-true, bf16-true, 16-true) for the memory estimate;
            default: the weights' own dtype.
        accelerator: The device the job will run on (auto, cpu, cuda) for the memory comparison.

    Returns:
        A report: "problems" (a list of strings; empty when the folder is fine), "params", "dtype",
        "memory_gb" (estimated) and "available_gb" (None when unknown).
    """
    from litgpt.precision import check_inference_precision, resolve_device

    from litgpt.utils import parse_dtype

    check_inference_precision(precision)
    memory_dtype = parse_dtype(dtype) if dtype is not None else None
    device = resolve_device(accelerator)
    folder = Path(checkpoint_dir)
    report: dict[str, Any] = {"problems": [], "params": None, "dtype": None, "memory_gb": None, "available_gb": None}
    problems: list[str] = report["problems"]

    def ok(line: str) -> None:
        print(f"ok       {line}")

    def bad(line: str) -> None:
        problems.append(line)
        print(f"PROBLEM  {line}")

    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint directory {folder} does not exist")
    config = _check_config(folder, ok, bad)
    tokenizer = _check_tokenizer(folder, config, ok, bad)
    state = _check_weights(folder, config, ok, bad, model_filename)
    if config is not None and state is not None:
        _check_memory(config, state, precision, device, report, ok, bad, memory_dtype, training)
    del tokenizer
    if problems:
        raise ValueError(f"{folder} failed {len(problems)} check(s): {'; '.join(problems)}")
    print(f"{folder} is ready to use")
    return report


def _check_config(folder: Path, ok, bad):
    from litgpt.config import Config

    path = folder / "model_config.yaml"
    if not path.is_file():
        bad(f"model_config.yaml is missing (convert a Hugging Face folder with `litgpt convert_to_litgpt {folder}`)")
        return None
    try:
        config = Config.from_file(path)
    except (ValueError, TypeError, NotImplementedError) as err:
        bad(f"model_config.yaml: {str(err).splitlines()[0]}")
        return None
    ok(f"config {config.name!r}: {config.n_layer} layers, {config.n_embd} wide, {config.n_head} heads, "
       f"context {config.block_size}, vocabulary {config.padded_vocab_size}")
    return config


def _check_tokenizer(folder: Path, config, ok, bad):
    from litgpt.tokenizer import Tokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES[:2]):
        bad("no tokenizer (tokenizer.json or tokenizer.model)")
        return None
    try:
        tokenizer = Tokenizer(folder)
    except (ValueError, OSError, RuntimeError, Exception) as err:  # a broken tokenizer file raises many kinds
        bad(f"the tokenizer does not load: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return None
    if config is not None and tokenizer.vocab_size > config.padded_vocab_size:
        bad(f"the tokenizer has {tokenizer.vocab_size} ids but the embedding only {config.padded_vocab_size} rows")
    else:
        ok(f"tokenizer: {tokenizer.vocab_size} ids, bos {tokenizer.bos_id}, eos {tokenizer.eos_id}")
    return tokenizer


def _check_weights(folder: Path, config, ok, bad, model_filename: str = "lit_model.pth") -> Optional[dict]:
    from litgpt.checkpoint import apply_peft_files
    from litgpt.model import GPT
    from litgpt.quantization.modes import QUANTIZATION_FILE
    from litgpt.utils import load_state_dict

    path = folder / model_filename
    if not path.is_file():
        peft = [p.name for p in folder.glob(f"{model_filename}.*")]
        hint = f" (only {peft[0]}: run `litgpt merge_lora {folder}`)" if peft else ""
        bad(f"{model_filename} is missing{hint}")
        return None
    try:
        state = load_state_dict(path)
    except ValueError as err:
        bad(str(err).splitlines()[0])
        return None
    floats = sorted({str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()})
    if len(floats) > 1:
        bad(f"lit_model.pth mixes dtypes {', '.join(floats)}")
    if config is None:
        return state
    if (folder / QUANTIZATION_FILE).is_file():
        ok(f"quantized weights ({QUANTIZATION_FILE}): {len(state)} tensors, names and shapes not compared")
        return state
    with torch.device("meta"):
        model = GPT(config)
    try:
        apply_peft_files(model, folder)
    except ValueError as err:
        bad(str(err).splitlines()[0])
        return state
    own = model.state_dict()
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing:
        bad(f"lit_model.pth lacks {len(missing)} tensor(s) of the config, e.g. {missing[0]}")
    if unexpected:
        bad(f"lit_model.pth has {len(unexpected)} tensor(s) the config does not, e.g. {unexpected[0]}")
    for key in shapes[:5]:
        bad(f"{key} has shape {tuple(state[key].shape)}, the config expects {tuple(own[key].shape)}")
    if not (missing or unexpected or shapes):
        ok(f"weights: {len(state)} tensors match the config, dtype {', '.join(floats) or 'none'}")
    return state


def _check_memory(config, state: dict, precision: Optional[str], device: torch.device, report: dict, ok, bad,
                  memory_dtype: Optional[torch.dtype] = None, training: bool = False) -> None:
    from litgpt.precision import INFERENCE_PRECISIONS

    params = sum(t.numel() for t in {(t.data_ptr(), t.numel()): t for t in state.values()}.values())
    stored = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    dtype = memory_dtype or (INFERENCE_PRECISIONS[precision] if precision else stored)
    size = torch.empty((), dtype=dtype).element_size()
    kv_cache = 2 * config.n_layer * config.n_query_groups * config.head_size * config.block_size * size
    # training: weights, their gradients and AdamW's two float32 moments; inference: weights and a full KV cache
    need = params * (2 * size + 8) if training else params * size + kv_cache
    available = _available_bytes(device)
    report.update(params=params, dtype=str(dtype).removeprefix("torch."), memory_gb=round(need / 1e9, 3),
                  available_gb=None if available is None else round(available / 1e9, 3))
    extra = ("gradients and AdamW state" if training
             else f"a KV cache of the full context ({config.block_size} tokens)")
    line = f"memory: {params:,} parameters in {report['dtype']} + {extra} ~ {need / 1e9:.3f} GB"
    if available is None:
        ok(line)
    elif need > available:
        bad(f"{line}, more than the {available / 1e9:.2f} GB available on {device.type}")
    else:
        ok(f"{line} of {available / 1e9:.2f} GB available on {device.type}")


def _available_bytes(device: torch.device) -> Optional[int]:
    """Free memory of the device: CUDA's free memory, or the machine's available RAM (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
