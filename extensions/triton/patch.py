"""Switching a built `GPT` to the Triton kernels, without touching `litgpt/model.py`.

Modules of exactly the types `RMSNorm`, `LLaMAMLP` and `GemmaMLP` get their class swapped for a subclass
whose only change is `forward` (the kernels). Parameters, buffers, hooks and state_dict keys stay as they
are, `isinstance` checks still hold, and `disable` swaps the classes back. Subclasses made elsewhere
(e.g. a PEFT variant with its own forward) are left alone.

RoPE goes through the attention's `apply_rope` method when `litgpt.model.CausalSelfAttention` has one
(see extensions/README.md); otherwise the eager RoPE stays and `enable` says so once.

The loss: `enable` returns `summed_fused_linear_cross_entropy`, which has the signature of the training
loop's `litgpt.train.loss.fused_linear_cross_entropy`. Outside the loop, `lm_head_loss(model, idx, targets)`
runs the model without its head and applies the fused loss.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from litgpt.model import CausalSelfAttention, GemmaMLP, LLaMAMLP, RMSNorm
from extensions.triton._runtime import require_gpu
from extensions.triton.loss import cross_entropy, fused_linear_cross_entropy
from extensions.triton.glu import geglu, swiglu
from extensions.triton.norm import rms_norm
from extensions.triton.rope import apply_rope_partial


class TritonRMSNorm(RMSNorm):
    """`RMSNorm` computed by the Triton kernels (same parameters and state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, self.add_unit_offset)


class TritonLLaMAMLP(LLaMAMLP):
    """`LLaMAMLP` whose `silu(fc_1(x)) * fc_2(x)` is one fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(swiglu(self.fc_1(x), self.fc_2(x)))


class TritonGemmaMLP(GemmaMLP):
    """`GemmaMLP` whose `gelu(fc_1(x)) * fc_2(x)` is one fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(geglu(self.fc_1(x), self.fc_2(x), approximate=self.approximate))


class TritonCausalSelfAttention(CausalSelfAttention):
    """`CausalSelfAttention` whose RoPE is the Triton kernel (used when the base class has `apply_rope`)."""

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply_rope_partial(x, cos, sin, self.config.rope_n_elem)


SWAPS: dict[type, type] = {
    RMSNorm: TritonRMSNorm,
    LLaMAMLP: TritonLLaMAMLP,
    GemmaMLP: TritonGemmaMLP,
    CausalSelfAttention: TritonCausalSelfAttention,
}
"""Exact module type -> the subclass that runs the kernels."""

KINDS = {"rms_norm": (RMSNorm,), "glu": (LLaMAMLP, GemmaMLP), "rope": (CausalSelfAttention,)}


def enable(
    model: nn.Module, rms_norm: bool = True, glu: bool = True, rope: bool = True
) -> tuple[nn.Module, Callable[..., torch.Tensor]]:
    """Switches a built model to the Triton kernels, in place.

    Args:
        model: a `litgpt.GPT` (or any module containing litgpt's RMSNorm / LLaMAMLP / GemmaMLP / attention).
        rms_norm: swap the RMSNorm modules.
        glu: swap the SwiGLU (LLaMAMLP, also inside LLaMAMoE experts) and GeGLU (GemmaMLP) MLPs.
        rope: swap RoPE in the attention modules (their `apply_rope` method).

    Returns:
        (model, loss_fn): the same model object, and `summed_fused_linear_cross_entropy`, the fused
        LM-head loss with the signature of the training loop's `fused_linear_cross_entropy`.

    Raises:
        RuntimeError: without a CUDA GPU (unless TRITON_INTERPRET=1 was set before importing the kernels).
        ValueError: if the model's RoPE cannot run on the kernels (an odd number of rotated features).
    """
    require_gpu()
    wanted = set()
    if rms_norm:
        wanted.update(KINDS["rms_norm"])
    if glu:
        wanted.update(KINDS["glu"])
    if rope:
        wanted.update(KINDS["rope"])  # through the attention's `apply_rope` method
    targets = [module for module in model.modules() if type(module) in wanted]
    for module in targets:  # everything is checked before anything is swapped
        if type(module) is CausalSelfAttention and module.config.rope_n_elem % 2:
            raise ValueError(
                f"the Triton RoPE kernel needs an even number of rotated features, but this model rotates "
                f"rope_n_elem={module.config.rope_n_elem} (rotary_percentage * head_size); pass rope=False"
            )
    for module in targets:
        module.__class__ = SWAPS[type(module)]
    return model, summed_fused_linear_cross_entropy


def disable(model: nn.Module) -> nn.Module:
    """Undoes `enable`: every swapped module gets its litgpt class back.

    Args:
        model: a model passed to `enable` before.

    Returns:
        The same model object.
    """
    back = {triton_cls: base for base, triton_cls in SWAPS.items()}
    for module in model.modules():
        base = back.get(type(module))
        if base is not None:
            module.__class__ = base
    return model


def count_swapped(model: nn.Module) -> dict[str, int]:
    """How many modules of each kind run on the kernels.

    Args:
        model: any module tree.

    Returns:
        {'rms_norm': n, 'glu': n, 'rope': n}.
    """
    counts = {kind: 0 for kind in KINDS}
    for module in model.modules():
        for kind, bases in KINDS.items():
            if type(module) in {SWAPS[b] for b in bases}:
                counts[kind] += 1
    return counts


def summed_fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    labels: torch.Tensor,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Sum over tokens of the cross-entropy of `hidden @ weight.T + bias` against `labels` (fused kernels).

    The training loop's loss signature (`litgpt.train.loss.fused_linear_cross_entropy`).

    Args:
        hidden: (B, T, C) or (N, C) final hidden states.
        weight: (V, C) LM-head matrix.
        bias: (V,) or None.
        labels: (B, T) or (N,) target ids.
        ignore_index: label value that adds no loss.

    Returns:
        A float32 scalar: the summed loss.
    """
    return fused_linear_cross_entropy(hidden, weight, bias, labels, ignore_index, reduction="sum")


class _EmitHidden(nn.Module):
    """Stands in for the LM head while `lm_head_loss` runs the model: returns the hidden states."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def lm_head_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """Next-token loss of a `GPT` on `input_ids` with the fused LM-head + cross-entropy kernels.

    The model runs with its head replaced by a pass-through for the duration of the call, so the logits
    are never materialised. Models with final-logit softcapping (applied by `GPT` after the head) or a
    head that is not a plain `nn.Linear` take their logits from the model and the Triton cross-entropy.

    Args:
        model: a `litgpt.GPT` (not wrapped by DDP/FSDP/compile; pass the inner module).
        input_ids: (B, T) token ids.
        targets: (B, T) target ids.
        ignore_index: targets with this value add no loss.
        reduction: 'mean' (over non-ignored targets) or 'sum'.
        chunk_size: rows of logits per chunk (see `fused_linear_cross_entropy`).

    Returns:
        A float32 scalar.
    """
    head = model.lm_head
    if type(head) is not nn.Linear or model.config.final_logit_softcapping is not None:
        return cross_entropy(model(input_ids), targets, ignore_index=ignore_index, reduction=reduction)
    model.lm_head = _EmitHidden()
    try:
        hidden = model(input_ids)  # (B, T, C)
    finally:
        model.lm_head = head
    return fused_linear_cross_entropy(
        hidden, head.weight, head.bias, targets, ignore_index, reduction=reduction, chunk_size=chunk_size
    )
