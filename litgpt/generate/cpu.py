"""Faster decoding on the CPU.

Two layers, both used automatically on the CPU:

* `native_decode_step(model)`: one decode step of a bfloat16 model, its linear layers in bfloat16 or quantized
  (`Int8Linear`, `Int4Linear` of `litgpt.quantization.portable`, weight-only: the codes are widened to bfloat16
  in registers), through the C kernels of `cpu_kernels.c`
  (AVX512-BF16 matrix-vector products that stream the weights near the memory bandwidth, norms / RoPE /
  KV-cache write / attention / activations fused into one call each, the residual stream in float32).
  `generate_stream` takes it for every decode step it can run; the kernels are compiled with the system C
  compiler on first use (about a second) and cached under `~/.cache/litgpt/cpu_kernels`.
* `MatVecLinear`: for everything else on the CPU (float32 models, CPUs without AVX512-BF16, no compiler),
  batch-1 linear layers use `torch.mv`, which streams the weights faster than `F.linear`'s matrix-matrix
  path (measured on a 2-core AVX512-BF16 machine: 9.3 -> 14.3 GB/s for SmolLM2-135M's bfloat16 layers).

Which models the native step runs is declared by the module classes: a module whose own class body says
`native_decode = True` (or one of torch's plain layers and containers) is one the kernels compute; any other
module (a LoRA branch, an adapter prefix, bitsandbytes weights, a subclass that did not declare it again) keeps
the whole model on the PyTorch modules (`runs_natively`, `native_decode_problem`).

`LITGPT_CPU_KERNELS=0` turns the native step off (e.g. to compare).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.model import GPT, GemmaMLP, LLaMAMLP, RMSNorm
from litgpt.quantization.portable import Int4Embedding, Int4Linear, Int8Embedding, Int8Linear


class MatVecLinear(nn.Linear):
    """`nn.Linear` computing a single input vector with `torch.mv` (same parameters, same state_dict)."""

    native_decode = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() != self.in_features or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        y = torch.mv(self.weight, x.reshape(-1))
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def use_matvec_linears(model: nn.Module) -> int:
    """Swaps the class of every plain `nn.Linear` of `model` to `MatVecLinear`; returns how many were swapped.

    Quantized or PEFT layers (other classes) are left alone. `restore_linears` undoes it.
    """
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = MatVecLinear
            swapped += 1
    return swapped


def restore_linears(model: nn.Module) -> None:
    """Gives every `MatVecLinear` of `model` its `nn.Linear` class back (before training it, for example)."""
    for module in model.modules():
        if type(module) is MatVecLinear:
            module.__class__ = nn.Linear


# ------------------------------------------------------------------------------------------------------------
# weights in huge pages

_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


def pack_weights_in_huge_pages(model: nn.Module, dtype: Optional[torch.dtype] = None,
                               release: Optional[Callable[[torch.Tensor], None]] = None) -> bool:
    """Moves the parameters of a CPU model into one buffer backed by 2 MiB pages (Linux transparent huge
    pages, asked for with madvise), in place: same Parameter objects, same values, new storage.

    The weights of quantized layers (buffers: codes, scales) move too. Decoding streams every weight once per token; with 4 KiB pages the CPU's prefetchers stop at each page
    boundary and the TLB misses on every page. Measured on a 2-core AVX512-BF16 machine: SmolLM2-135M's
    decode matrices stream at ~21.5 GB/s instead of ~15.5. Peak memory grows by at most one tensor (each
    one is copied and its old storage released in turn). Returns False, changing nothing, where madvise is
    unavailable (non-Linux) or refused.

    With `dtype`, floating-point parameters are converted while they are copied (one copy of the weights in all:
    a float32 checkpoint becomes packed bfloat16 without a bfloat16 copy in between), and `release(tensor)` is
    called on each source tensor once copied (e.g. to drop its pages of a memory-mapped checkpoint).
    """
    params = [p for p in model.parameters() if p.device.type == "cpu"]
    params += [b for m in model.modules() if isinstance(m, _QUANTIZED) for b in m.buffers(recurse=False)]
    if not params or sys.platform != "linux":
        return False
    unique = list({id(p): p for p in params}.values())
    targets = [dtype if dtype is not None and p.is_floating_point() else p.dtype for p in unique]
    sizes = [-(-p.numel() * torch.empty((), dtype=t).element_size() // 64) * 64 for p, t in zip(unique, targets)]
    total = -(-sum(sizes) // _HUGE_PAGE) * _HUGE_PAGE
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        raw = torch.empty(total + _HUGE_PAGE, dtype=torch.uint8)  # untouched: no memory used yet
        arena = raw[(-raw.data_ptr()) % _HUGE_PAGE :][:total]
        if libc.madvise(arena.data_ptr(), total, _MADV_HUGEPAGE) != 0:
            return False
    except (OSError, AttributeError):
        return False
    from litgpt.utils import return_freed_memory

    offset = freed = 0
    with torch.no_grad():
        for p, size, target in zip(unique, sizes, targets):
            nbytes = p.numel() * torch.empty((), dtype=target).element_size()
            view = arena[offset : offset + nbytes].view(target).view(p.shape)
            view.copy_(p)
            if release is not None:
                release(p.data)
            freed += p.numel() * p.element_size()
            p.data = view
            offset += size
            if freed > _TRIM_EVERY:  # heap-allocated sources: give their memory back as we go, not at the end
                return_freed_memory()
                freed = 0
    return_freed_memory()
    return True


_TRIM_EVERY = 32 << 20
"""Bytes of copied source tensors after which `pack_weights_in_huge_pages` hands freed heap memory back to the OS."""


# ------------------------------------------------------------------------------------------------------------
# building and loading the native kernels

_KERNEL_SOURCE = Path(__file__).with_name("cpu_kernels.c")
_KERNEL_FLAGS = [
    "-O3", "-shared", "-fPIC", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma", "-mamx-tile", "-mamx-bf16",
]
_CPU_FEATURES = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16")
_kernels: Optional[ctypes.CDLL] = None
_kernels_problem: Optional[str] = None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: `litgpt_cache_dir()/cpu_kernels`, default `~/.cache/litgpt/cpu_kernels`."""
    from litgpt.utils import litgpt_cache_dir

    return litgpt_cache_dir() / "cpu_kernels"


def _compile(compiler: str, out: Path) -> None:
    """Compiles the kernels into `out` through a temporary file in the same folder, renamed when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, *_KERNEL_FLAGS, str(_KERNEL_SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(f"compiling {_KERNEL_SOURCE.name} failed: {lines[-1] if lines else result.returncode}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_kernels() -> Optional[ctypes.CDLL]:
    """The native decode kernels, compiled on first use and cached (see `kernel_cache_dir`).

    Returns None, with the reason in `kernels_problem()`, when `LITGPT_CPU_KERNELS=0`, the CPU lacks
    AVX512-BF16, or no C compiler is found (`$CC`, else `cc` / `gcc` on the PATH).
    """
    global _kernels, _kernels_problem
    if _kernels is not None or _kernels_problem is not None:
        return _kernels
    try:
        if os.environ.get("LITGPT_CPU_KERNELS", "1") == "0":
            raise RuntimeError("turned off by LITGPT_CPU_KERNELS=0")
        missing = [f for f in _CPU_FEATURES if f not in _cpu_flags()]
        if missing:
            raise RuntimeError(f"this CPU lacks {', '.join(missing)}")
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not compiler:
            raise RuntimeError("no C compiler found (set CC)")
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
        key = hashlib.sha256("\0".join([_KERNEL_SOURCE.read_text(), *_KERNEL_FLAGS, version]).encode()).hexdigest()
        path = kernel_cache_dir() / f"litgpt_cpu_{key[:16]}.so"
        if not path.exists():
            _compile(compiler, path)
        lib = ctypes.CDLL(str(path))
        P, I64, I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.lg_linear.argtypes = [P, I64, I64, P, I64, I64, P, P, I64, I, P]
        lib.lg_linear.restype = None
        lib.lg_qlinear.argtypes = [P, I64, I64, ctypes.POINTER(_Linear), P, I64, I, P]
        lib.lg_qlinear.restype = None
        lib.lg_decode.argtypes = [ctypes.POINTER(_Step)]
        lib.lg_decode.restype = None
        for name, struct in (("lg_step_size", _Step), ("lg_layer_size", _Layer)):
            getattr(lib, name).restype = I64
            if getattr(lib, name)() != ctypes.sizeof(struct):
                raise RuntimeError(f"{_KERNEL_SOURCE.name} and {__name__} disagree on the layout of {struct.__name__}")
        if {"amx_bf16", "amx_tile"} <= _cpu_flags() and os.environ.get("LITGPT_CPU_AMX", "1") != "0":
            lib.lg_amx_init()  # batched steps use the tile unit (else AVX512-BF16 only)
        _kernels = lib
    except (OSError, RuntimeError) as e:
        _kernels_problem = str(e)
    return _kernels


def kernels_problem() -> Optional[str]:
    """Why `load_kernels()` returned None; None when the kernels loaded (or were not tried yet)."""
    return _kernels_problem


# ------------------------------------------------------------------------------------------------------------
# the native decode step: mirrors of the structs in cpu_kernels.c

_P, _I64, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


class _Linear(ctypes.Structure):
    _fields_ = [
        ("w", _P), ("bias", _P), ("n", _I64), ("k", _I64), ("kind", _I64), ("scales", _P), ("group", _I64),
        ("kp", _I64), ("np", _I64),
    ]


_W_BF16, _W_INT8, _W_INT4, _W_INT4_ROWS = 0, 1, 2, 3  # the weight formats of cpu_kernels.c
_QUANTIZED = (Int8Linear, Int4Linear)


class _Norm(ctypes.Structure):
    _fields_ = [("kind", _I64), ("unit_offset", _I64), ("weight", _P), ("bias", _P), ("eps", _F32)]


class _Attention(ctypes.Structure):
    _fields_ = [
        ("n_head", _I64), ("n_groups", _I64), ("head_size", _I64), ("n_rope", _I64), ("slots", _I64),
        ("cos", _P), ("sin", _P), ("k_cache", _P), ("v_cache", _P), ("window", _I64), ("scale", _F32),
        ("softcap", _F32),
    ]


class _Layer(ctypes.Structure):
    _fields_ = [
        ("norm_1", _Norm), ("norm_2", _Norm), ("post_attention", _Norm), ("post_mlp", _Norm),
        ("has_post_attention", _I64), ("has_post_mlp", _I64), ("parallel_residual", _I64), ("shared_norm", _I64),
        ("qkv", _Linear), ("proj", _Linear), ("fc_1", _Linear), ("fc_2", _Linear), ("mlp_proj", _Linear),
        ("mlp_kind", _I64), ("act", _I64), ("attn", _Attention),
    ]


class _Step(ctypes.Structure):
    _fields_ = [
        ("B", _I64), ("n_layer", _I64), ("n_embd", _I64), ("intermediate", _I64),
        ("ids", _P), ("pos", _P), ("crow", _P), ("out_rows", _P), ("n_out", _I64), ("wte", _Linear), ("wpe", _P), ("embed_scale", _F32), ("layers", ctypes.POINTER(_Layer)),
        ("ln_f", _Norm), ("head", _Linear), ("logits", _P),
        ("x", _P), ("tmp", _P), ("qkv", _P), ("a", _P), ("scratch", _P),
        ("h", _P), ("h2", _P), ("att", _P), ("m", _P), ("pack", _P), ("max_threads", _I64),
    ]


_ACTIVATION = {("silu", "none"): 0, ("gelu", "none"): 1, ("gelu", "tanh"): 2}


# torch's own classes the native step reads in place (containers, plain layers); litgpt's classes declare it
_TORCH_CLASSES = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Identity, nn.ModuleList, nn.ModuleDict)


def runs_natively(module: nn.Module) -> bool:
    """Whether the native decode step understands `module`: its class is one of torch's plain layers and
    containers above, or declares `native_decode = True` in its own body.

    The declaration is read from the exact class only, never inherited: a subclass that adds behaviour (an
    adapter prefix, a LoRA branch, quantized weights, a class made by `extend_module`) keeps the model on the
    PyTorch modules until it declares that the native step computes it too.
    """
    cls = type(module)
    return cls in _TORCH_CLASSES or vars(cls).get("native_decode") is True


def native_decode_problem(model: GPT) -> Optional[str]:
    """Why `native_decode_step` cannot run `model` as it is now (None when it can)."""
    cfg = model.config
    if model.lm_head.weight.device.type != "cpu":
        return "the model is not on the CPU"
    kv = model.transformer.h[0].attn.kv_cache
    if kv is None or kv.k.dtype != torch.bfloat16:
        return "the model has no bfloat16 KV cache"
    if _compute_dtype(model.transformer.wte) != torch.bfloat16:
        return "the native decode step runs bfloat16 models only (weights, or the scales of quantized ones)"
    if cfg.norm_qk:
        return "qk-norms run through the PyTorch modules"
    if cfg.head_size > 512 or cfg.rope_n_elem % 2 or cfg.gelu_approximate not in ("none", "tanh"):
        return "head size, rotary features or GELU variant outside the native kernels' range"
    for name, m in model.named_modules():
        if not runs_natively(m):
            return f"{type(m).__name__} ({name or 'the model'}) runs through the PyTorch modules"
        if isinstance(m, nn.Linear) and (m.weight.dtype != torch.bfloat16 or not m.weight.is_contiguous()):
            return f"{name} holds {m.weight.dtype} weights; the native decode step runs contiguous bfloat16 ones"
        problem = _quantized_problem(m) if isinstance(m, _QUANTIZED) else None
        if problem is not None:
            return f"{name}: {problem}"
    if load_kernels() is None:
        return f"native CPU kernels unavailable: {kernels_problem()}"
    return None


def _compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a layer computes in: its weight's, or its scales' for a quantized one."""
    if isinstance(module, Int8Linear):
        return module.scales.dtype
    if isinstance(module, Int4Linear):
        return module.scales_and_zeros.dtype
    return module.weight.dtype


def _quantized_problem(module: nn.Module) -> Optional[str]:
    """Why the kernels cannot read a quantized layer as it is in memory (None when they can)."""
    if _compute_dtype(module) != torch.bfloat16:
        return f"{type(module).__name__} computes in {_compute_dtype(module)}; the native decode step runs bfloat16"
    if isinstance(module, Int4Linear):
        embedding = type(module) is Int4Embedding
        if module.layout != "cpu" and not (embedding and module.layout == "portable"):
            return f"int4 weights in the {module.layout} layout (the native step reads PyTorch's CPU packing)"
    tensors = [module.weight] + [module.scales if isinstance(module, Int8Linear) else module.scales_and_zeros]
    if not all(t.is_contiguous() for t in tensors):
        return "quantized tensors are not contiguous"
    return None


class NativeDecoder:
    """Decode steps of one model with one KV cache through the native kernels (`lg_decode`).

    Holds the work buffers for the cache's batch size, float32 copies of the small vectors (norm weights,
    biases) and the structs describing every layer; the weights and the KV cache are used in place. It holds
    no reference to the model (each call gets it); `native_decode_step` builds a new one when the weights or
    the KV cache were replaced.
    """

    prefill_rows = 256  # prompt tokens per pass of a prefill

    def __init__(self, model: GPT, lib: ctypes.CDLL) -> None:
        cfg = model.config
        self.lib = lib
        self._keep: list[torch.Tensor] = []  # everything the structs point to
        kv = model.transformer.h[0].attn.kv_cache
        self.batch, ng, self.slots, hs = kv.k.shape
        nh, C, Bc = cfg.n_head, cfg.n_embd, self.batch
        mlp0 = model.transformer.h[0].mlp
        gated = isinstance(mlp0, LLaMAMLP)
        inter = (mlp0.fc_1 if gated else mlp0.fc).out_features
        step = _Step(n_layer=cfg.n_layer, n_embd=C, intermediate=inter)
        step.max_threads = max(torch.get_num_threads(), os.cpu_count() or 1)
        step.scratch = self._hold(torch.zeros(step.max_threads * self.slots))  # attention scores, per thread
        self._widths = dict(
            x=(C, torch.float32), tmp=(C, torch.float32), qkv=((nh + 2 * ng) * hs, torch.float32),
            a=((2 if gated else 1) * inter, torch.float32), h=(C, torch.bfloat16), h2=(C, torch.bfloat16),
            att=(nh * hs, torch.bfloat16), m=(inter, torch.bfloat16),
        )
        self._widest = max(m.in_features for m in model.modules() if isinstance(m, (nn.Linear, *_QUANTIZED)))
        self._rows = 0
        self._buffers: dict[str, torch.Tensor] = {}
        self.step = step
        self._ensure_rows(Bc)
        tr = model.transformer
        step.wte = self._linear(tr.wte)
        step.wpe = tr["wpe"].weight.data_ptr() if cfg.learned_pos_embedding else None
        # the eager model multiplies by sqrt(n_embd) rounded to the weights' dtype
        step.embed_scale = float(torch.tensor(C**0.5, dtype=torch.bfloat16)) if cfg.scale_embeddings else 1.0
        self.layers = (_Layer * cfg.n_layer)(*(self._layer(model, block) for block in tr.h))
        step.layers = self.layers
        step.ln_f = self._norm(tr.ln_f)
        step.head = self._linear(model.lm_head)
        self.fingerprint = _fingerprint(model)

    def _ensure_rows(self, rows: int) -> None:
        """Work buffers for `rows` token rows (a prefill has one per prompt token); they only grow."""
        if rows <= self._rows:
            return
        self._rows = rows
        for name, (width, dtype) in self._widths.items():
            self._buffers[name] = torch.zeros(rows, width, dtype=dtype)
        self._buffers["pack"] = torch.zeros(-(-rows // 16) * 16 * self._widest, dtype=torch.bfloat16)  # AMX rows
        for name in ("ids", "pos", "crow", "out_rows"):
            self._buffers[name] = torch.zeros(rows, dtype=torch.long)
        for name, t in self._buffers.items():
            setattr(self.step, name, t.data_ptr())

    def _run(self, ids: torch.Tensor, pos: torch.Tensor, crow: torch.Tensor, out_rows: torch.Tensor) -> torch.Tensor:
        """Runs the token rows through the model (keys and values into the caches); logits of `out_rows`."""
        R, n = ids.numel(), out_rows.numel()
        self._ensure_rows(R)
        for name, t in (("ids", ids), ("pos", pos), ("crow", crow), ("out_rows", out_rows)):
            self._buffers[name][: t.numel()].copy_(t.reshape(-1))
        logits = torch.empty(n, self.step.head.n, dtype=torch.float32)  # new each call: callers may keep it
        self.step.B, self.step.n_out, self.step.logits = R, n, logits.data_ptr()
        self.lib.lg_decode(ctypes.byref(self.step))
        return logits

    def _hold(self, t: torch.Tensor) -> int:
        self._keep.append(t)
        return t.data_ptr()

    def _f32(self, t: Optional[torch.Tensor]) -> Optional[int]:
        return None if t is None else self._hold(t.detach().float().contiguous())

    def _norm(self, module: Optional[nn.Module]) -> _Norm:
        if isinstance(module, RMSNorm):
            return _Norm(0, int(module.add_unit_offset), self._f32(module.weight), None, module.eps)
        if isinstance(module, nn.LayerNorm):
            return _Norm(1, 0, self._f32(module.weight), self._f32(module.bias), module.eps)
        return _Norm(2, 0, None, None, 0.0)  # nn.Identity (or absent)

    def _linear(self, module: nn.Module) -> _Linear:
        """The kernels' description of a linear layer (or embedding table) in any format; tensors used in place."""
        bias = self._f32(getattr(module, "bias", None))
        if isinstance(module, Int8Linear):
            n, k = module.out_features, module.in_features
            return _Linear(module.weight.data_ptr(), bias, n, k, _W_INT8, module.scales.data_ptr())
        if isinstance(module, Int4Linear):
            kind = _W_INT4 if module.layout == "cpu" else _W_INT4_ROWS
            return _Linear(
                module.weight.data_ptr(), bias, module.out_features, module.in_features, kind,
                module.scales_and_zeros.data_ptr(), module.group_size, module.padded_in,
                module.scales_and_zeros.size(1),
            )
        n, k = module.weight.shape
        return _Linear(module.weight.data_ptr(), bias, n, k, _W_BF16)

    def _layer(self, model: GPT, block: nn.Module) -> _Layer:
        cfg, attn, mlp = model.config, block.attn, block.mlp
        cos, sin = (model.cos_local, model.sin_local) if attn.uses_local_rope else (model.cos, model.sin)
        kv = attn.kv_cache
        gated = isinstance(mlp, LLaMAMLP)
        if isinstance(mlp, GemmaMLP):
            act = _ACTIVATION[("gelu", mlp.approximate)]
        elif gated:
            act = _ACTIVATION[("silu", "none")]
        else:
            act = _ACTIVATION[("gelu", mlp.approximate)]
        return _Layer(
            norm_1=self._norm(block.norm_1),
            norm_2=self._norm(block.norm_2),
            post_attention=self._norm(block.post_attention_norm),
            post_mlp=self._norm(block.post_mlp_norm),
            has_post_attention=int(not isinstance(block.post_attention_norm, nn.Identity)),
            has_post_mlp=int(not isinstance(block.post_mlp_norm, nn.Identity)),
            parallel_residual=int(block.parallel_residual),
            shared_norm=int(block.norm_2 is None),
            qkv=self._linear(attn.qkv),
            proj=self._linear(attn.proj),
            fc_1=self._linear(mlp.fc_1 if gated else mlp.fc),
            fc_2=self._linear(mlp.fc_2) if gated else _Linear(),
            mlp_proj=self._linear(mlp.proj),
            mlp_kind=int(gated),
            act=act,
            attn=_Attention(
                n_head=cfg.n_head, n_groups=cfg.n_query_groups, head_size=cfg.head_size, n_rope=cfg.rope_n_elem,
                slots=self.slots, cos=self._hold(cos.contiguous()), sin=self._hold(sin.contiguous()),
                k_cache=kv.k.data_ptr(), v_cache=kv.v.data_ptr(), window=attn.sliding_window or 0,
                scale=1.0 / (cfg.attention_scores_scalar or cfg.head_size) ** 0.5,
                softcap=cfg.attention_logit_softcapping or 0.0,
            ),
        )

    def __call__(self, model: GPT, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """The decode step: token (B, 1) at input_pos, (1,) shared or (B, 1) per row -> logits (B, V) float32."""
        B = token.size(0)
        if B > self.batch or int(input_pos.max()) >= self.slots or int(input_pos.min()) < 0:
            raise ValueError(
                f"decode step outside the KV cache: {B} rows (cache: {self.batch}), positions "
                f"{int(input_pos.min())}..{int(input_pos.max())} (cache: {self.slots} slots)"
            )
        if int(token.min()) < 0 or int(token.max()) >= model.transformer.wte.weight.size(0):
            raise ValueError(f"token ids must be in [0, {model.transformer.wte.weight.size(0)})")
        rows = torch.arange(B)
        logits = self._run(token, input_pos.reshape(-1).expand(B), rows, rows)
        return self._softcap(model, logits)

    def prefill(self, model: GPT, prompts: list[torch.Tensor], first_row: int = 0) -> torch.Tensor:
        """Prompt i (1-D ids) into cache row first_row + i, positions 0..len-1, all prompts' tokens as rows of
        one pass (no padding); returns the logits (len(prompts), V) float32 of each prompt's last token."""
        lengths = [int(p.numel()) for p in prompts]
        if first_row < 0 or first_row + len(prompts) > self.batch or max(lengths) > self.slots or min(lengths) < 1:
            raise ValueError(f"prefill outside the KV cache: prompts of {lengths} tokens, cache {self.batch} x {self.slots}")
        ids = torch.cat([p.reshape(-1).long().cpu() for p in prompts])
        vocab = model.transformer.wte.weight.size(0)
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(f"token ids must be in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
        pos = torch.cat([torch.arange(n) for n in lengths])
        crow = torch.repeat_interleave(torch.arange(len(prompts)) + first_row, torch.tensor(lengths))
        last = torch.tensor(lengths).cumsum(0) - 1
        pieces = []
        for start in range(0, ids.numel(), self.prefill_rows):  # chunks bound the work buffers' size
            end = start + self.prefill_rows
            wanted = last[(last >= start) & (last < end)]
            pieces.append(self._run(ids[start:end], pos[start:end], crow[start:end], wanted - start))
        return self._softcap(model, torch.cat(pieces))

    def extend(self, model: GPT, tokens: torch.Tensor, start: int, row: int = 0) -> torch.Tensor:
        """The 1-D `tokens` of the sequence in cache row `row`, at positions start, start + 1, ..., in one pass
        (e.g. a target model checking a draft model's proposals); returns every token's logits (n, V) float32."""
        ids = tokens.reshape(-1).long().cpu()
        n, vocab = int(ids.numel()), model.transformer.wte.weight.size(0)
        if n < 1 or start < 0 or start + n > self.slots or not 0 <= row < self.batch:
            raise ValueError(f"extend outside the KV cache: {n} tokens from position {start} in row {row}, "
                             f"cache {self.batch} x {self.slots}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(f"token ids must be in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
        rows = torch.arange(n)
        return self._softcap(model, self._run(ids, rows + start, torch.full((n,), row), rows))

    @staticmethod
    def _softcap(model: GPT, logits: torch.Tensor) -> torch.Tensor:
        cap = model.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap


def _fingerprint(model: GPT) -> tuple:
    """Identifies the tensors a `NativeDecoder` reads in place: weights and KV caches (by address and shape)."""
    kv = [(b.attn.kv_cache.k.data_ptr(), b.attn.kv_cache.v.data_ptr(), b.attn.kv_cache.k.shape) for b in model.transformer.h]
    weights = [(p.data_ptr(), p.shape, p.dtype) for p in model.parameters()]
    weights += [(b.data_ptr(), b.shape, b.dtype) for m in model.modules() if isinstance(m, _QUANTIZED) for b in m.buffers(False)]
    return tuple(kv), tuple(weights), model.cos.data_ptr(), model.cos_local.data_ptr()


def native_decode_step(model: GPT) -> Optional[Callable[[GPT, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """A decode step of `model` (with its current KV cache) through the native CPU kernels, or None when
    `native_decode_problem(model)` names a reason it cannot run. The decoder is kept on the model and rebuilt
    when its weights or KV cache change."""
    if native_decode_problem(model) is not None:
        return None
    decoder = _decoders.get(model)
    if decoder is None or decoder.fingerprint != _fingerprint(model):
        decoder = _decoders[model] = NativeDecoder(model, load_kernels())
    return decoder


_decoders: "weakref.WeakKeyDictionary[GPT, NativeDecoder]" = weakref.WeakKeyDictionary()
