"""LitGPT's `litgpt.adapter_v2` names over this project's one adapter implementation (`litgpt.adapter`).

`GPT(config)` is `litgpt.model.GPT` with LLaMA-Adapter v2 injected (the gated prefix from
`config.adapter_start_layer` on, a bias and scale on every linear, MoE routers included); its state dicts use
LitGPT's layout (`X.linear.weight`, `X.adapter_bias`, `attn.adapter_wte.weight`, `attn.gating_factor`) and it
loads LitGPT's, ours, or a plain base checkpoint. The block, attention and MLP classes build the model's
modules and inject into them the same way.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch.nn as nn

from litgpt.adapter import AdapterV2Linear  # noqa: F401 (LitGPT's name, re-exported)
from litgpt.adapter import Block as AdapterBlock
from litgpt.adapter import CausalSelfAttention as AdapterCausalSelfAttention
from litgpt.adapter import Config as AdapterConfig
from litgpt.adapter import GPT as AdapterGPT
from litgpt.adapter import AdapterSettings, inject_adapter_v2_sites, is_adapter_key, mark_only_adapter_as_trainable
from litgpt.adapter import adapter_filter as adapter_v1_filter
from litgpt.lora import attention_sites, mlp_sites
from litgpt.model import GemmaMLP as BaseGemmaMLP
from litgpt.model import GptNeoxMLP as BaseGptNeoxMLP
from litgpt.model import LLaMAMLP as BaseLLaMAMLP
from litgpt.model import LLaMAMoE as BaseLLaMAMoE

NORM_NAMES = ("norm_1", "norm_2", "ln_f", "post_attention_norm", "post_mlp_norm", "norm_q", "norm_k")
"""The model's norms, whose weights Adapter v2 trains (LitGPT's v2 filter knows norm_1, norm_2 and ln_f)."""


class Config(AdapterConfig):
    """LitGPT's `adapter_v2.Config` (the fields of `adapter.Config`)."""


class GPT(AdapterGPT):
    """LitGPT's `adapter_v2.GPT(config)` (see the module docstring)."""

    wraps_linears = True
    version: Literal["v1", "v2"] = "v2"
    config_class = Config


class Block(AdapterBlock):
    """LitGPT's `adapter_v2.Block(config, block_idx)`: the prefix (from the start layer on) and the v2 bias and
    scale on every linear of the block."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        inject_adapter_v2_sites(attention_sites(self.attn))
        inject_adapter_v2_sites(mlp_sites(self.mlp))


class CausalSelfAttention(AdapterCausalSelfAttention):
    """LitGPT's `adapter_v2.CausalSelfAttention(config, block_idx)`: the adapter attention with the v2 bias and
    scale on qkv and proj."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        inject_adapter_v2_sites(attention_sites(self))


class GptNeoxMLP(BaseGptNeoxMLP):
    """LitGPT's `adapter_v2.GptNeoxMLP(config)`: the v2 bias and scale on its linears."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        inject_adapter_v2_sites(mlp_sites(self))


class LLaMAMLP(BaseLLaMAMLP):
    """LitGPT's `adapter_v2.LLaMAMLP(config, intermediate_size)`: the v2 bias and scale on its linears."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__(config, intermediate_size)
        inject_adapter_v2_sites(mlp_sites(self))


class GemmaMLP(BaseGemmaMLP):
    """LitGPT's `adapter_v2.GemmaMLP(config, intermediate_size)`: the v2 bias and scale on its linears."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__(config, intermediate_size)
        inject_adapter_v2_sites(mlp_sites(self))


class LLaMAMoE(BaseLLaMAMoE):
    """LitGPT's `adapter_v2.LLaMAMoE(config)`: the v2 bias and scale on the router and every expert's linears."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        inject_adapter_v2_sites(mlp_sites(self))


def adapter_filter(key: str, value: Any = None) -> bool:
    """LitGPT's v2 filter for state dicts: the adapter tensors (either layout) and the norms' weights."""
    parts = key.split(".")
    return is_adapter_key(key) or adapter_v1_filter(key) or any(name in parts[:-1] for name in NORM_NAMES)


def mark_only_adapter_v2_as_trainable(model: nn.Module) -> list[str]:
    """LitGPT's name: freezes everything except the adapter tensors and the norms' weights; returns the names
    of the trainable parameters."""
    return mark_only_adapter_as_trainable(model, AdapterSettings("v2"))
