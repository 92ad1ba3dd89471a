"""Portable weight-only quantization in plain PyTorch: per-channel int8 and group-wise int4.

Both run on every device. Where PyTorch ships a fused kernel it is used (CPU: `_weight_int8pack_mm`,
`_weight_int4pack_mm_for_cpu`; CUDA: `_weight_int4pack_mm`); elsewhere, or for shapes and dtypes a kernel does
not take, a layer dequantizes its weight and runs a plain matmul. Each kernel passes a small numerical self-test
against that plain path the first time it is used on a device, and is skipped (with one warning) if it fails.

Formats (what `state_dict()` returns and what a quantized `lit_model.pth` holds):

* int8, per output channel, symmetric: `weight` int8 (N, K) and `scales` (N,), with W ~= weight * scales[:, None].
* int4, group-wise over the input features, asymmetric: `weight` uint8 (N, Kp / 2) holding two 4-bit codes per
  byte (the even column in the high nibble), `scales` and `zeros` (N, Kp / G), with
  W[n, k] ~= (code[n, k] - 8) * scales[n, k // G] + zeros[n, k // G]. Kp is K rounded up to the group size G;
  the padding columns never meet an input (inputs are padded with zeros).

In memory a layer may hold its weight in a device's packed kernel layout (`layout`); `state_dict()` always
returns the portable form above, so a checkpoint saved on one device loads on any other.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

INT4_GROUP_SIZES = (32, 64, 128)
_CHUNK_ELEMENTS = 1 << 20  # quantize at most this many weights at once (bounds the float32 temporaries)
_CPU_INT4_BLOCK = 64  # rows per block of the CPU int4 kernel's packed layout (see `_cpu_int4_unpack`)


# ------------------------------------------------------------------------------------------------------------
# quantizing full-precision weights into the portable formats


def _row_chunks(n_rows: int, n_cols: int) -> range:
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    return range(0, n_rows, step)


@torch.no_grad()
def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantization of a (N, K) weight.

    Args:
        weight: the floating-point weight, on any device.

    Returns:
        `(q, scales)`: q int8 (N, K) in [-127, 127] and scales float32 (N,), with weight ~= q * scales[:, None].
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_int8 expects a 2-D floating-point weight, got {tuple(weight.shape)} {weight.dtype}")
    N, K = weight.shape
    q = torch.empty(N, K, dtype=torch.int8, device=weight.device)
    scales = torch.empty(N, dtype=torch.float32, device=weight.device)
    chunks = _row_chunks(N, K)
    for start in chunks:
        w = weight[start : start + chunks.step].float()
        s = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)  # all-zero rows: codes 0
        q[start : start + w.size(0)] = torch.round(w / s[:, None]).clamp_(-127, 127).to(torch.int8)
        scales[start : start + w.size(0)] = s
    return q, scales


def padded_in_features(in_features: int, group_size: int) -> int:
    """`in_features` rounded up to a multiple of the int4 group size."""
    return -(-in_features // group_size) * group_size


@torch.no_grad()
def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise int4 quantization of a (N, K) weight (groups of `group_size` input features).

    Args:
        weight: the floating-point weight, on any device.
        group_size: 32, 64 or 128. K is padded with zeros up to a multiple of it.

    Returns:
        `(packed, scales, zeros)`: packed uint8 (N, Kp / 2), scales and zeros float32 (N, Kp / G), with
        weight[n, k] ~= (code[n, k] - 8) * scales[n, k // G] + zeros[n, k // G].
    """
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_int4 expects a 2-D floating-point weight, got {tuple(weight.shape)} {weight.dtype}")
    N, K = weight.shape
    Kp = padded_in_features(K, group_size)
    n_groups = Kp // group_size
    packed = torch.empty(N, Kp // 2, dtype=torch.uint8, device=weight.device)
    scales = torch.empty(N, n_groups, dtype=torch.float32, device=weight.device)
    zeros = torch.empty(N, n_groups, dtype=torch.float32, device=weight.device)
    chunks = _row_chunks(N, Kp)
    for start in chunks:
        w = weight[start : start + chunks.step].float()
        rows = w.size(0)
        if Kp != K:
            w = F.pad(w, (0, Kp - K))
        w = w.view(rows, n_groups, group_size)
        lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # (rows, n_groups)
        s = ((hi - lo) / 15.0).clamp(min=torch.finfo(torch.float32).tiny)
        codes = torch.round((w - lo[..., None]) / s[..., None]).clamp_(0, 15).to(torch.uint8).view(rows, Kp)
        packed[start : start + rows] = pack_int4(codes)
        scales[start : start + rows] = s
        zeros[start : start + rows] = lo + 8.0 * s
    return packed, scales, zeros


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes in 0..15 -> (N, K / 2) uint8, the even column in the high nibble."""
    codes = codes.to(torch.uint8)
    return (codes[:, 0::2] << 4) | codes[:, 1::2]


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(N, K / 2) uint8 -> (N, K) uint8 codes in 0..15 (inverse of `pack_int4`)."""
    return torch.stack((packed >> 4, packed & 15), dim=-1).view(packed.size(0), -1)


def dequantize_int4(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Portable int4 (N, Kp / 2) with scales/zeros (N, Kp / G) -> (N, Kp) weight in `dtype`."""
    N = packed.size(0)
    codes = unpack_int4(packed).view(N, -1, group_size).to(dtype)  # (N, Kp / G, G)
    w = (codes - 8) * scales.to(dtype)[..., None] + zeros.to(dtype)[..., None]
    return w.view(N, -1)


# ------------------------------------------------------------------------------------------------------------
# device kernels: availability and one-time self-tests


def _warn_once(message: str) -> None:
    _warn_once_cached(message)


@functools.lru_cache(maxsize=None)
def _warn_once_cached(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


@functools.lru_cache(maxsize=None)
def int8_kernel_ok(device_type: str, dtype: torch.dtype) -> bool:
    """Whether `torch._weight_int8pack_mm` runs correctly for `dtype` inputs on this device type (CPU only)."""
    if device_type != "cpu" or not _has_op("_weight_int8pack_mm"):
        return False
    return _self_test(lambda: _int8_self_test(dtype), f"int8 CPU kernel for {dtype}")


@functools.lru_cache(maxsize=None)
def int4_kernel_ok(device_type: str, dtype: torch.dtype) -> bool:
    """Whether PyTorch's fused int4 kernel runs correctly for `dtype` inputs on this device type."""
    if device_type == "cpu":
        if not (_has_op("_weight_int4pack_mm_for_cpu") and _has_op("_convert_weight_to_int4pack_for_cpu")):
            return False
    elif device_type == "cuda":
        if dtype != torch.bfloat16 or not (_has_op("_weight_int4pack_mm") and _has_op("_convert_weight_to_int4pack")):
            return False
        if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
            return False
    else:
        return False
    test = lambda: _int4_self_test(torch.device(device_type), dtype)  # noqa: E731
    return _self_test(test, f"int4 {device_type} kernel for {dtype}")


def _self_test(test: Callable[[], bool], what: str) -> bool:
    try:
        ok = test()
    except Exception as err:  # an op missing or refusing this build / device: use the plain path
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _warn_once(f"litgpt quantization: the {what} is unavailable ({first}); using dequantize + matmul")
        return False
    if not ok:
        _warn_once(f"litgpt quantization: the {what} failed its self-test; using dequantize + matmul")
    return ok


def _close(y: torch.Tensor, ref: torch.Tensor) -> bool:
    return bool(torch.isfinite(y).all()) and float((y.float() - ref).norm() / ref.norm()) < 2e-2


def _int8_self_test(dtype: torch.dtype) -> bool:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 64, generator=gen)
    x = torch.randn(3, 64, generator=gen).to(dtype)
    q, s = quantize_int8(w)
    y = torch._weight_int8pack_mm(x, q, s.to(dtype))
    return _close(y, x.float() @ (q.float() * s[:, None]).T)


def _int4_self_test(device: torch.device, dtype: torch.dtype) -> bool:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(128, 128, generator=gen)
    x = torch.randn(3, 128, generator=gen).to(dtype)
    packed, scales, zeros = quantize_int4(w, 32)
    ref = x.float() @ dequantize_int4(packed, scales, zeros, 32, torch.float32).T
    weight, sz, _ = _int4_to_kernel_layout(packed.to(device), scales.to(device), zeros.to(device), dtype, device)
    y = _int4_kernel_mm(x.to(device), weight, 32, sz, device.type)
    if not _close(y.cpu(), ref):
        return False
    if device.type == "cpu":  # the layout this module reads back must be the kernel's
        back = _cpu_int4_unpack(weight, 128)
        return torch.equal(back, packed)
    return True


# ------------------------------------------------------------------------------------------------------------
# int4 kernel layouts


def _int4_to_kernel_layout(
    packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Portable int4 -> (kernel weight, scales_and_zeros (Kp / G, Np, 2), Np). Rows are padded to the kernel's
    multiple with zero codes (their outputs are sliced off)."""
    N = packed.size(0)
    multiple = _CPU_INT4_BLOCK if device.type == "cpu" else 8
    Np = -(-N // multiple) * multiple
    if Np != N:
        packed = F.pad(packed, (0, 0, 0, Np - N))
        scales = F.pad(scales, (0, 0, 0, Np - N))
        zeros = F.pad(zeros, (0, 0, 0, Np - N))
    sz = torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous().to(dtype)  # (Kp / G, Np, 2)
    if device.type == "cpu":  # blocks of 64 rows are packed independently: a few at a time bounds the int32 copy
        step = _CPU_INT4_BLOCK * 64
        weight = torch.cat([
            torch._convert_weight_to_int4pack_for_cpu(unpack_int4(packed[i : i + step]).to(torch.int32), 2)
            for i in range(0, Np, step)
        ])
    else:
        Kp = packed.size(1) * 2
        inner_k_tiles = next(t for t in (8, 4, 2) if Kp % (t * 16) == 0)
        weight = torch._convert_weight_to_int4pack(packed.contiguous(), inner_k_tiles)
    return weight, sz, Np


def _int4_kernel_mm(
    x: torch.Tensor, weight: torch.Tensor, group_size: int, sz: torch.Tensor, device_type: str
) -> torch.Tensor:
    if device_type == "cpu":
        return torch._weight_int4pack_mm_for_cpu(x, weight, group_size, sz)
    return torch._weight_int4pack_mm(x, weight, group_size, sz)


def _cpu_int4_unpack(weight: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The CPU kernel's packed weight (Np, Kp / 2) -> portable packed (n_rows, Kp / 2).

    The CPU layout stores blocks of 64 rows as (Kp, 32) bytes: byte [k, j] holds row j in its low nibble and row
    32 + j in its high nibble (checked against the kernel's own packing by the self-test).
    """
    Np, half_k = weight.shape
    v = weight.view(Np // _CPU_INT4_BLOCK, 2 * half_k, _CPU_INT4_BLOCK // 2)  # (blocks, Kp, 32)
    codes = torch.cat((v & 15, v >> 4), dim=2)  # (blocks, Kp, 64)
    codes = codes.transpose(1, 2).reshape(Np, 2 * half_k)[:n_rows]
    return pack_int4(codes)


def _cpu_int4_rows(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Codes (M, Kp) of rows `ids` (M,) read straight from the CPU kernel's packed layout."""
    Np, half_k = weight.shape
    v = weight.view(Np // _CPU_INT4_BLOCK, 2 * half_k, _CPU_INT4_BLOCK // 2)
    r = ids % _CPU_INT4_BLOCK
    bytes_ = v[ids // _CPU_INT4_BLOCK, :, r % (_CPU_INT4_BLOCK // 2)]  # (M, Kp)
    return torch.where((r >= _CPU_INT4_BLOCK // 2)[:, None], bytes_ >> 4, bytes_ & 15)


# ------------------------------------------------------------------------------------------------------------
# modules


def _probe_device(fn: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> torch.device:
    """The device a `Module._apply` function sends tensors to (it may only change the dtype)."""
    return fn(torch.empty(0, device=like.device, dtype=torch.float32)).device


class Int8Linear(nn.Module):
    """A linear layer with an int8 weight (one scale per output channel); computes in the scales' dtype.

    Buffers: `weight` int8 (out, in), `scales` (out,), optional parameter `bias`.
    """

    native_decode = True  # the native CPU decode step reads the int8 rows (litgpt.generate.cpu)

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device="meta"))
        self.register_buffer("scales", torch.empty(out_features, device="meta"))
        self.bias = nn.Parameter(torch.empty(out_features, device="meta"), requires_grad=False) if bias else None
        self.use_kernel = False
        self.kernel_wanted = True

    def set_quantized(
        self,
        weight: torch.Tensor,
        scales: torch.Tensor,
        bias: Optional[torch.Tensor],
        dtype: torch.dtype,
        use_kernel: Optional[bool] = None,
    ) -> "Int8Linear":
        """Installs int8 `weight` (out, in) and `scales` (out,) (and `bias`) on their device, computing in `dtype`.

        Args:
            weight, scales, bias: the quantized tensors (see `quantize_int8`), already on the target device.
            dtype: the compute dtype (scales and bias are cast to it).
            use_kernel: False forces the dequantize + matmul path; None uses a fused kernel where it runs.
        """
        if tuple(weight.shape) != (self.out_features, self.in_features) or weight.dtype != torch.int8:
            raise ValueError(
                f"int8 weight must be int8 of shape {(self.out_features, self.in_features)}, got "
                f"{weight.dtype} {tuple(weight.shape)}"
            )
        if tuple(scales.shape) != (self.out_features,):
            raise ValueError(f"int8 scales must have shape ({self.out_features},), got {tuple(scales.shape)}")
        self.weight = weight.contiguous()
        self.scales = scales.to(dtype).contiguous()
        if bias is not None:
            self.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        self.kernel_wanted = use_kernel is not False
        self._choose_path()
        return self

    def _choose_path(self) -> None:
        # the CPU kernel reads K in steps of 16 for half-precision inputs (other K give wrong results)
        fits = self.in_features % 16 == 0
        self.use_kernel = (
            self.kernel_wanted and fits and int8_kernel_ok(self.weight.device.type, self.scales.dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernel and x.dtype == self.scales.dtype:
            y = torch._weight_int8pack_mm(x.reshape(-1, x.size(-1)).contiguous(), self.weight, self.scales)
            y = y.view(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows `ids` (any shape) -> (*ids.shape, in_features), for embedding lookups."""
        return self.weight[ids].to(self.scales.dtype) * self.scales[ids].unsqueeze(-1)

    def _apply(self, fn: Callable, recurse: bool = True) -> "Int8Linear":
        out = super()._apply(fn, recurse)
        if self.weight.device.type != "meta":
            self._choose_path()
        return out

    def extra_repr(self) -> str:
        kernel = "fused kernel" if self.use_kernel else "dequantize + matmul"
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}, {kernel}"


class Int8Embedding(Int8Linear):
    """An embedding table stored like `Int8Linear` (one scale per row); `forward(ids)` returns rows."""

    native_decode = True  # declared per class (never inherited): the native step looks rows up itself

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(embedding_dim, num_embeddings, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.rows(ids)

    def extra_repr(self) -> str:
        return f"{self.out_features}, {self.in_features}, int8 rows"


class Int4Linear(nn.Module):
    """A linear layer with a group-wise int4 weight; computes in the scales' dtype.

    `state_dict()` holds the portable form (`weight` uint8 (out, Kp / 2), `scales`, `zeros` (out, Kp / G), optional
    `bias`); in memory the weight may sit in a device kernel's packed layout (`layout` is "portable", "cpu" or
    "cuda"), with `scales_and_zeros` (Kp / G, Np, 2) next to it.
    """

    native_decode = True  # the native CPU decode step reads the "cpu" layout (litgpt.generate.cpu)

    def __init__(self, in_features: int, out_features: int, bias: bool = False, group_size: int = 64) -> None:
        super().__init__()
        if group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.padded_in = padded_in_features(in_features, group_size)
        self.padded_out = out_features
        self.layout = "portable"
        self.kernel_wanted = True
        self.register_buffer("weight", torch.empty(out_features, self.padded_in // 2, dtype=torch.uint8, device="meta"))
        self.register_buffer(
            "scales_and_zeros", torch.empty(self.padded_in // group_size, out_features, 2, device="meta")
        )
        self.bias = nn.Parameter(torch.empty(out_features, device="meta"), requires_grad=False) if bias else None

    # -- installing and reading back the quantized weight
    def set_quantized(
        self,
        weight: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        bias: Optional[torch.Tensor],
        dtype: torch.dtype,
        use_kernel: Optional[bool] = None,
    ) -> "Int4Linear":
        """Installs the portable int4 tensors (see `quantize_int4`), already on the target device.

        Args:
            weight: packed codes, uint8 (out, Kp / 2).
            scales, zeros: (out, Kp / G).
            bias: optional (out,).
            dtype: the compute dtype.
            use_kernel: False keeps the portable layout (dequantize + matmul); None packs the weight for the
                device's fused kernel where one runs.
        """
        expected = (self.out_features, self.padded_in // 2)
        groups = (self.out_features, self.padded_in // self.group_size)
        if tuple(weight.shape) != expected or weight.dtype != torch.uint8:
            raise ValueError(f"int4 weight must be uint8 of shape {expected}, got {weight.dtype} {tuple(weight.shape)}")
        if tuple(scales.shape) != groups or tuple(zeros.shape) != groups:
            raise ValueError(
                f"int4 scales/zeros must have shape {groups} (group size {self.group_size}), got "
                f"{tuple(scales.shape)} / {tuple(zeros.shape)}"
            )
        device = weight.device
        self.kernel_wanted = use_kernel is not False
        if self.kernel_wanted and self._kernel_allowed() and int4_kernel_ok(device.type, dtype):
            packed = _int4_to_kernel_layout(weight, scales, zeros, dtype, device)
            self.weight, self.scales_and_zeros, self.padded_out = packed
            self.layout = device.type
        else:
            self.weight = weight.contiguous()
            self.scales_and_zeros = torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous().to(dtype)
            self.padded_out, self.layout = self.out_features, "portable"
        if bias is not None:
            self.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        return self

    def _kernel_allowed(self) -> bool:
        return True

    def portable(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The portable `(weight, scales, zeros)` of this layer, on its device (scales in the compute dtype)."""
        N = self.out_features
        scales = self.scales_and_zeros[:, :N, 0].T.contiguous()
        zeros = self.scales_and_zeros[:, :N, 1].T.contiguous()
        if self.layout == "portable":
            weight = self.weight
        elif self.layout == "cpu":
            weight = _cpu_int4_unpack(self.weight, N)
        else:  # read the CUDA tiles back through the kernel: an identity input with scale 1 and zero 8 gives the codes
            unit = torch.empty_like(self.scales_and_zeros, dtype=torch.bfloat16)
            unit[..., 0], unit[..., 1] = 1.0, 8.0
            eye = torch.eye(self.padded_in, dtype=torch.bfloat16, device=self.weight.device)
            codes = torch.cat([  # (Kp, Np), 2048 rows of the identity at a time
                _int4_kernel_mm(eye[k : k + 2048], self.weight, self.group_size, unit, "cuda")
                for k in range(0, self.padded_in, 2048)
            ])
            weight = pack_int4(codes.T[:N].round().to(torch.uint8))
        return weight, scales, zeros

    # -- computing
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout != "portable" and x.dtype == self.scales_and_zeros.dtype:
            x2 = x.reshape(-1, x.size(-1))
            if self.padded_in != self.in_features:
                x2 = F.pad(x2, (0, self.padded_in - self.in_features))
            y = _int4_kernel_mm(x2.contiguous(), self.weight, self.group_size, self.scales_and_zeros, self.layout)
            if self.padded_out != self.out_features:
                y = y[:, : self.out_features]
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.dequantized(x.dtype))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def dequantized(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The full weight (out, in) in `dtype` (default: the compute dtype)."""
        dtype = dtype or self.scales_and_zeros.dtype
        weight, scales, zeros = self.portable() if self.layout != "portable" else (
            self.weight, self.scales_and_zeros[..., 0].T, self.scales_and_zeros[..., 1].T
        )
        return dequantize_int4(weight, scales, zeros, self.group_size, dtype)[:, : self.in_features]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows `ids` (any shape) -> (*ids.shape, in_features), for embedding lookups."""
        flat = ids.reshape(-1)
        if self.layout == "portable":
            codes = unpack_int4(self.weight[flat])
        elif self.layout == "cpu":
            codes = _cpu_int4_rows(self.weight, flat)
        else:
            raise RuntimeError("rows() needs the portable or CPU layout; the CUDA layout is matmul-only")
        sz = self.scales_and_zeros[:, flat]  # (Kp / G, M, 2)
        dtype = sz.dtype
        codes = codes.view(flat.numel(), -1, self.group_size).to(dtype)  # (M, Kp / G, G)
        w = (codes - 8) * sz[..., 0].T[..., None] + sz[..., 1].T[..., None]
        return w.view(flat.numel(), -1)[:, : self.in_features].view(*ids.shape, self.in_features)

    # -- state dict in the portable form, whatever the in-memory layout
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        weight, scales, zeros = self.portable()
        destination[prefix + "weight"] = weight
        destination[prefix + "scales"] = scales
        destination[prefix + "zeros"] = zeros
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, local_metadata: Any, strict: bool, missing_keys: list,
        unexpected_keys: list, error_msgs: list,
    ) -> None:
        names = ["weight", "scales", "zeros"] + (["bias"] if self.bias is not None else [])
        missing = [prefix + n for n in names if prefix + n not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        on_meta = self.weight.device.type == "meta"
        device = torch.device("cpu") if on_meta else self.weight.device
        dtype = state_dict[prefix + "scales"].dtype if on_meta else self.scales_and_zeros.dtype
        get = lambda n: state_dict[prefix + n].to(device)  # noqa: E731
        self.set_quantized(
            get("weight"), get("scales"), get("zeros"), get("bias") if self.bias is not None else None, dtype,
            use_kernel=None if self.kernel_wanted else False,
        )

    def _apply(self, fn: Callable, recurse: bool = True) -> "Int4Linear":
        if self.weight.device.type == "meta":
            return super()._apply(fn, recurse)
        target = _probe_device(fn, self.weight)
        dtype = fn(self.scales_and_zeros).dtype
        same_layout = self.layout == "portable" or int4_kernel_ok(self.layout, dtype)
        if target == self.weight.device and same_layout:  # a dtype change: cast scales and bias, keep the weight
            self.scales_and_zeros = fn(self.scales_and_zeros)
            if self.bias is not None:
                self.bias = nn.Parameter(fn(self.bias.detach()), requires_grad=False)
            return self
        weight, scales, zeros = self.portable()  # another device (or dtype its kernel lacks): repack
        bias = None if self.bias is None else fn(self.bias.detach())
        self.set_quantized(
            weight.to(target), scales.to(target), zeros.to(target), bias, dtype,
            use_kernel=None if self.kernel_wanted else False,
        )
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"group_size={self.group_size}, layout={self.layout}"
        )


class Int4Embedding(Int4Linear):
    """An embedding table stored like `Int4Linear`; `forward(ids)` returns dequantized rows.

    On its own it keeps the portable layout (rows are gathered, never multiplied). Tied to an `Int4Linear`
    head it shares that layer's tensors, which must then be in a layout `rows()` reads (portable or CPU).
    """

    native_decode = True  # declared per class (never inherited): the native step looks rows up in either layout

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int = 64) -> None:
        super().__init__(embedding_dim, num_embeddings, bias=False, group_size=group_size)

    def _kernel_allowed(self) -> bool:
        return False

    def share(self, head: Int4Linear) -> "Int4Embedding":
        """Uses the tensors of the tied output layer `head` (same shape and group size) without a copy."""
        self.weight, self.scales_and_zeros = head.weight, head.scales_and_zeros
        self.layout, self.padded_out = head.layout, head.padded_out
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.rows(ids)

    def extra_repr(self) -> str:
        return f"{self.out_features}, {self.in_features}, int4 rows, group_size={self.group_size}, layout={self.layout}"


def quantized_nbytes(module: nn.Module) -> int:
    """Bytes of the module's parameters and persistent buffers (tensors sharing storage counted once)."""
    sizes: dict[int, int] = {}
    for m in module.modules():
        tensors = list(m._parameters.values()) + [
            b for name, b in m._buffers.items() if name not in m._non_persistent_buffers_set
        ]
        for t in tensors:
            if t is not None and t.device.type != "meta":
                storage = t.untyped_storage()
                sizes[storage.data_ptr()] = storage.nbytes()
    return sum(sizes.values())
