"""Faster single-token decoding on the CPU: matrix-vector products for the linear layers.

A decode step of batch 1 multiplies every weight matrix by one vector. `F.linear` sends that to a general
matrix-matrix routine which, for bfloat16 on CPUs, reads the weights at a fraction of the memory bandwidth;
`torch.mv` takes PyTorch's matrix-vector kernel, which streams them about 1.5x faster (measured on a 2-core
AVX512-BF16 machine: 9.3 -> 14.3 GB/s for SmolLM2-135M's layers). `use_matvec_linears` swaps that path in for
the plain `nn.Linear` modules of a model, in place: parameters, state_dict keys and results of batched or
multi-token calls are unchanged (those still go through `F.linear`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MatVecLinear(nn.Linear):
    """`nn.Linear` computing a single input vector with `torch.mv` (same parameters, same state_dict)."""

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
