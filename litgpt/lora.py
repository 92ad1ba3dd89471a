"""LoRA (Hu et al. 2021) for any `GPT`, by injection: no model class is copied or subclassed by hand.

`inject_lora(model, LoRASettings(...))` finds the linear layers of the built model by their place in the
generic model (`transformer.h.{i}.attn.qkv`, `attn.proj`, every linear under `mlp` except a MoE router,
`lm_head`) and gives each targeted one a low-rank update: y = base(x) + (alpha / r) * B A x, with B zero at
first, so a freshly injected model computes exactly what the base model computes. A new MLP class in
`litgpt.model` built from linear layers therefore gets LoRA without any change here.

The layer keeps its own class and parameter names: it is switched to a subclass of its own class that adds
`lora_A` (r, in) and `lora_B` (rows, r), so any linear-like layer works, bitsandbytes' 4-bit and 8-bit ones
included (QLoRA), and the base weights keep their checkpoint names (`...attn.qkv.weight`).

On the fused qkv projection the query, key and value targets are enabled separately: `lora_B` only has the
rows of the enabled parts, and the other parts of the output get no update.

Weights on disk: a run folder holds `lit_model.pth.lora` (only the LoRA tensors) and its settings in
`hyperparameters.yaml` (`lora_r`, `lora_alpha`, ..., as LitGPT writes them); `merge_lora_weights` combines
them with the base checkpoint's state dict into an ordinary `lit_model.pth`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Iterator, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.config import Config as BaseConfig
from litgpt.model import GPT as BaseGPT
from litgpt.model import Block as BaseBlock
from litgpt.model import CausalSelfAttention as BaseCausalSelfAttention
from litgpt.model import GemmaMLP as BaseGemmaMLP
from litgpt.model import GptNeoxMLP as BaseGptNeoxMLP
from litgpt.model import LLaMAMLP as BaseLLaMAMLP
from litgpt.model import LLaMAMoE as BaseLLaMAMoE

LORA_FILE = "lit_model.pth.lora"
"""The LoRA tensors of a run's checkpoint folder."""

TARGETS = ("query", "key", "value", "projection", "mlp", "head")


# --------------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class LoRASettings:
    """Rank, scaling, dropout and targets of a LoRA model (the `lora_*` flags of `finetune_lora`)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    query: bool = True
    key: bool = False
    value: bool = True
    projection: bool = False
    mlp: bool = False
    head: bool = False

    @property
    def scale(self) -> float:
        """The factor alpha / r of the low-rank update."""
        return self.alpha / self.r

    def targets(self) -> list[str]:
        """The enabled targets, e.g. ["query", "value"]."""
        return [t for t in TARGETS if getattr(self, t)]

    def validate(self) -> "LoRASettings":
        """Raises a one-line ValueError for a bad setting; returns self."""
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora_r must be an integer >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets():
            raise ValueError(
                "no LoRA target is enabled: set at least one of --lora_query, --lora_key, --lora_value, "
                "--lora_projection, --lora_mlp, --lora_head to true"
            )
        return self

    def to_hyperparameters(self) -> dict[str, Any]:
        """The settings as the `lora_*` keys of hyperparameters.yaml."""
        return {f"lora_{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_hyperparameters(cls, hparams: dict[str, Any], source: str = "hyperparameters") -> "LoRASettings":
        """Reads the `lora_*` keys of a run's hyperparameters (LitGPT's names); a one-line error if absent."""
        if "lora_r" not in hparams:
            raise ValueError(f"{source} has no lora_r: it was not written by a LoRA finetuning run")
        defaults = cls()
        values = {k: hparams.get(f"lora_{k}", getattr(defaults, k)) for k in asdict(defaults)}
        return cls(**values).validate()


def read_hyperparameters(folder: Union[str, Path]) -> dict[str, Any]:
    """The `hyperparameters.yaml` of a run's checkpoint folder (one-line errors for a missing or bad file)."""
    from litgpt.utils import read_yaml

    path = Path(folder) / "hyperparameters.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no hyperparameters.yaml: is it a finetuning run's checkpoint folder?")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a mapping")
    return data


# --------------------------------------------------------------------------------------------------------
# extending a module's own class


_EXTENDED: dict[tuple[type, type], type] = {}


def extend_module(module: nn.Module, mixin: type, concrete: Optional[type] = None) -> nn.Module:
    """Switches `module` to a subclass of its own class that also derives from `mixin` (made once per pair).

    The module keeps its parameters, buffers, hooks and names; `mixin` methods come first in the lookup
    order, so a mixin's `forward` can call `super().forward`. A module already extended by `mixin` is left
    alone. `concrete`: the class to use when the module is exactly an `nn.Linear` (LitGPT's constructible
    `LoRALinear`, `LoRAQKVLinear`, `AdapterV2Linear`, which derive from `mixin` and `nn.Linear`).
    """
    base = type(module)
    if isinstance(module, mixin):
        return module
    if concrete is not None and base is nn.Linear:
        module.__class__ = concrete
        return module
    cls = _EXTENDED.get((mixin, base))
    if cls is None:
        cls = type(f"{mixin.__name__}[{base.__name__}]", (mixin, base), {"__module__": mixin.__module__})
        _EXTENDED[(mixin, base)] = cls
    module.__class__ = cls
    return module


def is_linear_like(module: nn.Module) -> bool:
    """Whether `module` computes y = x W^T (+ b) with `in_features` / `out_features` (nn.Linear and its
    bitsandbytes subclasses)."""
    return isinstance(module, nn.Linear) or (
        hasattr(module, "in_features") and hasattr(module, "out_features") and hasattr(module, "weight")
        and not isinstance(module, nn.Embedding)
    )


@dataclass(frozen=True)
class LinearSite:
    """A linear layer of a GPT and the target kind it belongs to."""

    name: str
    """Its module name, e.g. `transformer.h.0.attn.qkv`."""
    kind: str
    """"qkv", "projection", "mlp", "router" (a MoE's `gate`) or "head"."""
    module: nn.Module


def attention_sites(attn: nn.Module, prefix: str = "") -> Iterator[LinearSite]:
    """The fused `qkv` and the output `proj` of an attention layer."""
    if is_linear_like(getattr(attn, "qkv", None)):
        yield LinearSite(prefix + "qkv", "qkv", attn.qkv)
    if is_linear_like(getattr(attn, "proj", None)):
        yield LinearSite(prefix + "proj", "projection", attn.proj)


def mlp_sites(mlp: nn.Module, prefix: str = "") -> Iterator[LinearSite]:
    """Each linear under an MLP of any class; a MoE's router (the `gate` beside `experts`) is kind "router"."""
    for parent_name, parent in mlp.named_modules():
        for child_name, child in parent.named_children():
            if is_linear_like(child):
                full = f"{parent_name}.{child_name}" if parent_name else child_name
                router = child_name == "gate" and hasattr(parent, "experts")
                yield LinearSite(prefix + full, "router" if router else "mlp", child)


def block_sites(block: nn.Module, prefix: str = "") -> Iterator[LinearSite]:
    """The linear layers of one transformer block (attention, then MLP)."""
    yield from attention_sites(block.attn, prefix + "attn.")
    yield from mlp_sites(block.mlp, prefix + "mlp.")


def linear_sites(model: nn.Module) -> Iterator[LinearSite]:
    """Every linear layer of a GPT that PEFT methods may adapt, found by its place in the generic model:
    `attn.qkv`, `attn.proj`, each linear under `mlp` (any MLP class; a MoE router as kind "router"), and
    `lm_head`."""
    for i, block in enumerate(model.transformer.h):
        yield from block_sites(block, f"transformer.h.{i}.")
    if is_linear_like(getattr(model, "lm_head", None)):
        yield LinearSite("lm_head", "head", model.lm_head)


def qkv_segments(config: Any, settings: Union[LoRASettings, tuple[bool, bool, bool]]) -> list[tuple[int, int]]:
    """Output row ranges of the fused qkv ([q | k | v] layout) that get a LoRA update, one per enabled part."""
    hs, nh, ng = config.head_size, config.n_head, config.n_query_groups
    enabled = settings if isinstance(settings, tuple) else (settings.query, settings.key, settings.value)
    segments, start = [], 0
    for on, size in zip(enabled, (nh * hs, ng * hs, ng * hs)):
        if on:
            segments.append((start, start + size))
        start += size
    return segments


def lora_targets(
    sites: Iterable[LinearSite], settings: LoRASettings, config: Any, router: bool = False
) -> list[tuple[LinearSite, Optional[list[tuple[int, int]]]]]:
    """The sites `settings` targets, each with its updated output rows (one range per qkv part; None: all rows).
    A MoE router is a target only with `router=True` and `settings.mlp` (LitGPT's `lora.GPT` adapts it)."""
    out = []
    for site in sites:
        if site.kind == "qkv":
            if settings.query or settings.key or settings.value:
                out.append((site, qkv_segments(config, settings)))
        elif site.kind == "router":
            if router and settings.mlp:
                out.append((site, None))
        elif getattr(settings, site.kind):
            out.append((site, None))
    return out


def lora_sites(model: nn.Module, settings: LoRASettings, router: bool = False):
    """The layers of a GPT that `settings` targets, each with its updated output rows (see `lora_targets`)."""
    return lora_targets(linear_sites(model), settings, model.config, router)


# --------------------------------------------------------------------------------------------------------
# the LoRA layer


class LoRALayer(nn.Module):
    """Mixin of a LoRA layer (LitGPT's base class of LoRA layers): `extend_module(linear, LoRALayer)` then
    `init_lora(...)`. `LoRALayer(r, lora_alpha, lora_dropout)` alone holds just the settings, as in LitGPT.

    forward(x) = base(x) + scaling * B A dropout(x). On the fused qkv each enabled part (query, key, value) has
    its own rank-r update, as in LitGPT and in PEFT's separate q/k/v projections: lora_A stacks one (r, in)
    block per part, lora_B stacks the parts' rows, and the other rows get no update. `merge()` folds the
    update into the base weight (full-precision bases only). `r == 0`: no update (LitGPT's r=0 layers).
    """

    native_decode = False  # the LoRA branch runs through the PyTorch modules (litgpt.generate.cpu)

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    r: int = 0
    merged: bool = False

    def __init__(self, r: int, lora_alpha: int, lora_dropout: float) -> None:
        super().__init__()
        self.r, self.lora_alpha, self.lora_dropout_p = r, lora_alpha, float(lora_dropout)
        self.scaling = lora_alpha / r if r > 0 else 0.0

    def init_lora(self, r: int, alpha: float, dropout: float, segments: Optional[list[tuple[int, int]]]) -> None:
        """Adds lora_A (parts * r, in), kaiming-uniform, and lora_B (rows, r), zero, in float32 on the weight's
        device (`segments`: the updated row ranges, one per part; None: one part of all rows)."""
        parts = 1 if segments is None else len(segments)
        rows = self.out_features if segments is None else sum(b - a for a, b in segments)
        device = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(parts * r, self.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(rows, r, device=device, dtype=torch.float32))
        self.r, self.lora_alpha, self.scaling = r, alpha, alpha / r
        self.lora_dropout_p = float(dropout)
        self.lora_segments = segments
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """lora_A: nn.Linear's own (kaiming-uniform) initialisation; lora_B: zero (no update yet)."""
        if self.r > 0:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def lora_update(self, x: torch.Tensor) -> torch.Tensor:
        """scaling * dropout(x) A^T B^T: (..., out_features), zero outside the enabled rows (rank-r products
        first)."""
        if self.lora_dropout_p > 0 and self.training:
            x = dropout(x, self.lora_dropout_p)
        if not torch.is_autocast_enabled(x.device.type):  # under autocast both products run in its dtype
            x = x.to(self.lora_A.dtype)
        # lora_B as one block per part at its rows, zero elsewhere: the result has the output's full width (and
        # exact zeros there), so it is added in one go, without slicing the base output
        B = place_blocks(self.lora_B, self.out_features, self.lora_segments)
        return F.linear(F.linear(x, self.lora_A) * self.scaling, B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or self.r == 0:
            return super().forward(x)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type) and x.is_floating_point():
            # the cast autocast makes for the base layer anyway, made once for both branches
            x = x.to(torch.get_autocast_dtype(device_type))
        y = super().forward(x)
        return y + self.lora_update(x).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The update as a full (out, in) float32 matrix (zero rows outside the segments)."""
        return lora_delta(self.lora_A.detach(), self.lora_B.detach(), self.scaling, self.out_features,
                          self.lora_segments)

    def get_lora_AB(self) -> torch.Tensor:
        """LitGPT's name for `delta_weight`: the scaled update as an (out, in) matrix."""
        return self.delta_weight()

    @property
    def linear(self) -> "BaseLinear":
        """The base layer alone (LitGPT's `layer.linear`): its weight, bias and forward without the update."""
        return BaseLinear(self, LoRALayer)

    def merge(self) -> None:
        """Adds the update into the base weight (the forward pass then skips it)."""
        self._fold(+1)

    def unmerge(self) -> None:
        """Takes a merged update back out of the base weight."""
        self._fold(-1)

    def _fold(self, sign: int) -> None:
        if self.r == 0 or self.merged == (sign > 0):
            return
        weight = self.weight
        if not weight.is_floating_point():
            raise ValueError(
                f"cannot merge LoRA into {weight.dtype} (quantized) weights; merge the run folder into the "
                "full-precision base checkpoint with `litgpt merge_lora` instead"
            )
        with torch.no_grad():
            weight.data = (weight.float() + sign * self.delta_weight()).to(weight.dtype)
        self.merged = sign > 0


class BaseLinear:
    """The base layer of an extended linear (what LitGPT keeps as `layer.linear`): weight, bias, features, and
    a call that runs the base class's forward only."""

    def __init__(self, layer: nn.Module, mixin: type) -> None:
        self._layer, self._mixin = layer, mixin
        self.weight, self.bias = layer.weight, getattr(layer, "bias", None)
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return super(self._mixin, self._layer).forward(x)  # the class after the mixin: the base layer's


def linear_layout_hooks(module: nn.Module) -> None:
    """Gives a single extended linear LitGPT's state-dict names (`linear.weight`, `linear.bias`) both ways."""

    def save(mod, state, prefix, _meta):
        for key in [k for k in state if k.startswith(prefix) and k[len(prefix):].split(".")[0] in ("weight", "bias")]:
            state[prefix + "linear." + key[len(prefix):]] = state.pop(key)

    def load(mod, state, prefix, *_):
        for key in [k for k in state if k.startswith(prefix + "linear.")]:
            state[prefix + key[len(prefix) + len("linear."):]] = state.pop(key)

    module.register_state_dict_post_hook(save)
    module.register_load_state_dict_pre_hook(load)


class LoRALinear(LoRALayer, nn.Linear):
    """LitGPT's `LoRALinear(in_features, out_features, r, lora_alpha, lora_dropout, **linear_kwargs)`: an
    `nn.Linear` with a LoRA update (none for r=0), state-dict keys `linear.weight`, `lora_A`, `lora_B` as in
    LitGPT. Injection gives a model's plain `nn.Linear` layers this class too (their keys stay the model's)."""

    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: int = 1,
                 lora_dropout: float = 0.0, **kwargs: Any) -> None:
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        self.lora_alpha = lora_alpha
        if r > 0:
            self.init_lora(r, lora_alpha, lora_dropout, None)
        linear_layout_hooks(self)


class LoRAQKVLinear(LoRALinear):
    """LitGPT's `LoRAQKVLinear`: the fused qkv projection with a rank-r update on each part `enable_lora`
    enables ((query, key, value), or one bool for all three)."""

    def __init__(self, in_features: int, out_features: int, head_size: int, n_head: int, n_query_groups: int,
                 r: int = 0, lora_alpha: int = 1, lora_dropout: float = 0.0,
                 enable_lora: Union[bool, tuple[bool, bool, bool]] = False, **kwargs: Any) -> None:
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        self.lora_alpha = lora_alpha
        enabled = (enable_lora,) * 3 if isinstance(enable_lora, bool) else tuple(enable_lora)
        self.enable_lora = enabled
        shape = SimpleNamespace(head_size=head_size, n_head=n_head, n_query_groups=n_query_groups)
        if r > 0 and any(enabled):
            self.init_lora(r, lora_alpha, lora_dropout, qkv_segments(shape, enabled))
        linear_layout_hooks(self)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout for training. On the CPU the keep mask comes from 16-bit random integers, four per 64-bit
    draw (about 3x faster than `F.dropout` there); the drop probability is `p` rounded to a multiple of 1/65536
    and the kept values are scaled to keep the expectation exact. Elsewhere: `F.dropout`."""
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    drops = min(round(p * 65536), 65535)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    keep = words.view(torch.int16)[:n].view(x.shape) >= drops - 32768
    return torch.where(keep, x * (65536 / (65536 - drops)), 0)


def lora_delta(
    A: torch.Tensor, B: torch.Tensor, scale: float, out_features: int, segments: Optional[list[tuple[int, int]]]
) -> torch.Tensor:
    """scale * B A as an (out_features, in) float32 matrix, B's rows and A's blocks placed per part at `segments`
    (None: one part of all rows). An A of one block for several parts (files of this project written before
    qkv parts had their own blocks) is shared by the parts."""
    A, B = lora_blocks(A.float(), B.float(), out_features, segments)
    return (B @ A) * scale


def lora_blocks(
    A: torch.Tensor, B: torch.Tensor, out_features: int, segments: Optional[list[tuple[int, int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's update as one plain low-rank pair: A (parts * r, in) and B (out_features, parts * r) with each
    part's rows in its own columns (`place_blocks`), so that the update is scale * B @ A. An A of one block for
    several parts (files of this project written before qkv parts had their own blocks) is shared by the parts."""
    parts = 1 if segments is None else len(segments)
    if parts > 1 and A.size(0) == B.size(1):
        A = A.repeat(parts, 1)
    if A.size(0) != parts * B.size(1):
        raise ValueError(f"lora_A has {A.size(0)} rows, {parts} part(s) of rank {B.size(1)} need {parts * B.size(1)}")
    return A, place_blocks(B, out_features, segments)


def place_blocks(B: torch.Tensor, out_features: int, segments: Optional[list[tuple[int, int]]]) -> torch.Tensor:
    """`B` (rows, r), the parts' rows stacked, as an (out_features, parts * r) matrix: part j's rows at its
    segment and in columns j*r:(j+1)*r, zero elsewhere (None: B covers every row already); a ValueError when
    the row counts do not fit."""
    expected = out_features if segments is None else sum(b - a for a, b in segments)
    if B.size(0) != expected:
        raise ValueError(f"lora_B has {B.size(0)} rows, the enabled targets of the layer have {expected}")
    if segments is None:
        return B
    r = B.size(1)
    full = B.new_zeros(out_features, len(segments) * r)
    used = 0
    for j, (a, b) in enumerate(segments):
        full[a:b, j * r : (j + 1) * r] = B[used : used + b - a]
        used += b - a
    return full


# --------------------------------------------------------------------------------------------------------
# model-level operations


def inject_lora(model: nn.Module, settings: LoRASettings, router: bool = False) -> list[str]:
    """Gives every layer `settings` targets a LoRA update (in place); returns their module names.

    The injected model computes exactly what it computed before (B starts at zero). Works for every GPT
    built from `litgpt.model`, on any device (meta included) and on bitsandbytes-quantized models.

    Args:
        model: a built `GPT`.
        settings: rank, alpha, dropout and targets.
        router: with `settings.mlp`, also adapt the router of MoE layers (as LitGPT's `lora.GPT` does).
    """
    return inject_lora_sites(lora_sites(model, settings, router), settings)


def inject_lora_sites(targets: list[tuple[LinearSite, Optional[list[tuple[int, int]]]]],
                      settings: LoRASettings) -> list[str]:
    """`inject_lora` for a list of `lora_targets` (of a model, a block or a single layer); returns their names."""
    settings.validate()
    names = []
    for site, segments in targets:
        if isinstance(site.module, LoRALayer) and site.module.r > 0:
            raise ValueError(f"{site.name} already has LoRA weights")
        concrete = LoRAQKVLinear if site.kind == "qkv" else LoRALinear
        extend_module(site.module, LoRALayer, concrete).init_lora(settings.r, settings.alpha, settings.dropout,
                                                                  segments)
        names.append(site.name)
    if not names:
        raise ValueError(f"the model has no layer for the LoRA targets {settings.targets()}")
    return names


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALayer]]:
    """(name, layer) of every LoRA layer of `model` (with r > 0)."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALayer) and module.r > 0:
            yield name, module


def is_lora_key(key: str) -> bool:
    """Whether a state-dict key / parameter name is a LoRA tensor."""
    return key.endswith(".lora_A") or key.endswith(".lora_B") or key in ("lora_A", "lora_B")


def lora_filter(key: str, value: Any = None) -> bool:
    """LitGPT's filter for state dicts: keeps the LoRA tensors (`value` is not needed)."""
    return is_lora_key(key)


def mark_only_lora_as_trainable(model: nn.Module, bias: str = "none") -> list[str]:
    """Freezes every parameter except lora_A / lora_B; returns the names of the trainable ones.

    Args:
        model: a model with LoRA layers.
        bias: LitGPT's option: "none", "all" (every bias trains too) or "lora_only" (the biases of LoRA layers).
    """
    if bias not in ("none", "all", "lora_only"):
        raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {bias!r}")
    lora_layers = {name for name, _ in lora_modules(model)}
    trainable = []
    for name, param in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        is_bias = leaf == "bias" and (bias == "all" or (bias == "lora_only" and owner in lora_layers))
        param.requires_grad_(is_lora_key(name) or is_bias)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def lora_state_dict(model_or_state: Union[nn.Module, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors of a model or a state dict (what `lit_model.pth.lora` holds)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v for k, v in state.items() if is_lora_key(k)}


def merge_lora_weights(model: nn.Module) -> None:
    """Folds every LoRA update into its base weight in place (logits unchanged up to rounding; LitGPT's name).

    A LoRA head whose weight is tied to the token embedding gets its own copy first, so the embedding stays
    as it was.
    """
    head = getattr(model, "lm_head", None)
    wte = getattr(getattr(model, "transformer", None), "wte", None)
    if isinstance(head, LoRALayer) and wte is not None and head.weight is wte.weight and not head.merged:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    for _, module in lora_modules(model):
        module.merge()


def unmerge_lora_weights(model: nn.Module) -> None:
    """Takes merged LoRA updates back out of the base weights."""
    for _, module in lora_modules(model):
        module.unmerge()


def merge_lora_state(
    base_state: dict[str, torch.Tensor],
    lora_state: dict[str, torch.Tensor],
    settings: LoRASettings,
    config: Any,
    source: str = LORA_FILE,
) -> dict[str, torch.Tensor]:
    """The base checkpoint's state dict with every LoRA update folded in: an ordinary `lit_model.pth`.

    Tensors without an update are the base's own (no copy); updated weights are computed in float32 and
    stored in the base weight's dtype. A tied LoRA head gets its own `lm_head.weight`. Reads LitGPT's
    `lit_model.pth.lora` as it is (the same names and shapes).

    Args:
        base_state: the base model's state dict (e.g. memory-mapped from its lit_model.pth).
        lora_state: the lora_A / lora_B tensors of a run.
        settings: the run's LoRA settings (for the scale and the qkv parts).
        config: the model's Config.
        source: named in errors.
    """
    merged = dict(base_state)
    prefixes = sorted({k.rsplit(".", 1)[0] for k in lora_state if is_lora_key(k)})
    if not prefixes:
        raise ValueError(f"{source} holds no LoRA tensors")
    for prefix in prefixes:
        a_key, b_key, w_key = f"{prefix}.lora_A", f"{prefix}.lora_B", f"{prefix}.weight"
        if a_key not in lora_state or b_key not in lora_state:
            raise ValueError(f"{source} has only one of {a_key} and {b_key}")
        weight = base_state.get(w_key)
        if weight is None and w_key == "lm_head.weight":  # a tied head stored only as the embedding
            weight = base_state.get("transformer.wte.weight")
        if weight is None:
            raise ValueError(f"{source} has LoRA weights for {prefix}, which the base checkpoint does not have")
        segments = qkv_segments(config, settings) if prefix.endswith("attn.qkv") else None
        A, B = lora_state[a_key], lora_state[b_key]
        if A.dim() != 2 or A.size(1) != weight.size(1) or B.dim() != 2:
            raise ValueError(
                f"{source}: {prefix} has lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)}, which do not fit "
                f"its {tuple(weight.shape)} weight"
            )
        try:
            delta = lora_delta(A, B, settings.scale, weight.size(0), segments)
        except ValueError as err:
            raise ValueError(f"{source}: {prefix}: {err} (were the lora_* settings changed?)") from None
        merged[w_key] = (weight.float() + delta).to(weight.dtype)
    return merged


# --------------------------------------------------------------------------------------------------------
# LitGPT 0.5's PEFT checkpoint layout (LoRA, Adapter, Adapter v2): the one key mapping


def from_litgpt_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict in LitGPT 0.5's PEFT layout as this project's: the trainable-tensor files' {"model": ...}
    unwrapped, `X.linear.weight` / `.bias` (LitGPT's LoRA and Adapter v2 layers) -> `X.weight` / `.bias`,
    `attn.adapter_wte.weight` -> `attn.adapter_prefix`, `attn.gating_factor` (1, 1, n_head, 1) ->
    `attn.adapter_gate` (n_head,). lora_A / lora_B, adapter_bias / adapter_scale and every other key keep their
    names and shapes; a state dict in our layout comes back unchanged."""
    if set(state) == {"model"} and isinstance(state["model"], dict):
        state = state["model"]
    out = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if leaf in ("weight", "bias") and (head == "linear" or head.endswith(".linear")):
            key = head[: -len("linear")] + leaf
        elif key.endswith("adapter_wte.weight"):
            key = key[: -len("adapter_wte.weight")] + "adapter_prefix"
        elif leaf == "gating_factor":
            key, value = head + ".adapter_gate" if head else "adapter_gate", value.reshape(-1)
        out[key] = value
    return out


def to_litgpt_state_dict(state: dict[str, torch.Tensor], linear_names: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The inverse of `from_litgpt_state_dict` for a model's state dict: the adapter tensors under LitGPT's
    names and shapes, and the weights and biases of the `linear_names` layers as `X.linear.weight` (the layers
    LitGPT's `lora.GPT` / `adapter_v2.GPT` wrap: every linear of the model)."""
    wrapped = {f"{name}.{leaf}" for name in linear_names for leaf in ("weight", "bias")}
    out = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if key in wrapped:
            key = f"{head}.linear.{leaf}"
        elif leaf == "adapter_prefix":
            key = f"{head}.adapter_wte.weight"
        elif leaf == "adapter_gate":
            key, value = f"{head}.gating_factor", value.reshape(1, 1, -1, 1)
        out[key] = value
    return out


class LitGPTLayout:
    """Mixin of LitGPT's PEFT model classes: `state_dict()` in LitGPT's key layout (`to_litgpt_state_dict`);
    `load_state_dict` takes LitGPT's layout, this project's, or a plain base checkpoint (`strict` then
    reports the PEFT tensors the file lacks, as LitGPT does)."""

    wraps_linears = True
    """Whether LitGPT wraps every linear (`X.linear.weight`; LoRA, Adapter v2) or none (Adapter)."""

    @staticmethod
    def untied(config: Any) -> Any:
        """`config` with its own head matrix: LitGPT's model classes never share it with the embedding (their
        checkpoints hold two matrices, which differ once either was trained)."""
        return dataclasses.replace(config, tie_embeddings=False) if config.tie_embeddings else config

    def use_litgpt_layout(self) -> None:
        """Registers the two state-dict hooks (call at the end of `__init__`)."""
        self.register_state_dict_post_hook(_save_litgpt_layout)
        self.register_load_state_dict_pre_hook(_load_litgpt_layout)


def _save_litgpt_layout(module: nn.Module, state: dict, prefix: str, _meta: Any) -> None:
    names = [prefix + site.name for site in linear_sites(module)] if module.wraps_linears else []
    mine = {k: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    state.update(to_litgpt_state_dict(mine, names))


def _load_litgpt_layout(module: nn.Module, state: dict, prefix: str, *_: Any) -> None:
    mine = {k: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    state.update(from_litgpt_state_dict(mine))


# --------------------------------------------------------------------------------------------------------
# LitGPT's `litgpt.lora` model classes: the generic model with LoRA injected per the config's lora_* fields


@dataclass
class Config(BaseConfig):
    """LitGPT's `lora.Config`: a model `Config` with the LoRA fields (lora_r=0 or no target: no LoRA)."""

    lora_r: int = 0
    lora_alpha: int = 1
    lora_dropout: float = 0.0
    lora_query: bool = False
    lora_key: bool = False
    lora_value: bool = False
    lora_projection: bool = False
    lora_mlp: bool = False
    lora_head: bool = False

    @property
    def lora_settings(self) -> Optional[LoRASettings]:
        """The LoRA fields as settings; None when they enable no LoRA."""
        settings = LoRASettings(**{f.name: getattr(self, "lora_" + f.name) for f in fields(LoRASettings)})
        if self.lora_r < 1 or not settings.targets():
            return None
        return settings.validate()


def inject_per_config(module: nn.Module, config: Any, sites: Iterable[LinearSite]) -> None:
    """Injects LoRA into `sites` of `module` as `config`'s lora_* fields say (nothing when they enable none)."""
    settings = getattr(config, "lora_settings", None)
    if settings is not None:
        targets = lora_targets(sites, settings, config, router=True)
        if targets:
            inject_lora_sites(targets, settings)


class GPT(LitGPTLayout, BaseGPT):
    """LitGPT's `lora.GPT(config)`: `litgpt.model.GPT` with LoRA injected per `config.lora_*` (the MoE router
    included with lora_mlp, as in LitGPT); state dicts in LitGPT's layout; loads LitGPT's, ours, or a plain base
    checkpoint (strict=False for the LoRA tensors it lacks)."""

    def __init__(self, config: Config) -> None:
        super().__init__(self.untied(config))
        inject_per_config(self, config, linear_sites(self))
        self.use_litgpt_layout()

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "GPT":
        return cls(Config.from_name(name, **kwargs))


class Block(BaseBlock):
    """LitGPT's `lora.Block(config, block_idx)`: a model block with LoRA injected per `config.lora_*`."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        inject_per_config(self, config, block_sites(self))


class CausalSelfAttention(BaseCausalSelfAttention):
    """LitGPT's `lora.CausalSelfAttention(config, block_idx)`: LoRA on qkv (its enabled parts) and proj."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        inject_per_config(self, config, attention_sites(self))


class GptNeoxMLP(BaseGptNeoxMLP):
    """LitGPT's `lora.GptNeoxMLP(config)`: LoRA on its linears with lora_mlp."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        inject_per_config(self, config, mlp_sites(self))


class LLaMAMLP(BaseLLaMAMLP):
    """LitGPT's `lora.LLaMAMLP(config, intermediate_size)`: LoRA on its linears with lora_mlp."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__(config, intermediate_size)
        inject_per_config(self, config, mlp_sites(self))


class GemmaMLP(BaseGemmaMLP):
    """LitGPT's `lora.GemmaMLP(config, intermediate_size)`: LoRA on its linears with lora_mlp."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__(config, intermediate_size)
        inject_per_config(self, config, mlp_sites(self))


class LLaMAMoE(BaseLLaMAMoE):
    """LitGPT's `lora.LLaMAMoE(config)`: LoRA on the router and every expert's linears with lora_mlp."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        inject_per_config(self, config, mlp_sites(self))


def create_lora_linear(config: Config, in_size: int, out_size: int, bias: Optional[Union[float, bool]] = None,
                       use_r: Optional[bool] = None) -> LoRALinear:
    """LitGPT's factory: a `LoRALinear` with the config's rank (only with use_r=True), alpha and dropout, and a
    bias as `config.bias` says unless `bias` is given."""
    return LoRALinear(in_size, out_size, r=config.lora_r if use_r else 0, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, bias=config.bias if bias is None else bool(bias))
