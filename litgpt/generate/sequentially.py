"""`litgpt generate_sequentially`: the layers split across devices and run one after another (a pipeline), one
process per device (Lightning Fabric; gloo on CPUs).

Process r keeps a contiguous run of transformer blocks (the first processes one more when the count does not
divide); the blocks of the other processes are replaced, from outside the model file, by stand-ins that hold no
weights and no KV cache. After the last block of each run, its owner broadcasts the activations to every process,
so the next run starts from them and, after the last run, every process holds the same final activations:
embeddings, final norm and LM head are replicated, every process computes the same logits and, with the same
seed, samples the same tokens. Each process reads only its blocks of the memory-mapped weights.
"""

from __future__ import annotations

import io
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.lora import extend_module
from litgpt.model import GPT, Block


# ------------------------------------------------------------------------------------------------------------
# shared with generate_tp: one process per device, each loading only its part, generating in lockstep

Split = Callable[[torch.nn.Module, int, int], None]
Check = Callable[[Config, int], None]


def run_split_generation(
    split: Split,
    check: Check,
    checkpoint_dir: Path,
    prompt: str,
    *,
    sys_prompt: Optional[str],
    num_samples: int,
    max_new_tokens: int,
    top_k: Optional[int],
    top_p: float,
    temperature: float,
    quantize: Optional[str],
    precision: Optional[str],
    compile: bool,
    accelerator: str,
    devices: Union[int, str],
) -> None:
    """Checks everything that can fail before launching the processes, launches them, loads and splits the
    model in each, and generates (seed 1234 on every process, so sampled tokens agree)."""
    import lightning as L

    from litgpt.api import LLM, check_quantize
    from litgpt.generate.base import check_sampling_args, compile_decode_step, decode_one_token
    from litgpt.generate.cli import print_generation
    from litgpt.precision import check_inference_precision, resolve_device
    from litgpt.quantization.modes import QUANTIZATION_FILE
    from litgpt.utils import check_valid_checkpoint_dir, device_count

    check_quantize(quantize)
    check_inference_precision(precision)
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    if (checkpoint_dir / QUANTIZATION_FILE).is_file():
        raise ValueError(
            f"{checkpoint_dir} holds quantized weights (`litgpt quantize`), which cannot be split: give the full "
            "precision checkpoint and --quantize"
        )
    device_type = resolve_device(accelerator).type
    world_size = device_count(device_type, devices)
    if world_size > 1 and device_type not in ("cuda", "cpu"):
        raise ValueError(f"several processes need CUDA devices or the CPU, not {device_type}")
    check(Config.from_checkpoint(checkpoint_dir), world_size)

    fabric = L.Fabric(accelerator=device_type, devices=world_size, strategy="ddp" if world_size > 1 else "auto")
    fabric.launch()
    rank = fabric.global_rank

    llm = LLM.load(str(checkpoint_dir), distribute=None)  # memory-mapped: each process reads only its part
    split(llm.model, rank, world_size)
    llm.checkpoint_dir = None  # the split model is no longer the folder's: --quantize quantizes it in memory
    llm.distribute(accelerator=device_type, precision=precision, quantize=quantize)
    # the module path: the native CPU kernels and a full-graph compile cannot take the collectives
    llm.step_fn = compile_decode_step(fullgraph=False) if compile else decode_one_token
    quiet = rank != 0
    print_generation(
        llm, prompt, sys_prompt=sys_prompt, num_samples=num_samples, max_new_tokens=max_new_tokens, top_k=top_k,
        top_p=top_p, temperature=temperature, out=io.StringIO() if quiet else None,
        err=io.StringIO() if quiet else None,
    )
    if world_size > 1:
        fabric.barrier()
        if not quiet:
            print(f"({world_size} processes on {device_type})", file=sys.stderr)


SPLIT_VERB_ARGS = """
    Args:
        checkpoint_dir: The checkpoint folder to load.
        prompt: The prompt.
        sys_prompt: A system prompt (default: the prompt style's).
        num_samples: How many samples to draw for the prompt (generated together as one batch).
        max_new_tokens: At most this many new tokens per sample.
        top_k: Sample among the k most likely tokens only (1 is greedy).
        top_p: Sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
        temperature: Sampling temperature; 0 is greedy decoding.
        quantize: Weight quantization of each process's part: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4,
            bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        precision: 32-true, bf16-true or 16-true (default: bf16-true where the device computes it natively,
            else 32-true).
        compile: Compile the decode step with torch.compile.
        accelerator: auto (CUDA if available, else the CPU), cuda or cpu.
        devices: How many processes, one per device: "auto" is every GPU (1 on the CPU); on the CPU any number
            of processes may share it (gloo).
    """


# ------------------------------------------------------------------------------------------------------------
# the verb


def split_verb(split: Split, check: Check, summary: str) -> Callable[..., None]:
    """A generate verb that splits the model over processes with `split` (after `check`); `summary` starts its
    help. `generate_sequentially` and `generate_tp` are made by it."""

    def main(
        checkpoint_dir: Path,
        prompt: str = "What food do llamas eat?",
        *,
        accelerator: str = "auto",
        devices: Union[int, str] = "auto",
        sys_prompt: Optional[str] = None,
        num_samples: int = 1,
        max_new_tokens: int = 50,
        top_k: Optional[int] = 50,
        top_p: float = 1.0,
        temperature: float = 0.8,
        quantize: Optional[str] = None,
        precision: Optional[str] = None,
        compile: bool = False,
    ) -> None:
        run_split_generation(
            split, check, checkpoint_dir, prompt, sys_prompt=sys_prompt, num_samples=num_samples,
            max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p, temperature=temperature, quantize=quantize,
            precision=precision, compile=compile, accelerator=accelerator, devices=devices,
        )

    main.__doc__ = summary + SPLIT_VERB_ARGS
    return main


def check_sequential(config: Config, world_size: int) -> None:
    """A one-line ValueError when there are more processes than layers."""
    if world_size > config.n_layer:
        raise ValueError(f"{world_size} processes for {config.n_layer} layers: use at most {config.n_layer} devices")


def chunk_sizes(num_units: int, devices: int) -> list[int]:
    """How many of `num_units` consecutive layers each of `devices` gets: as even as possible, the first ones
    taking one more when it does not divide."""
    if devices < 1 or num_units < devices:
        raise ValueError(f"cannot split {num_units} layers over {devices} devices")
    base, extra = divmod(num_units, devices)
    return [base + (1 if i < extra else 0) for i in range(devices)]


def layer_to_device(module: nn.Module, chunk_on: type, chunk_sizes: list[int]) -> "OrderedDict[str, int]":
    """The device index of each submodule of type `chunk_on` (by name, in order), the first `chunk_sizes[0]` on
    device 0, the next `chunk_sizes[1]` on device 1, ..."""
    names = [name for name, m in module.named_modules() if isinstance(m, chunk_on)]
    owners = [device for device, size in enumerate(chunk_sizes) for _ in range(size)]
    if len(owners) != len(names):
        raise ValueError(f"chunk_sizes {chunk_sizes} cover {len(owners)} layers, the module has {len(names)}")
    return OrderedDict(zip(names, owners))


def split_layers(model: GPT, rank: int, world_size: int) -> GPT:
    """Keeps process `rank`'s blocks of `model` (of `world_size` processes) and replaces the others by
    stand-ins; the last block of each process's run broadcasts its output. Returns `model`."""
    if world_size == 1:
        return model
    check_sequential(model.config, world_size)
    owners = list(layer_to_device(model, Block, chunk_sizes(model.config.n_layer, world_size)).values())
    blocks = model.transformer.h
    for i, owner in enumerate(owners):
        last_of_run = i == len(owners) - 1 or owners[i + 1] != owner
        if owner != rank:
            blocks[i] = _RemoteBlock(blocks[i].attn, owner if last_of_run else None)
        elif last_of_run:
            extend_module(blocks[i], _BroadcastOutput).source = owner
    return model


class _BroadcastOutput:
    """Mixin of the last block of a process's run: sends its output to every other process."""

    source: int

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = super().forward(*args, **kwargs).contiguous()
        torch.distributed.broadcast(x, src=self.source)
        return x


class _RemoteBlock(nn.Module):
    """A block run by another process: no weights; its input passes through, and when it is the last block of
    that process's run, the owner's output is received instead."""

    def __init__(self, attn: nn.Module, source: Optional[int]) -> None:
        super().__init__()
        self.attn = _RemoteAttention(attn)
        self.source = source

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.source is None:
            return x
        x = torch.empty_like(x, memory_format=torch.contiguous_format)
        torch.distributed.broadcast(x, src=self.source)
        return x


class _RemoteAttention(nn.Module):
    """What `GPT` reads of a block's attention (sliding window, RoPE kind, the KV cache's length), without the
    cache itself: its KV cache is a zero-stride stand-in of the right length, in no memory."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.sliding_window = attn.sliding_window
        self.uses_local_rope = attn.uses_local_rope
        self.block_idx = attn.block_idx
        self.kv_cache = None

    def build_kv_cache(self, batch_size: int, max_seq_length: int, rope_cache_length: Optional[int] = None,
                       device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> "_CacheShape":
        return _CacheShape((batch_size, 1, max_seq_length, 1), device, dtype)


class _CacheShape:
    """The batch size and length of a KV cache (`k.shape`, `max_cache_len`), in no memory."""

    def __init__(self, shape: tuple[int, int, int, int], device: Optional[torch.device], dtype: Optional[torch.dtype]) -> None:
        self.k = self.v = torch.zeros((), dtype=dtype, device=device).expand(shape)
        self.max_cache_len = shape[2]


main = split_verb(
    split_layers, check_sequential,
    """Generate with the model's layers split across the processes (one per device), run one after another:
    each process holds only its layers' weights. The text goes to stdout, a timing line to stderr, from the
    first process.
""",
)
