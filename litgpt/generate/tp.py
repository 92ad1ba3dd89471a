"""`litgpt generate_tp`: generation with tensor parallelism, one process per device (Lightning Fabric; gloo on CPUs).

Every layer is split across the processes, from outside the model file:
- attention: each process keeps its share of the query heads and of the key/value groups (the matching rows of
  `qkv`, column-parallel) and the matching columns of `proj` (row-parallel); its KV cache holds only its groups;
- MLP (and each expert of a mixture): `fc` / `fc_1` / `fc_2` column-parallel, `proj` row-parallel;
- each attention and MLP output is summed over the processes (all-reduce), row-parallel biases counted once.
Embeddings, norms, MoE routers and the LM head are replicated, so every process computes the same logits and,
with the same seed, samples the same tokens. Each process reads only its slices of the memory-mapped weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Union

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.generate.sequentially import split_verb
from litgpt.lora import extend_module
from litgpt.model import GPT, CausalSelfAttention, GptNeoxMLP, LLaMAMLP, LLaMAMoE


class _Ranks:
    """The two things the split needs from a `lightning.Fabric`: `global_rank` and `world_size`."""

    def __init__(self, global_rank: int, world_size: int) -> None:
        self.global_rank, self.world_size = global_rank, world_size


def check_tensor_parallel(config: Config, world_size: int) -> None:
    """A one-line ValueError when `config` cannot be split over `world_size` processes (heads, key/value groups
    and MLP widths must divide; OLMo-2's norms over all heads cannot be split)."""
    if world_size == 1:
        return
    nh, ng = config.n_head, config.n_query_groups
    if nh % world_size:
        raise ValueError(f"n_head={nh} is not divisible by {world_size} processes: use a divisor of it as --devices")
    if ng % world_size and world_size % ng:
        raise ValueError(
            f"n_query_groups={ng} cannot be split over {world_size} processes (one must divide the other)"
        )
    sizes = {"intermediate_size": config.intermediate_size}
    if config.mlp_class_name == "LLaMAMoE":
        sizes = {"moe_intermediate_size": config.moe_intermediate_size or config.intermediate_size}
    for name, size in sizes.items():
        if size % world_size:
            raise ValueError(f"{name}={size} is not divisible by {world_size} processes")
    if config.norm_qk and config.norm_qk_type == "olmo2":
        raise ValueError("OLMo-2's q/k norms span all heads and cannot be split: use generate_sequentially")


# ------------------------------------------------------------------------------------------------------------
# LitGPT's names: tensor_parallel(fabric, model) and the per-module functions


def tensor_parallel(fabric: Any, model: GPT) -> GPT:
    """Splits `model` in place for process `fabric.global_rank` of `fabric.world_size` (any object with those two
    attributes); returns it. Needs `torch.distributed` initialised when world_size > 1 (Fabric's launch)."""
    world_size = fabric.world_size
    check_tensor_parallel(model.config, world_size)
    if world_size == 1:
        return model
    peft = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith(("Adapter", "LoRA"))})
    if peft:
        raise ValueError(f"tensor parallelism takes plain models, not {', '.join(peft)} layers: merge them first")
    for block in model.transformer.h:
        tensor_parallel_attn(fabric, block.attn)
        tensor_parallel_mlp(fabric, block.mlp)
    return model


def tensor_parallel_linear(fabric: Any, linear: nn.Linear, style: Literal["colwise", "rowwise"]) -> None:
    """Keeps this process's share of a linear layer: "colwise" a contiguous block of output rows, "rowwise" a
    block of input columns (its bias on the first process only, as the outputs are summed)."""
    rank, world_size = fabric.global_rank, fabric.world_size
    if style == "colwise":
        n = linear.out_features // world_size
        _keep_rows(linear, torch.arange(rank * n, (rank + 1) * n))
    elif style == "rowwise":
        n = linear.in_features // world_size
        _keep_columns(linear, slice(rank * n, (rank + 1) * n), keep_bias=rank == 0)
    else:
        raise ValueError(f"style must be 'colwise' or 'rowwise', got {style!r}")


def tensor_parallel_mlp(fabric: Any, mlp: Union[GptNeoxMLP, LLaMAMLP, LLaMAMoE]) -> None:
    """Splits an MLP (or each expert of a mixture; the router stays whole) and sums its output over the processes."""
    experts = list(mlp.experts) if isinstance(mlp, LLaMAMoE) else [mlp]
    for expert in experts:
        for name in ("fc", "fc_1", "fc_2"):
            if hasattr(expert, name):
                tensor_parallel_linear(fabric, getattr(expert, name), "colwise")
        tensor_parallel_linear(fabric, expert.proj, "rowwise")
    extend_module(mlp, _SumOverProcesses)


def tensor_parallel_attn(fabric: Any, attn: CausalSelfAttention) -> None:
    """Keeps this process's query heads and key/value groups (rows of `qkv`, columns of `proj`), gives the layer a
    config with the local head counts (so its KV cache holds only its groups), and sums its output over the processes."""
    rank, world_size = fabric.global_rank, fabric.world_size
    cfg = attn.config
    nh, ng, hs = cfg.n_head, cfg.n_query_groups, cfg.head_size
    heads = nh // world_size
    if ng % world_size == 0:
        groups, first_group = ng // world_size, rank * (ng // world_size)
    else:  # fewer groups than processes: each process's heads share one group, which it keeps a copy of
        groups, first_group = 1, (rank * heads) // (nh // ng)
    q_rows = torch.arange(rank * heads * hs, (rank + 1) * heads * hs)
    kv = torch.arange(first_group * hs, (first_group + groups) * hs)
    _keep_rows(attn.qkv, torch.cat((q_rows, nh * hs + kv, (nh + ng) * hs + kv)))
    _keep_columns(attn.proj, slice(rank * heads * hs, (rank + 1) * heads * hs), keep_bias=rank == 0)
    attn.config = dataclasses.replace(cfg, n_head=heads, n_query_groups=groups)
    extend_module(attn, _SumOverProcesses)


def all_reduce_output(world_size: int, module: nn.Module, ins: Any, outs: torch.Tensor) -> torch.Tensor:
    """Sums a module's output over the processes, in place (LitGPT's forward-hook signature)."""
    if world_size > 1:
        torch.distributed.all_reduce(outs)
    return outs


# ------------------------------------------------------------------------------------------------------------
# the swapped-in behaviour


class _SumOverProcesses:
    """Mixin of an attention layer or MLP whose output is a partial sum: all-reduced after `forward`."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return all_reduce_output(torch.distributed.get_world_size(), self, args, super().forward(*args, **kwargs))


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight[rows].clone(), requires_grad=False)
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[rows].clone(), requires_grad=False)
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: slice, keep_bias: bool) -> None:
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight[:, columns].clone(), requires_grad=False)
        if linear.bias is not None and not keep_bias:
            linear.bias = nn.Parameter(torch.zeros_like(linear.bias), requires_grad=False)
    linear.in_features = linear.weight.size(1)


main = split_verb(
    lambda model, rank, world: tensor_parallel(_Ranks(rank, world), model), check_tensor_parallel,
    """Generate with tensor parallelism: every layer's weights are split across the processes (one per device),
    whose partial results are summed after each attention and MLP. The text goes to stdout, a timing line to
    stderr, from the first process.
""",
)
