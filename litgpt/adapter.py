"""LLaMA-Adapter (Zhang et al. 2023) and LLaMA-Adapter v2 (Gao et al. 2023) for any `GPT`, by injection.

Adapter: from layer `start_layer` on, each attention layer gets a learned prefix of `prompt_length` vectors.
The prefix goes through the layer's own qkv projection (no qk norms, no RoPE) to prefix keys and values,
read in LitGPT's per-group layout (see `AdapterAttention.prefix_keys_values`); every query attends to them on
its own (no causal mask, its own softmax), and the result is added to the attention output (before the
output projection) through a per-head gate that starts at zero, so the injected model computes exactly what
the base model computes. The math is LitGPT 0.5's, so its adapter and adapter_v2 files give its logits.

Adapter v2 adds, on top, a learnable bias and scale to every linear layer (y = scale * (base(x) + bias),
starting at bias 0 and scale 1) and trains the norms' weights.

As with LoRA (`litgpt.lora`), modules keep their class and names: the attention layer and the linears are
switched to subclasses of their own classes, so the base weights keep their checkpoint names.

Checkpoint folders: step folders hold `lit_model.pth.adapter` (the trainable tensors only); the final folder
also holds the full `lit_model.pth` (base + adapter tensors). Both hold `adapter.yaml`, which says which
adapter the weights need; `litgpt.checkpoint.apply_peft_files(model, folder)` gives a plain GPT those modules
before loading, which `litgpt.checkpoint.load_checkpoint` does for every folder, so generate, chat, serve and `LLM.load` read an
adapter run's final folder like any other checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from litgpt.config import Config as BaseConfig
from litgpt.lora import (
    BaseLinear,
    LinearSite,
    LitGPTLayout,
    extend_module,
    from_litgpt_state_dict,
    linear_layout_hooks,
    linear_sites,
)
from litgpt.model import GPT as BaseGPT
from litgpt.model import Block as BaseBlock
from litgpt.model import CausalSelfAttention as BaseCausalSelfAttention
from litgpt.model import RMSNorm
from litgpt.utils import read_yaml

ADAPTER_FILE = "lit_model.pth.adapter"
"""The trainable tensors of an adapter run's checkpoint folder."""
ADAPTER_CONFIG = "adapter.yaml"
"""Which adapter a checkpoint folder's weights need (method, prompt length, start layer, base checkpoint)."""
ADAPTER_KEYS = ("adapter_prefix", "adapter_gate", "adapter_bias", "adapter_scale")
METHODS = {"v1": "adapter", "v2": "adapter_v2"}


@dataclass(frozen=True)
class AdapterSettings:
    """Which adapter and where: `version` "v1" (LLaMA-Adapter) or "v2" (LLaMA-Adapter v2)."""

    version: Literal["v1", "v2"] = "v1"
    prompt_length: int = 10
    """Prefix vectors per adapted layer."""
    start_layer: int = 2
    """First layer that gets a prefix (LLaMA-Adapter leaves the lowest layers alone)."""

    @property
    def method(self) -> str:
        """"adapter" or "adapter_v2" (the verb's suffix)."""
        return METHODS[self.version]

    def validate(self, n_layer: Optional[int] = None) -> "AdapterSettings":
        """Raises a one-line ValueError for a bad setting (`n_layer`: the model's, if known); returns self."""
        if self.version not in METHODS:
            raise ValueError(f"adapter version must be 'v1' or 'v2', got {self.version!r}")
        if isinstance(self.prompt_length, bool) or not isinstance(self.prompt_length, int) or self.prompt_length < 1:
            raise ValueError(f"adapter_prompt_length must be an integer >= 1, got {self.prompt_length!r}")
        if isinstance(self.start_layer, bool) or not isinstance(self.start_layer, int) or self.start_layer < 0:
            raise ValueError(f"adapter_start_layer must be an integer >= 0, got {self.start_layer!r}")
        if n_layer is not None and self.start_layer >= n_layer and self.version == "v1":
            raise ValueError(
                f"adapter_start_layer={self.start_layer} leaves no layer for the adapter prefix: the model has "
                f"{n_layer} layers (0 to {n_layer - 1})"
            )
        return self


# --------------------------------------------------------------------------------------------------------
# the adapted modules


class AdapterAttention:
    """Mixin of an attention layer with a gated, learned prefix (`extend_module(attn, AdapterAttention)`)."""

    native_decode = False  # the native CPU decode step has no prefix attention (litgpt.generate.cpu)

    adapter_prefix: nn.Parameter
    adapter_gate: nn.Parameter

    def init_adapter(self, prompt_length: int) -> None:
        """Adds the prefix (prompt_length, n_embd), N(0, 1) like token vectors, and the per-head gate (zero)."""
        device = self.qkv.weight.device
        self.adapter_prefix = nn.Parameter(torch.empty(prompt_length, self.config.n_embd, device=device))
        self.adapter_gate = nn.Parameter(torch.zeros(self.config.n_head, device=device))
        nn.init.normal_(self.adapter_prefix)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The layer's attention plus the gated attention of every query to the prefix: (B, T, nh * hs)."""
        return super().attend(q, k, v, *args, **kwargs) + self.prefix_attention(q)

    def prefix_keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix's keys and values, each (1, ng, L, hs), as LitGPT 0.5 computes them.

        The prefix goes through the layer's qkv projection (its bias, and in v2 its adapter bias and scale,
        included), and its output features are read per query group as [the group's queries, its key, its
        value], unlike the tokens' own projection ([all queries | all keys | all values]). No qk norm, no RoPE.
        LitGPT's adapter and adapter_v2 files are trained with this reading (observed, not documented), so it
        is the one that gives their numbers."""
        cfg = self.config
        nh, ng, hs = cfg.n_head, cfg.n_query_groups, cfg.head_size
        L = self.adapter_prefix.size(0)
        kv = self.qkv(self.adapter_prefix.unsqueeze(0))  # (1, L, (nh + 2 ng) hs)
        kv = kv.view(1, L, ng, nh // ng + 2, hs)  # per group: nh // ng queries, one key, one value
        return kv[:, :, :, -2].transpose(1, 2), kv[:, :, :, -1].transpose(1, 2)  # (1, ng, L, hs) each

    def prefix_attention(self, q: torch.Tensor) -> torch.Tensor:
        """gate * softmax(q pk^T * scale) pv for queries q (B, nh, T, hs) (after RoPE), as (B, T, nh * hs).

        Every query sees the whole prefix (no mask) in a softmax of its own; the scale and the logit
        softcapping are those of the layer's attention; the gate multiplies each head's result as is (no
        tanh)."""
        cfg = self.config
        B, nh, T, hs = q.shape
        pk, pv = self.prefix_keys_values()
        pk, pv = pk.to(q.dtype).expand(B, -1, -1, -1), pv.to(q.dtype).expand(B, -1, -1, -1)
        scale = 1.0 / math.sqrt(cfg.attention_scores_scalar or hs)
        if cfg.attention_logit_softcapping is None:
            y = F.scaled_dot_product_attention(q, pk, pv, scale=scale, enable_gqa=nh != pk.size(1))
        else:
            everything = torch.ones(T, pk.size(2), dtype=torch.bool, device=q.device)
            y = self._eager_attention(q, pk, pv, everything, scale, cfg.attention_logit_softcapping)
        y = y * self.adapter_gate.to(y.dtype).view(1, nh, 1, 1)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, nh * hs)


class AdapterV2Layer:
    """Mixin of a linear layer with a learnable bias and scale: y = scale * (base(x) + bias)."""

    native_decode = False  # the v2 bias and scale run through the PyTorch modules (litgpt.generate.cpu)

    adapter_bias: nn.Parameter
    adapter_scale: nn.Parameter

    def init_adapter_v2(self) -> None:
        """Adds bias (out,) = 0 and scale (out,) = 1, in float32 on the weight's device."""
        device = self.weight.device
        self.adapter_bias = nn.Parameter(torch.zeros(self.out_features, device=device))
        self.adapter_scale = nn.Parameter(torch.ones(self.out_features, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return (y + self.adapter_bias.to(y.dtype)) * self.adapter_scale.to(y.dtype)

    @property
    def linear(self) -> BaseLinear:
        """The base layer alone (LitGPT's `layer.linear`)."""
        return BaseLinear(self, AdapterV2Layer)


class AdapterV2Linear(AdapterV2Layer, nn.Linear):
    """LitGPT's `AdapterV2Linear(in_features, out_features, **linear_kwargs)`: an `nn.Linear` with the v2 bias
    and scale, state-dict keys `linear.weight`, `adapter_bias`, `adapter_scale` as in LitGPT. Injection gives a
    model's plain `nn.Linear` layers this class too (their keys stay the model's)."""

    def __init__(self, in_features: int, out_features: int, **kwargs: Any) -> None:
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        self.init_adapter_v2()
        linear_layout_hooks(self)


def is_norm(module: nn.Module) -> bool:
    """Whether `module` is one of the model's norms (RMSNorm or LayerNorm)."""
    return isinstance(module, (RMSNorm, nn.LayerNorm))


# --------------------------------------------------------------------------------------------------------
# model-level operations


def inject_adapter(model: nn.Module, settings: AdapterSettings) -> list[str]:
    """Adds the adapter of `settings` to a built GPT in place; returns the names of the new parameters.

    The injected model computes exactly what it computed before (zero gates; v2: bias 0, scale 1).

    Args:
        model: a built `GPT` (any family, any device, meta included; bitsandbytes-quantized too).
        settings: version, prompt length and start layer.
    """
    settings.validate(model.config.n_layer)
    if any(isinstance(m, (AdapterAttention, AdapterV2Layer)) for m in model.modules()):
        raise ValueError("the model already has adapter weights")
    for block in list(model.transformer.h)[settings.start_layer:]:
        extend_module(block.attn, AdapterAttention).init_adapter(settings.prompt_length)
    if settings.version == "v2":
        inject_adapter_v2_sites(linear_sites(model))
    return [name for name, _ in model.named_parameters() if is_adapter_key(name)]


def inject_adapter_v2_sites(sites: Iterable[LinearSite]) -> None:
    """Gives each linear of `sites` (every linear of a model, MoE routers included, as in LitGPT) the v2 bias
    and scale."""
    for site in sites:
        if not isinstance(site.module, AdapterV2Layer):
            extend_module(site.module, AdapterV2Layer, AdapterV2Linear).init_adapter_v2()


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key / parameter name is an adapter tensor (prefix, gate, v2 bias or scale)."""
    return key.rsplit(".", 1)[-1] in ADAPTER_KEYS


def adapter_trainable_names(model: nn.Module, settings: AdapterSettings) -> list[str]:
    """The parameters an adapter run trains: the adapter tensors and, for v2, the norms' weights."""
    names = [name for name, _ in model.named_parameters() if is_adapter_key(name)]
    if settings.version == "v2":
        for module_name, module in model.named_modules():
            if is_norm(module):
                names += [f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)]
    return names


def mark_only_adapter_as_trainable(model: nn.Module, settings: Optional[AdapterSettings] = None) -> list[str]:
    """Freezes everything except what `adapter_trainable_names` lists; returns those names. Without `settings`
    (LitGPT's call): the adapter tensors only, as LitGPT's v1 function."""
    settings = settings or AdapterSettings("v1")
    trainable = set(adapter_trainable_names(model, settings))
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return sorted(trainable)


def combine_adapter_weights(
    base_state: dict[str, torch.Tensor], adapter_state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The full state dict of an adapted model: the base's tensors with the run's trained ones (adapter tensors,
    v2 norms) added or replacing them, in the base's floating dtype."""
    dtype = next((t.dtype for t in base_state.values() if t.is_floating_point()), torch.float32)
    full = dict(base_state)
    for key, value in adapter_state.items():
        full[key] = value.to(dtype) if value.is_floating_point() else value
    return full


# --------------------------------------------------------------------------------------------------------
# checkpoint folders


def write_adapter_config(folder: Union[str, Path], settings: AdapterSettings, checkpoint_dir: Union[str, Path]) -> Path:
    """Writes `adapter.yaml` (method, prompt length, start layer, base checkpoint) into `folder`."""
    data = {"method": settings.method, "adapter_prompt_length": settings.prompt_length,
            "adapter_start_layer": settings.start_layer, "checkpoint_dir": str(checkpoint_dir)}
    path = Path(folder) / ADAPTER_CONFIG
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def read_adapter_config(folder: Union[str, Path]) -> Optional[tuple[AdapterSettings, dict[str, Any]]]:
    """The settings in a folder's `adapter.yaml` and the file's data; None when there is no such file."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    data = read_yaml(path)
    versions = {method: version for version, method in METHODS.items()}
    if not isinstance(data, dict) or data.get("method") not in versions:
        raise ValueError(f"{path} must be a mapping whose 'method' is 'adapter' or 'adapter_v2'")
    settings = AdapterSettings(versions[data["method"]], data.get("adapter_prompt_length", 10),
                               data.get("adapter_start_layer", 2))
    return settings.validate(), data


def settings_from_litgpt_state_dict(state: dict[str, torch.Tensor], version: Literal["v1", "v2"],
                                    n_layer: int) -> AdapterSettings:
    """The settings of LitGPT's adapter files, which record none (its runs keep the defaults of its Config,
    prompt length 10 from layer 2): the prompt length and first adapted layer read from the prefix tensors
    (in either layout), LitGPT's defaults when there is none."""
    state = from_litgpt_state_dict(state)
    layers = sorted(int(k.split(".")[2]) for k in state if k.startswith("transformer.h.") and k.endswith(".attn.adapter_prefix"))
    if not layers:
        return AdapterSettings(version, 10, max(2, n_layer)).validate(n_layer)
    length = state[f"transformer.h.{layers[0]}.attn.adapter_prefix"].size(0)
    return AdapterSettings(version, length, layers[0]).validate(n_layer)


# --------------------------------------------------------------------------------------------------------
# LitGPT's `litgpt.adapter` model classes: the generic model with the adapter injected per the config


@dataclass
class Config(BaseConfig):
    """LitGPT's `adapter.Config`: a model `Config` with the adapter fields."""

    adapter_prompt_length: int = 10
    adapter_start_layer: int = 2

    def adapter_settings(self, version: Literal["v1", "v2"] = "v1") -> AdapterSettings:
        """The adapter fields as settings of `version`."""
        return AdapterSettings(version, self.adapter_prompt_length, self.adapter_start_layer)


def inject_adapter_attention(attn: nn.Module, config: Config, block_idx: int) -> None:
    """Gives the attention layer of block `block_idx` its prefix when the config's start layer says so."""
    if block_idx >= config.adapter_start_layer:
        extend_module(attn, AdapterAttention).init_adapter(config.adapter_prompt_length)


class GPT(LitGPTLayout, BaseGPT):
    """LitGPT's `adapter.GPT(config)`: `litgpt.model.GPT` with the adapter prefix in layers
    `adapter_start_layer` and up; state dicts in LitGPT's layout (`attn.adapter_wte.weight`,
    `attn.gating_factor`); loads LitGPT's, ours, or a plain base checkpoint (strict=False)."""

    wraps_linears = False
    version: Literal["v1", "v2"] = "v1"

    def __init__(self, config: Config) -> None:
        super().__init__(self.untied(config))
        for i, block in enumerate(self.transformer.h):
            inject_adapter_attention(block.attn, config, i)
        if self.version == "v2":
            inject_adapter_v2_sites(linear_sites(self))
        self.use_litgpt_layout()

    config_class: type = Config

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "GPT":
        return cls(cls.config_class.from_name(name, **kwargs))


class Block(BaseBlock):
    """LitGPT's `adapter.Block(config, block_idx)`: a model block whose attention has the adapter prefix."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        inject_adapter_attention(self.attn, config, block_idx)


class CausalSelfAttention(BaseCausalSelfAttention):
    """LitGPT's `adapter.CausalSelfAttention(config, block_idx)`: attention with the gated prefix (from
    `adapter_start_layer` on)."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        inject_adapter_attention(self, config, block_idx)


def adapter_filter(key: str, value: Any = None) -> bool:
    """LitGPT's filter for state dicts: keeps the adapter prefix and gate (in either layout)."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("adapter_prefix", "adapter_gate", "gating_factor") or key.endswith("adapter_wte.weight")
