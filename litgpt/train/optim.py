"""Optimizer by name, parameter groups without weight decay on norms/biases/embeddings, and the
learning-rate schedule (linear warmup, then cosine decay to `min_lr`)."""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional

import torch
import torch.nn as nn

from litgpt.utils import OptimizerSpec, parse_optimizer_spec


def no_decay_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters weight decay must not touch: norms, biases (any 1-D tensor) and embeddings."""
    ids = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            ids.update(id(p) for p in module.parameters(recurse=False))
    for p in model.parameters():
        if p.dim() < 2:
            ids.add(id(p))
    return ids


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into a decayed group and an undecayed one (shared tensors once)."""
    skip = no_decay_parameter_ids(model)
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if id(p) in skip else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(spec: OptimizerSpec, model: nn.Module, **extra: Any) -> torch.optim.Optimizer:
    """Instantiates the optimizer `spec` over `model`'s trainable parameters.

    Weight decay (the optimizer's own default when not given) applies to matrices only; norms, biases
    and embeddings get none. `extra` arguments are passed when the class accepts them.
    """
    cls, kwargs = parse_optimizer_spec(spec)
    params = inspect.signature(cls.__init__).parameters
    for key, value in extra.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    if "weight_decay" in params:
        default = params["weight_decay"].default
        weight_decay = kwargs.pop("weight_decay", 0.0 if default is inspect.Parameter.empty else default)
        return cls(parameter_groups(model, float(weight_decay)), **kwargs)
    trainable = [p for p in dict.fromkeys(model.parameters()) if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    return cls(trainable, **kwargs)


class WarmupCosine:
    """Learning-rate factor at optimizer step s: linear warmup over `warmup_steps` (reaching 1 at the last
    warmup step), then cosine decay to `min_ratio` at `total_steps` (held there after). With no known
    total, the factor stays at 1 after warmup. A plain object so LambdaLR can save its state."""

    def __init__(self, warmup_steps: int, total_steps: Optional[int], min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.total_steps is None:
            return 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: Optional[int], min_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `WarmupCosine` to every parameter group (min_lr is absolute)."""
    factors = []
    for group in optimizer.param_groups:
        base = group["lr"]
        if min_lr > base:
            raise ValueError(f"train.min_lr={min_lr} is larger than the optimizer's lr={base}")
        factors.append(WarmupCosine(warmup_steps, total_steps, min_lr / base if base > 0 else 0.0))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def optimizer_lr(spec: OptimizerSpec) -> float:
    """The learning rate the optimizer `spec` will use (its class default when not given)."""
    cls, kwargs = parse_optimizer_spec(spec)
    if "lr" in kwargs:
        return float(kwargs["lr"])
    default = inspect.signature(cls.__init__).parameters.get("lr")
    if default is None or default.default is inspect.Parameter.empty:
        raise ValueError(f"optimizer {cls.__name__} needs an lr: give init_args.lr")
    return float(default.default)
