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

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def extend_module(module: nn.Module, mixin: type) -> nn.Module:
    """Switches `module` to a subclass of its own class that also derives from `mixin` (made once per pair).

    The module keeps its parameters, buffers, hooks and names; `mixin` methods come first in the lookup
    order, so a mixin's `forward` can call `super().forward`. A module already extended by `mixin` is left
    alone.
    """
    base = type(module)
    if isinstance(module, mixin):
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
    """"qkv", "projection", "mlp" or "head"."""
    module: nn.Module


def linear_sites(model: nn.Module) -> Iterator[LinearSite]:
    """Every linear layer of a GPT that PEFT methods may adapt, found by its place in the generic model:
    `attn.qkv`, `attn.proj`, each linear under `mlp` (any MLP class; not a MoE router, the `gate` beside
    `experts`), and `lm_head`."""
    for i, block in enumerate(model.transformer.h):
        prefix = f"transformer.h.{i}."
        attn = block.attn
        if is_linear_like(getattr(attn, "qkv", None)):
            yield LinearSite(prefix + "attn.qkv", "qkv", attn.qkv)
        if is_linear_like(getattr(attn, "proj", None)):
            yield LinearSite(prefix + "attn.proj", "projection", attn.proj)
        for parent_name, parent in block.mlp.named_modules():
            for child_name, child in parent.named_children():
                if not is_linear_like(child) or (child_name == "gate" and hasattr(parent, "experts")):
                    continue
                full = f"{parent_name}.{child_name}" if parent_name else child_name
                yield LinearSite(f"{prefix}mlp.{full}", "mlp", child)
    if is_linear_like(getattr(model, "lm_head", None)):
        yield LinearSite("lm_head", "head", model.lm_head)


def qkv_segments(config: Any, settings: LoRASettings) -> Optional[list[tuple[int, int]]]:
    """Output row ranges of the fused qkv that get a LoRA update ([q | k | v] layout); None for all rows."""
    hs, nh, ng = config.head_size, config.n_head, config.n_query_groups
    sizes = {"query": nh * hs, "key": ng * hs, "value": ng * hs}
    if all(getattr(settings, part) for part in sizes):
        return None
    segments, start = [], 0
    for part, size in sizes.items():
        if getattr(settings, part):
            segments.append((start, start + size))
        start += size
    return segments


def lora_sites(model: nn.Module, settings: LoRASettings) -> list[tuple[LinearSite, Optional[list[tuple[int, int]]]]]:
    """The layers `settings` targets, each with its updated output rows (None: all)."""
    out = []
    for site in linear_sites(model):
        if site.kind == "qkv":
            if settings.query or settings.key or settings.value:
                out.append((site, qkv_segments(model.config, settings)))
        elif getattr(settings, site.kind):
            out.append((site, None))
    return out


# --------------------------------------------------------------------------------------------------------
# the LoRA layer


class LoRALinear:
    """Mixin of a LoRA layer: `extend_module(linear, LoRALinear)` then `init_lora(...)`.

    forward(x) = base(x) + scale * B A dropout(x), the update reaching the output rows in `lora_segments` only
    (all rows when None). `merge()` folds the update into the base weight (full-precision bases only).
    """

    lora_A: nn.Parameter
    lora_B: nn.Parameter

    def init_lora(self, r: int, alpha: float, dropout: float, segments: Optional[list[tuple[int, int]]]) -> None:
        """Adds lora_A (r, in), kaiming-uniform, and lora_B (rows, r), zero, in float32 on the weight's device."""
        rows = self.out_features if segments is None else sum(b - a for a, b in segments)
        device = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(rows, r, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own initialisation
        self.lora_scale = alpha / r
        self.lora_dropout = float(dropout)
        self.lora_segments = segments
        self.lora_merged = False

    def lora_update(self, x: torch.Tensor) -> torch.Tensor:
        """scale * dropout(x) A^T B^T: (..., out_features), zero outside the enabled rows (rank-r product first)."""
        if self.lora_dropout > 0 and self.training:
            x = dropout(x, self.lora_dropout)
        if not torch.is_autocast_enabled(x.device.type):  # under autocast both products run in its dtype
            x = x.to(self.lora_A.dtype)
        # lora_B with zero rows where the output gets no update: the result has the output's full width (and
        # exact zeros there), so it is added in one go, without slicing the base output
        B = place_rows(self.lora_B, self.out_features, self.lora_segments)
        return F.linear(F.linear(x, self.lora_A) * self.lora_scale, B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lora_merged:
            return super().forward(x)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type) and x.is_floating_point():
            # the cast autocast makes for the base layer anyway, made once for both branches
            x = x.to(torch.get_autocast_dtype(device_type))
        y = super().forward(x)
        return y + self.lora_update(x).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The update as a full (out, in) float32 matrix (zero rows outside the segments)."""
        return lora_delta(self.lora_A.detach(), self.lora_B.detach(), self.lora_scale, self.out_features,
                          self.lora_segments)

    def merge(self) -> None:
        """Adds the update into the base weight (the forward pass then skips it)."""
        self._fold(+1)

    def unmerge(self) -> None:
        """Takes a merged update back out of the base weight."""
        self._fold(-1)

    def _fold(self, sign: int) -> None:
        if self.lora_merged == (sign > 0):
            return
        weight = self.weight
        if not weight.is_floating_point():
            raise ValueError(
                f"cannot merge LoRA into {weight.dtype} (quantized) weights; merge the run folder into the "
                "full-precision base checkpoint with `litgpt merge_lora` instead"
            )
        with torch.no_grad():
            weight.data = (weight.float() + sign * self.delta_weight()).to(weight.dtype)
        self.lora_merged = sign > 0


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
    """scale * B A as an (out_features, in) float32 matrix, B's rows placed at `segments` (None: all rows)."""
    return place_rows((B.float() @ A.float()) * scale, out_features, segments)


def place_rows(rows: torch.Tensor, out_features: int, segments: Optional[list[tuple[int, int]]]) -> torch.Tensor:
    """`rows` (n, k) put at the row ranges `segments` of an (out_features, k) zero matrix (None: rows already
    covers every row); a ValueError when the counts do not fit."""
    expected = out_features if segments is None else sum(b - a for a, b in segments)
    if rows.size(0) != expected:
        raise ValueError(f"lora_B has {rows.size(0)} rows, the enabled targets of the layer have {expected}")
    if segments is None:
        return rows
    full = rows.new_zeros(out_features, rows.size(1))
    used = 0
    for a, b in segments:
        full[a:b] = rows[used : used + b - a]
        used += b - a
    return full


# --------------------------------------------------------------------------------------------------------
# model-level operations


def inject_lora(model: nn.Module, settings: LoRASettings) -> list[str]:
    """Gives every layer `settings` targets a LoRA update (in place); returns their module names.

    The injected model computes exactly what it computed before (B starts at zero). Works for every GPT
    built from `litgpt.model`, on any device (meta included) and on bitsandbytes-quantized models.

    Args:
        model: a built `GPT`.
        settings: rank, alpha, dropout and targets.
    """
    settings.validate()
    names = []
    for site, segments in lora_sites(model, settings):
        if isinstance(site.module, LoRALinear):
            raise ValueError(f"{site.name} already has LoRA weights")
        extend_module(site.module, LoRALinear).init_lora(settings.r, settings.alpha, settings.dropout, segments)
        names.append(site.name)
    if not names:
        raise ValueError(f"the model has no layer for the LoRA targets {settings.targets()}")
    return names


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(name, layer) of every LoRA layer of `model`."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def is_lora_key(key: str) -> bool:
    """Whether a state-dict key / parameter name is a LoRA tensor."""
    return key.endswith(".lora_A") or key.endswith(".lora_B")


def lora_filter(key: str, value: Any = None) -> bool:
    """Filter for state dicts: keeps the LoRA tensors (LitGPT's name for `is_lora_key`)."""
    return is_lora_key(key)


def mark_only_lora_as_trainable(model: nn.Module) -> list[str]:
    """Freezes every parameter except lora_A / lora_B; returns the names of the trainable ones."""
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_lora_key(name))
        if param.requires_grad:
            trainable.append(name)
    return trainable


def lora_state_dict(model_or_state: Union[nn.Module, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors of a model or a state dict (what `lit_model.pth.lora` holds)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v for k, v in state.items() if is_lora_key(k)}


def merge_lora(model: nn.Module) -> None:
    """Folds every LoRA update into its base weight in place (logits unchanged up to rounding).

    A LoRA head whose weight is tied to the token embedding gets its own copy first, so the embedding stays
    as it was.
    """
    head = getattr(model, "lm_head", None)
    wte = getattr(getattr(model, "transformer", None), "wte", None)
    if isinstance(head, LoRALinear) and wte is not None and head.weight is wte.weight and not head.lora_merged:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    for _, module in lora_modules(model):
        module.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Takes merged LoRA updates back out of the base weights."""
    for _, module in lora_modules(model):
        module.unmerge()


def merge_lora_weights(
    base_state: dict[str, torch.Tensor],
    lora_state: dict[str, torch.Tensor],
    settings: LoRASettings,
    config: Any,
    source: str = LORA_FILE,
) -> dict[str, torch.Tensor]:
    """The base checkpoint's state dict with every LoRA update folded in: an ordinary `lit_model.pth`.

    Tensors without an update are the base's own (no copy); updated weights are computed in float32 and
    stored in the base weight's dtype. A tied LoRA head gets its own `lm_head.weight`.

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
        if A.dim() != 2 or A.size(1) != weight.size(1) or B.dim() != 2 or B.size(1) != A.size(0):
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
