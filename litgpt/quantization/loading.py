"""Quantize while loading: a `GPT` is built on the meta device and filled tensor by tensor from the memory-mapped
`lit_model.pth`, each linear layer quantized on its way to the device. The full-precision model is never
materialized on the device, only one full-precision weight at a time.

Quantized layers are swapped in for the `nn.Linear` modules of the built model (and, for the portable modes, for
the token embedding), so parameter names stay those of the full-precision model: `transformer.h.0.attn.qkv.weight`
holds the int8 / packed int4 codes, with `...qkv.scales` (and `...qkv.zeros`) beside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.model import GPT, LLaMAMoE
from litgpt.quantization.bnb import (
    bnb_linear,
    bnb_linear_from_state,
    bnb_runs_on,
    bnb_state_keys,
    import_bnb,
    is_saved_bnb_layer,
)
from litgpt.quantization.modes import MODES, QUANTIZATION_FILE, QuantSpec, parse_quantize, read_quantization_file
from litgpt.quantization.portable import (
    Int4Embedding,
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    quantize_int4,
    quantize_int8,
)
from litgpt.utils import (
    MappedFilePages,
    check_state_dict_matches, check_valid_checkpoint_dir, load_state_dict, parse_dtype, return_freed_memory,
)

EMBEDDING = "transformer.wte"
HEAD = "lm_head"


# ------------------------------------------------------------------------------------------------------------
# checks made before any work


def check_quantize_supported(
    quantize: Optional[Union[str, QuantSpec]],
    device: Union[str, torch.device] = "cpu",
    dtype: Optional[Union[str, torch.dtype]] = torch.bfloat16,
) -> Optional[QuantSpec]:
    """Parses `quantize` and checks that `device` runs it in `dtype`; returns the QuantSpec (None for None).

    The portable modes (int8, int4-gN) run everywhere. A bitsandbytes mode needs bitsandbytes (ImportError
    otherwise) and a device its build supports: a small layer is quantized and run there once, and a failure
    becomes a one-line ValueError naming the mode and the device.

    Args:
        quantize: a mode name (see `MODES`), a QuantSpec or None.
        device: the device the model will run on.
        dtype: the compute dtype (torch dtype or a name such as "bf16-true").
    """
    spec = parse_quantize(quantize)
    device = torch.device(device)
    dtype = parse_dtype(dtype) or torch.float32
    if device.type == "meta":
        raise ValueError("cannot load a model for the meta device; pass a real device such as 'cpu' or 'cuda'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available; use 'cpu'")
    if spec is None or not spec.is_bnb:
        return spec
    bnb = import_bnb(spec.mode)
    problem = bnb_runs_on(spec.mode, device.type, dtype)
    if problem is not None:
        raise ValueError(
            f"--quantize {spec.mode} cannot run on {device.type} in {str(dtype).removeprefix('torch.')} with "
            f"bitsandbytes {bnb.__version__} ({problem}); use --quantize int8 or int4, which run on every device"
        )
    return spec


# ------------------------------------------------------------------------------------------------------------
# the public entry points


def load_model(
    checkpoint_dir: Union[str, Path],
    *,
    quantize: Optional[Union[str, QuantSpec]] = None,
    dtype: Optional[Union[str, torch.dtype]] = torch.bfloat16,
    device: Union[str, torch.device] = "cpu",
    use_kernels: bool = True,
) -> GPT:
    """Loads a checkpoint folder onto `device`, quantizing it while loading.

    The model is built on the meta device and filled tensor by tensor from the memory-mapped `lit_model.pth`:
    each weight is read, moved, quantized and freed before the next, so the full-precision model never sits
    on the device (nor in memory) next to the quantized one. A folder written by `litgpt quantize` (it holds a
    `quantization.yaml`) loads directly, without quantizing again.

    Args:
        checkpoint_dir: folder with `lit_model.pth` and `model_config.yaml`.
        quantize: None (no quantization), or one of `MODES`: bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8
            (bitsandbytes), int8 (per-channel), int4 / int4-g32 / int4-g64 / int4-g128 (group-wise). For a
            quantized folder, None means the mode it was saved with; another mode is an error.
        dtype: the compute dtype: activations, norms, biases, scales (torch dtype or a name like "bf16-true").
        device: where the model runs.
        use_kernels: False keeps every portable layer on the dequantize + matmul path (for tests and checks).

    Returns:
        the GPT in eval mode, on `device`, without gradients.
    """
    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    saved = read_quantization_file(checkpoint_dir)
    spec = parse_quantize(quantize)
    if saved is not None:
        if spec is not None and spec != saved:
            raise ValueError(
                f"{checkpoint_dir} holds a {saved.mode} checkpoint; load it with --quantize {saved.mode} (or "
                f"without --quantize), or quantize the full-precision checkpoint to {spec.mode}"
            )
        spec = saved
    spec = check_quantize_supported(spec, device, dtype)
    dtype = parse_dtype(dtype) or torch.float32
    device = torch.device(device)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    with torch.device("meta"):
        model = GPT(config)
    state = dict(load_state_dict(checkpoint_dir / "lit_model.pth"))  # memory-mapped tensors
    if saved is None:
        _check_full_precision_state(model, state, checkpoint_dir)
    elif not any(_is_quantized_entry(spec, k, state) for k in state):
        raise ValueError(f"{checkpoint_dir} has a {QUANTIZATION_FILE} but its lit_model.pth holds no quantized weights")
    pages = MappedFilePages(checkpoint_dir / "lit_model.pth") if device.type == "cpu" else None
    _fill(model, state, spec, device, dtype, use_kernels, source=str(checkpoint_dir / "lit_model.pth"), pages=pages)
    return model


def quantize_model(
    model: GPT,
    quantize: Union[str, QuantSpec],
    *,
    dtype: Optional[Union[str, torch.dtype]] = torch.bfloat16,
    device: Optional[Union[str, torch.device]] = None,
    use_kernels: bool = True,
) -> GPT:
    """Quantizes a built full-precision GPT in place, layer by layer (each full-precision weight is dropped
    as soon as its quantized layer exists). For a model that is not in a checkpoint folder (e.g. random init).

    Args:
        model: the full-precision GPT (on any device).
        quantize: one of `MODES`.
        dtype: the compute dtype.
        device: where the model runs (default: where its weights are).
        use_kernels: False keeps portable layers on the dequantize + matmul path.

    Returns:
        the same GPT object, quantized, in eval mode.
    """
    if device is None:
        device = model.lm_head.weight.device
    spec = check_quantize_supported(quantize, device, dtype)
    if spec is None:
        raise ValueError("quantize_model needs a mode; expected one of " + ", ".join(MODES))
    if any(_is_quantized_module(m) for m in model.modules()):
        raise ValueError("the model is already quantized")
    state = dict(model.state_dict())
    _fill(model, state, spec, torch.device(device), parse_dtype(dtype) or torch.float32, use_kernels, source="model")
    return model


# ------------------------------------------------------------------------------------------------------------
# filling a (meta) model from a state dict


def _check_full_precision_state(model: GPT, state: dict, checkpoint_dir: Path) -> None:
    source = checkpoint_dir / "lit_model.pth"
    optional = (HEAD + ".weight",) if model.config.tie_embeddings else ()
    check_state_dict_matches(model.state_dict(), state, source, optional)
    for key, value in state.items():
        if not value.is_floating_point() and key.endswith(".weight"):
            raise ValueError(
                f"{source}: {key} is {value.dtype}, not floating point: the weights look "
                f"quantized but the folder has no {QUANTIZATION_FILE}"
            )


def _is_quantized_entry(spec: QuantSpec, key: str, state: dict) -> bool:
    if spec.is_bnb:
        return key.endswith(".SCB") or ".weight.quant_state." in key
    return key.endswith(".scales")


def _linear_targets(model: GPT) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(full name, parent, attribute, module) of every linear layer to quantize: all of them except MoE routers
    (a few outputs that decide which experts run, kept in full precision)."""
    out = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            if not isinstance(child, nn.Linear):
                continue
            if isinstance(parent, LLaMAMoE) and attr == "gate":
                continue
            out.append((f"{parent_name}.{attr}" if parent_name else attr, parent, attr, child))
    return out


def _take(state: dict, key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"{source} is missing {key}")
    return state.pop(key)


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    same_storage = a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    if a.device == b.device and same_storage and a.storage_offset() == b.storage_offset() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


@torch.no_grad()
def _fill(
    model: GPT,
    state: dict,
    spec: Optional[QuantSpec],
    device: torch.device,
    dtype: torch.dtype,
    use_kernels: bool,
    source: str,
    pages: Optional[MappedFilePages] = None,
) -> None:
    """Replaces (or fills) the modules of `model` from `state`, popping each entry once used (and, with `pages`,
    dropping its pages of the memory-mapped file)."""
    config = model.config
    use_kernel = None if use_kernels else False
    release = pages.release if pages is not None else (lambda t: None)

    def move(key: str) -> torch.Tensor:  # a full-precision tensor: floating point cast to dtype, always a copy
        t = _take(state, key, source)
        out = t.to(device=device, dtype=dtype if t.is_floating_point() else None, copy=True)
        release(t)
        return out

    # tied embeddings: the output layer reads the embedding's entries (one matrix, read once)
    head_key, emb_key = HEAD + ".weight", EMBEDDING + ".weight"
    tied = config.tie_embeddings and (head_key not in state or _same_values(state[head_key], state[emb_key]))
    if config.tie_embeddings and not tied:  # a checkpoint trained untied of a family tied by default
        model.config = config = dataclasses.replace(config, tie_embeddings=False)
    if tied:
        for suffix in ("weight", "scales", "zeros"):
            state.pop(f"{HEAD}.{suffix}", None)

    for name, parent, attr, linear in _linear_targets(model):
        shared = tied and name == HEAD
        wprefix = (EMBEDDING if shared else name) + "."
        bias_key = name + ".bias" if linear.bias is not None else None
        if spec is None:
            if not shared:
                linear.weight = nn.Parameter(move(wprefix + "weight"), requires_grad=False)
            if bias_key:
                linear.bias = nn.Parameter(move(bias_key), requires_grad=False)
            continue
        if spec.is_bnb and is_saved_bnb_layer(spec, wprefix, state):
            new = bnb_linear_from_state(spec, wprefix, state, linear.in_features, linear.out_features, device, dtype)
            for key in bnb_state_keys(spec, wprefix, state):
                state.pop(key)
        elif spec.is_bnb:
            weight = state[wprefix + "weight"] if shared else _take(state, wprefix + "weight", source)
            bias = _take(state, bias_key, source) if bias_key else None
            new = bnb_linear(spec, weight, bias, device, dtype)
        else:
            new = _portable_linear(
                spec, wprefix, bias_key, state, linear, device, dtype, use_kernel, source, shared, release
            )
        setattr(parent, attr, new)
        if spec is not None and device.type == "cpu":
            return_freed_memory()  # the float32 temporaries of quantizing, before the next layer's

    # the token embedding: a row lookup into quantized rows with the portable modes (shared with a tied head
    # where its layout allows); full precision otherwise (bitsandbytes quantizes linear layers only)
    wte = model.transformer.wte
    if spec is not None and not spec.is_bnb:
        head = model.lm_head if tied else None
        model.transformer.wte = _portable_embedding(spec, state, wte, head, device, dtype, source, release)
    else:
        wte.weight = nn.Parameter(move(emb_key), requires_grad=False)
        if tied and spec is None:
            model.lm_head.weight = wte.weight

    # everything else (norms, learned positions, MoE routers): floating point cast to dtype
    for mod_name, module in model.named_modules():
        if _is_quantized_module(module):
            continue
        for pname, param in list(module.named_parameters(recurse=False)):
            key = f"{mod_name}.{pname}" if mod_name else pname
            if key in state or param.device.type == "meta":
                setattr(module, pname, nn.Parameter(move(key), requires_grad=False))
        for bname in list(module._buffers):
            key = f"{mod_name}.{bname}" if mod_name else bname
            if bname not in module._non_persistent_buffers_set and key in state:
                module._buffers[bname] = move(key)
    if state:
        keys = sorted(state)
        raise ValueError(f"{source} holds {len(keys)} key(s) the model does not use, e.g. {keys[:3]}")
    model.reset_rope_cache(device)
    model.eval()
    model.requires_grad_(False)
    if spec is not None and device.type == "cpu":
        return_freed_memory()


def _is_quantized_module(module: nn.Module) -> bool:
    return isinstance(module, (Int8Linear, Int4Linear)) or type(module).__module__.startswith("bitsandbytes")


def _portable_linear(
    spec: QuantSpec,
    wprefix: str,
    bias_key: Optional[str],
    state: dict,
    linear: nn.Linear,
    device: torch.device,
    dtype: torch.dtype,
    use_kernel: Optional[bool],
    source: str,
    keep: bool,
    release: Callable[[torch.Tensor], None] = lambda t: None,
) -> nn.Module:
    """An Int8Linear / Int4Linear for `linear`, quantized from the full-precision weight at `wprefix` or read
    from saved quantized entries there. With `keep`, the entries stay in `state` (a tied embedding reads them)."""

    def get(key: str) -> torch.Tensor:
        return state[key] if keep and key in state else _take(state, key, source)

    bias = _take(state, bias_key, source).to(device, copy=True) if bias_key else None
    N, K = linear.out_features, linear.in_features
    saved = wprefix + "scales" in state
    if spec.method == "int8":
        module = Int8Linear(K, N, bias=bias is not None)
        if saved:
            q, scales = get(wprefix + "weight").to(device, copy=True), get(wprefix + "scales").to(device, copy=True)
        else:
            source_weight = get(wprefix + "weight")
            q, scales = quantize_int8(source_weight.to(device))
            release(source_weight)  # kept for a tied embedding? its pages fault back in from the file
        return module.set_quantized(q, scales, bias, dtype, use_kernel=use_kernel)
    module = Int4Linear(K, N, bias=bias is not None, group_size=spec.group_size)
    if saved:
        packed = get(wprefix + "weight").to(device, copy=True)
        scales, zeros = get(wprefix + "scales").to(device, copy=True), get(wprefix + "zeros").to(device, copy=True)
    else:
        source_weight = get(wprefix + "weight")
        packed, scales, zeros = quantize_int4(source_weight.to(device), spec.group_size)
        release(source_weight)
    return module.set_quantized(packed, scales, zeros, bias, dtype, use_kernel=use_kernel)


def _portable_embedding(
    spec: QuantSpec,
    state: dict,
    wte: nn.Embedding,
    tied_head: Optional[nn.Module],
    device: torch.device,
    dtype: torch.dtype,
    source: str,
    release: Callable[[torch.Tensor], None] = lambda t: None,
) -> nn.Module:
    """The quantized token embedding; shares a tied head's tensors when the head's layout can be read by row."""
    V, C = wte.num_embeddings, wte.embedding_dim
    key = EMBEDDING + "."
    if tied_head is not None:  # the head was built from these entries already
        for suffix in ("weight", "scales", "zeros"):
            state.pop(key + suffix, None)
    saved = key + "scales" in state

    def get(suffix: str) -> torch.Tensor:
        t = _take(state, key + suffix, source)
        out = t.to(device, copy=True)
        release(t)
        return out

    if spec.method == "int8":
        emb = Int8Embedding(V, C)
        if tied_head is not None:  # the same int8 rows and scales as the head
            emb.weight, emb.scales = tied_head.weight, tied_head.scales
            return emb
        q, scales = (get("weight"), get("scales")) if saved else quantize_int8(get("weight"))
        return emb.set_quantized(q, scales, None, dtype)
    emb = Int4Embedding(V, C, group_size=spec.group_size)
    if tied_head is not None and tied_head.layout in ("portable", "cpu"):
        return emb.share(tied_head)
    if tied_head is not None:  # the head sits in a matmul-only layout: a portable copy for the lookups
        packed, scales, zeros = tied_head.portable()
    elif saved:
        packed, scales, zeros = get("weight"), get("scales"), get("zeros")
    else:
        packed, scales, zeros = quantize_int4(get("weight"), spec.group_size)
    return emb.set_quantized(packed, scales, zeros, None, dtype)
