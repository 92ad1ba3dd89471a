"""`litgpt quantize`: write a quantized copy of a checkpoint folder that loads directly."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from litgpt.quantization.loading import check_quantize_supported, load_model
from litgpt.quantization.modes import (
    MODES,
    QUANTIZATION_FILE,
    parse_quantize,
    quantization_file_text,
    read_quantization_file,
)
from litgpt.precision import INFERENCE_PRECISIONS, check_inference_precision
from litgpt.utils import check_valid_checkpoint_dir, copy_side_files



def quantize_checkpoint(
    checkpoint_dir: Path,
    mode: Optional[str] = None,
    out_dir: Optional[Path] = None,
    precision: str = "bf16-true",
) -> Path:
    """Quantize a checkpoint once and save it; `generate`, `chat`, `serve`, `evaluate` and `LLM` load the result
    directly (no `--quantize` needed, no quantization at start-up).

    The weights are read tensor by tensor from the memory-mapped `lit_model.pth` and quantized on the CPU. The
    output folder holds `lit_model.pth` (quantized tensors), `model_config.yaml`, `quantization.yaml` (mode, group
    size) and the tokenizer files. It is written under a temporary name and renamed when complete.

    Args:
        checkpoint_dir: folder with a full-precision `lit_model.pth` and `model_config.yaml`.
        mode: int8 (per-channel), int4 / int4-g32 / int4-g64 / int4-g128 (group-wise; int4 is int4-g64), or a
            bitsandbytes mode: bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8.
        out_dir: where to write (must not exist or be empty). Default: `<checkpoint_dir>-<mode>` beside it.
        precision: dtype of the scales and of the tensors kept in full precision (norms; embeddings with
            bitsandbytes): bf16-true, 16-true or 32-true.

    Returns:
        the output folder.
    """
    if mode is None:
        raise ValueError(f"--mode is required; expected one of {', '.join(MODES)}")
    spec = parse_quantize(mode)
    if spec is None:
        raise ValueError(f"--mode {mode!r} quantizes nothing; expected one of {', '.join(MODES)}")
    check_inference_precision(precision)
    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    already = read_quantization_file(checkpoint_dir)
    if already is not None:
        raise ValueError(
            f"{checkpoint_dir} is already quantized ({already.mode}); quantize a full-precision checkpoint"
        )
    out_dir = Path(out_dir) if out_dir is not None else checkpoint_dir.parent / f"{checkpoint_dir.name}-{spec.mode}"
    if out_dir.resolve() == checkpoint_dir.resolve():
        raise ValueError("out_dir must differ from checkpoint_dir (the full-precision checkpoint is kept)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"out_dir {out_dir} already exists and is not empty; choose another or remove it")
    dtype = INFERENCE_PRECISIONS[precision]
    check_quantize_supported(spec, "cpu", dtype)

    start = time.perf_counter()
    print(f"Quantizing {checkpoint_dir} to {spec.mode} ({precision} scales) on the CPU ...", file=sys.stderr)
    model = load_model(checkpoint_dir, quantize=spec, dtype=dtype, device="cpu", use_kernels=False)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        torch.save(model.state_dict(), tmp / "lit_model.pth")
        shutil.copy2(checkpoint_dir / "model_config.yaml", tmp / "model_config.yaml")
        copy_side_files(checkpoint_dir, tmp)
        (tmp / QUANTIZATION_FILE).write_text(quantization_file_text(spec, precision))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    before = (checkpoint_dir / "lit_model.pth").stat().st_size / 1e6
    after = (out_dir / "lit_model.pth").stat().st_size / 1e6
    print(
        f"Saved the {spec.mode} checkpoint to {out_dir} in {time.perf_counter() - start:.1f}s: lit_model.pth "
        f"{after:,.1f} MB (full precision: {before:,.1f} MB)",
        file=sys.stderr,
    )
    return out_dir
