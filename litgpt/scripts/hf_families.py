"""One table per Hugging Face architecture ("family"), used by both conversion directions.

A family knows three things:

* how its `config.json` maps to a `Config` (`config_from_hf`) and back (`config_to_hf`);
* how its parameter names and tensor layouts map to ours (`weight_layout` -> `WeightLayout`, turned into
  `Rule`s by `weight_rules`);
* which alternative spellings of its checkpoints exist (key aliases, fused MoE experts, buffers to skip).

Import picks the family from `config.json`'s `model_type`. Export picks, from the Config's explicit fields
only, the first family in `EXPORT_ORDER` (most specific first) that represents the Config exactly: the
Config goes through `config_to_hf` and back through `config_from_hf` and must come out with the same
`architecture_signature`. So every family is described once and checked both ways.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from litgpt.config import Config


class Unrepresentable(ValueError):
    """A config uses a feature the family (or our model) cannot express."""


# --------------------------------------------------------------------------------------------------
# reading config.json
_MISSING = object()


class HFConfig:
    """Read access to a `config.json` dict, falling back to the family's transformers defaults."""

    def __init__(self, data: dict, family: "Family") -> None:
        self.data = data
        self.family = family

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is not _MISSING:
            return default
        return self.family.defaults.get(key)

    def first(self, *keys: str, default: Any = _MISSING) -> Any:
        """The value of the first of `keys` present in config.json (else the default of the first key)."""
        for key in keys:
            if key in self.data and self.data[key] is not None:
                return self.data[key]
        return self.get(keys[0], default)

    def require(self, *keys: str) -> Any:
        """A structural value config.json must hold (under one of `keys`)."""
        for key in keys:
            if self.data.get(key) is not None:
                return self.data[key]
        raise ValueError(f"config.json of model_type {self.family.model_type!r} lacks {keys[0]!r}")


# --------------------------------------------------------------------------------------------------
# activations
_GELU_FROM_HF = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}
_GELU_TO_HF = {"none": "gelu", "tanh": "gelu_pytorch_tanh"}


def _gelu_from_hf(act: Optional[str], where: str) -> str:
    if act not in _GELU_FROM_HF:
        raise Unrepresentable(f"{where}={act!r} is not supported (expected one of {', '.join(_GELU_FROM_HF)})")
    return _GELU_FROM_HF[act]


def _gelu_to_hf(cfg: Config) -> str:
    if cfg.gelu_approximate not in _GELU_TO_HF:
        raise Unrepresentable(f"gelu_approximate={cfg.gelu_approximate!r}")
    return _GELU_TO_HF[cfg.gelu_approximate]


def _require_silu(h: HFConfig, key: str = "hidden_act") -> None:
    act = h.get(key)
    if act not in ("silu", "swish"):
        raise Unrepresentable(f"{key}={act!r} is not supported for a SwiGLU MLP (expected 'silu')")


# --------------------------------------------------------------------------------------------------
# RoPE
def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_parameters(h: HFConfig, nested: Optional[str] = None, theta_keys=("rope_theta",),
                    partial_keys=("partial_rotary_factor",), scaling_key: Optional[str] = "rope_scaling") -> dict:
    """RoPE settings from the v5 `rope_parameters` dict or the legacy top-level keys, as one flat dict
    with `rope_type`, `rope_theta` and `partial_rotary_factor` always set."""
    params = h.data.get("rope_parameters")
    if isinstance(params, dict) and nested is not None:
        params = params.get(nested)
    out = dict(params) if isinstance(params, dict) and params else {}
    if not out and scaling_key and isinstance(h.data.get(scaling_key), dict):
        out = dict(h.data[scaling_key])
    rope_type = out.pop("type", None)
    out["rope_type"] = out.get("rope_type") or rope_type or "default"
    if out.get("rope_theta") is None:
        out["rope_theta"] = h.first(*theta_keys)
    if out.get("partial_rotary_factor") is None:
        out["partial_rotary_factor"] = h.first(*partial_keys) if partial_keys else 1.0
    if out["partial_rotary_factor"] is None:
        out["partial_rotary_factor"] = 1.0
    return out


def rope_adjustments_from_hf(params: dict, max_position_embeddings: Optional[int]) -> Optional[dict]:
    """Our `rope_adjustments` for a transformers RoPE parameter dict (None for plain RoPE)."""
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        return None
    if rope_type == "linear":
        return {"factor": float(params["factor"])}
    original = params.get("original_max_position_embeddings") or max_position_embeddings
    if rope_type == "llama3":
        return {
            "factor": float(params["factor"]),
            "low_freq_factor": float(params["low_freq_factor"]),
            "high_freq_factor": float(params["high_freq_factor"]),
            "original_max_seq_len": int(original),
        }
    if rope_type == "yarn":
        factor = params.get("factor")
        if factor is None:
            factor = max_position_embeddings / original
        factor = float(factor)
        adj = {
            "rope_type": "yarn",
            "factor": factor,
            "original_max_seq_len": int(original),
            "beta_fast": float(params.get("beta_fast") or 32.0),
            "beta_slow": float(params.get("beta_slow") or 1.0),
        }
        attention_factor = params.get("attention_factor")
        if attention_factor is None and params.get("mscale") and params.get("mscale_all_dim"):
            attention_factor = _yarn_mscale(factor, params["mscale"]) / _yarn_mscale(factor, params["mscale_all_dim"])
        if attention_factor is not None:
            adj["attention_factor"] = float(attention_factor)
        if params.get("truncate", True) is False:
            adj["truncate"] = False
        return adj
    raise Unrepresentable(f"rope_type {rope_type!r} is not supported (supported: default, linear, llama3, yarn)")


def _effective_rope(cfg: Config) -> tuple[int, Optional[dict]]:
    """(condense ratio, adjustments) with linear position interpolation folded into one linear factor."""
    adj = dict(cfg.rope_adjustments) if cfg.rope_adjustments else None
    ratio = cfg.rope_condense_ratio
    linear = adj is None or adj.get("rope_type", "llama3" if "low_freq_factor" in adj else "linear") == "linear"
    if ratio != 1 and linear:
        factor = ratio * float(adj["factor"]) if adj else float(ratio)
        return 1, {"rope_type": "linear", "factor": factor}
    return ratio, adj


def _canonical_adjustments(adj: Optional[dict]) -> Optional[tuple]:
    if not adj:
        return None
    rope_type = adj.get("rope_type", "llama3" if "low_freq_factor" in adj else "linear")
    factor = float(adj["factor"])
    if rope_type == "linear":
        return ("linear", factor)
    if rope_type == "llama3":
        return ("llama3", factor, float(adj["low_freq_factor"]), float(adj["high_freq_factor"]),
                int(adj["original_max_seq_len"]))
    if rope_type == "yarn":
        attention = adj.get("attention_factor") or _yarn_mscale(factor)
        return ("yarn", factor, int(adj["original_max_seq_len"]), float(adj.get("beta_fast", 32.0)),
                float(adj.get("beta_slow", 1.0)), round(float(attention), 12), bool(adj.get("truncate", True)))
    return (rope_type, tuple(sorted(adj.items())))


def rope_scaling_to_hf(cfg: Config) -> Optional[dict]:
    """The legacy `rope_scaling` dict transformers reads for the Config's RoPE frequency scaling."""
    ratio, adj = _effective_rope(cfg)
    if ratio != 1:
        raise Unrepresentable(f"rope_condense_ratio={ratio} combined with {cfg.rope_adjustments}")
    canon = _canonical_adjustments(adj)
    if canon is None:
        return None
    if canon[0] == "linear":
        return {"rope_type": "linear", "factor": canon[1]}
    if canon[0] == "llama3":
        return {"rope_type": "llama3", "factor": canon[1], "low_freq_factor": canon[2], "high_freq_factor": canon[3],
                "original_max_position_embeddings": canon[4]}
    if canon[0] == "yarn":
        out = {"rope_type": "yarn", "factor": canon[1], "original_max_position_embeddings": canon[2],
               "beta_fast": canon[3], "beta_slow": canon[4]}
        if adj.get("attention_factor") is not None:
            out["attention_factor"] = float(adj["attention_factor"])
        if not canon[6]:
            out["truncate"] = False
        return out
    raise Unrepresentable(f"rope_adjustments {adj}")


def _theta(value: Any) -> Any:
    value = float(value)
    return int(value) if value.is_integer() else value


# --------------------------------------------------------------------------------------------------
# the architecture signature: what a Config computes, independent of how it is spelled
def architecture_signature(cfg: Config) -> dict:
    """Every Config behaviour that changes the model's function or its parameters, normalised so that
    two Configs building the same network compare equal (e.g. `sliding_window_indices` None vs all 1)."""
    moe = cfg.mlp_class_name == "LLaMAMoE"
    sig: dict[str, Any] = dict(
        n_layer=cfg.n_layer,
        n_embd=cfg.n_embd,
        padded_vocab_size=cfg.padded_vocab_size,
        n_head=cfg.n_head,
        head_size=cfg.head_size,
        n_query_groups=cfg.n_query_groups,
        norm_class_name=cfg.norm_class_name,
        norm_eps=float(cfg.norm_eps),
        norm_affine=cfg.norm_affine if cfg.norm_class_name == "LayerNorm" else True,
        rmsnorm_add_unit_offset=cfg.rmsnorm_add_unit_offset if cfg.norm_class_name == "RMSNorm" else False,
        norm_1=cfg.norm_1,
        norm_2=None if (cfg.parallel_residual and cfg.shared_attention_norm) else cfg.norm_2,
        post_attention_norm=cfg.post_attention_norm,
        post_mlp_norm=cfg.post_mlp_norm,
        norm_qk=(cfg.norm_qk_type if cfg.norm_qk else None),
        parallel_residual=cfg.parallel_residual,
        shared_attention_norm=cfg.shared_attention_norm if cfg.parallel_residual else False,
        bias=cfg.bias,
        qkv_bias=cfg.bias or cfg.attn_bias,
        attention_scale=float(cfg.attention_scores_scalar or cfg.head_size),
        windows=tuple(cfg.sliding_window_size if cfg.is_sliding_layer(i) else None for i in range(cfg.n_layer)),
        attention_logit_softcapping=cfg.attention_logit_softcapping,
        final_logit_softcapping=cfg.final_logit_softcapping,
        rope_n_elem=cfg.rope_n_elem,
        mlp_class_name=cfg.mlp_class_name,
        scale_embeddings=cfg.scale_embeddings,
        lm_head_bias=cfg.lm_head_bias,
        learned_pos_embedding=cfg.learned_pos_embedding,
        tie_embeddings=cfg.tie_embeddings,
    )
    if cfg.rope_n_elem > 0:
        ratio, adj = _effective_rope(cfg)
        local = tuple(cfg.uses_local_rope(i) for i in range(cfg.n_layer))
        sig.update(rope_base=float(cfg.rope_base), rope_condense_ratio=ratio,
                   rope_adjustments=_canonical_adjustments(adj), rope_local=local,
                   rope_local_base=float(cfg.rope_local_base_freq) if any(local) else None)
    if cfg.learned_pos_embedding:
        sig["block_size"] = cfg.block_size
    if cfg.mlp_class_name in ("GptNeoxMLP", "GemmaMLP"):
        sig["gelu_approximate"] = cfg.gelu_approximate
    if moe:
        sig.update(n_expert=cfg.n_expert, n_expert_per_token=cfg.n_expert_per_token,
                   expert_size=cfg.moe_intermediate_size or cfg.intermediate_size)
    else:
        sig["intermediate_size"] = cfg.intermediate_size
    return sig


def signature_diff(a: Config, b: Config) -> list[str]:
    """Names of the signature entries in which two configs differ."""
    sa, sb = architecture_signature(a), architecture_signature(b)
    return [k for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]


# --------------------------------------------------------------------------------------------------
# weights
@dataclass
class Rule:
    """Converts a group of Hugging Face tensors to a group of our tensors and back."""

    hf: tuple[str, ...]
    lit: tuple[str, ...]
    to_lit: Callable[[list[torch.Tensor]], list[torch.Tensor]]
    to_hf: Callable[[list[torch.Tensor]], list[torch.Tensor]]
    canonical: bool = True
    """False: an alternative spelling accepted on import only (e.g. MoE experts fused into 3-D tensors)."""


@dataclass
class WeightLayout:
    """Where a family keeps each of our modules. Module names are relative to a block inside layers."""

    top: dict[str, str]
    layer_prefix: str
    layer: dict[str, str]
    qkv: Any
    """(q, k, v) module names, or one fused module name."""
    qkv_groups: Optional[tuple[int, int]] = None
    """For a fused qkv: None when stored [q | k | v]; (groups, queries per group) when stored grouped as
    (groups, queries per group + 2, head_size) (GPT-NeoX: (n_head, 1); Falcon 40B: (n_kv, n_head / n_kv))."""
    gate_up: Optional[str] = None
    """Fused module holding [fc_1 | fc_2] (Phi-3)."""
    experts: Optional[str] = None
    """Module holding the MoE experts; per-expert modules below it are named by `expert`."""
    expert: dict[str, str] = field(default_factory=dict)
    transposed: frozenset = frozenset()
    """Our modules whose HF weights are stored transposed (GPT-2's Conv1D)."""


def _split_rows(sizes: list[int]) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    def split(ts: list[torch.Tensor]) -> list[torch.Tensor]:
        (t,) = ts
        if t.shape[0] != sum(sizes):
            raise ValueError(f"has {t.shape[0]} rows, expected {sum(sizes)}")
        return list(t.split(sizes, dim=0))

    return split


def _cat_rows(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.cat(ts, dim=0)]


def _grouped_to_concat(groups: int, per_group: int, hs: int):
    def convert(ts: list[torch.Tensor]) -> list[torch.Tensor]:
        (t,) = ts
        rest = t.shape[1:]
        t = t.reshape(groups, per_group + 2, hs, *rest)
        q = t[:, :per_group].reshape(groups * per_group * hs, *rest)
        k = t[:, per_group].reshape(groups * hs, *rest)
        v = t[:, per_group + 1].reshape(groups * hs, *rest)
        return [torch.cat((q, k, v), dim=0)]

    return convert


def _concat_to_grouped(groups: int, per_group: int, hs: int):
    def convert(ts: list[torch.Tensor]) -> list[torch.Tensor]:
        (t,) = ts
        rest = t.shape[1:]
        q, k, v = t.split((groups * per_group * hs, groups * hs, groups * hs), dim=0)
        parts = (q.reshape(groups, per_group, hs, *rest), k.reshape(groups, 1, hs, *rest),
                 v.reshape(groups, 1, hs, *rest))
        return [torch.cat(parts, dim=1).reshape(groups * (per_group + 2) * hs, *rest)]

    return convert


def _identity(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(ts)


def _transpose(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.t() for t in ts]


def weight_rules(layout: WeightLayout, cfg: Config, lit_keys: list[str]) -> list[Rule]:
    """The rules converting every parameter of `GPT(cfg)` (named by `lit_keys`, in order)."""
    rules: list[Rule] = []
    nh, ng, hs = cfg.n_head, cfg.n_query_groups, cfg.head_size
    done: set[str] = set()

    def hf_module(table: dict[str, str], module: str) -> str:
        if module not in table:
            raise Unrepresentable(f"module {module!r} has no counterpart in this architecture")
        return table[module]

    for key in lit_keys:
        if key in done:
            continue
        m = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)\.(weight|bias)", key)
        if m is None:
            module, param = key.rsplit(".", 1)
            rules.append(Rule((f"{hf_module(layout.top, module)}.{param}",), (key,), _identity, _identity))
            continue
        i, module, param = int(m[1]), m[2], m[3]
        pre, lpre = layout.layer_prefix.format(i=i), f"transformer.h.{i}."
        if module == "attn.qkv":
            sizes = [nh * hs, ng * hs, ng * hs]
            if isinstance(layout.qkv, tuple):
                names = tuple(f"{pre}{name}.{param}" for name in layout.qkv)
                rules.append(Rule(names, (key,), _cat_rows, _split_rows(sizes)))
            elif layout.qkv_groups is not None:
                g, per = layout.qkv_groups
                rules.append(Rule((f"{pre}{layout.qkv}.{param}",), (key,), _grouped_to_concat(g, per, hs),
                                  _concat_to_grouped(g, per, hs)))
            else:
                fn = _transpose if ("attn.qkv" in layout.transposed and param == "weight") else _identity
                rules.append(Rule((f"{pre}{layout.qkv}.{param}",), (key,), fn, fn))
        elif layout.gate_up and module in ("mlp.fc_1", "mlp.fc_2"):
            pair = (f"{lpre}mlp.fc_1.{param}", f"{lpre}mlp.fc_2.{param}")
            done.update(pair)
            size = cfg.intermediate_size
            rules.append(Rule((f"{pre}{layout.gate_up}.{param}",), pair, _split_rows([size, size]), _cat_rows))
        elif module.startswith("mlp.experts."):
            _, _, j, sub = module.split(".")
            hf_name = f"{pre}{layout.experts}.{j}.{hf_module(layout.expert, sub)}.{param}"
            rules.append(Rule((hf_name,), (key,), _identity, _identity))
        else:
            hf_name = f"{pre}{hf_module(layout.layer, module)}.{param}"
            if module in layout.transposed and param == "weight":
                rules.append(Rule((hf_name,), (key,), _transpose, _transpose))
            else:
                rules.append(Rule((hf_name,), (key,), _identity, _identity))

    if cfg.mlp_class_name == "LLaMAMoE" and layout.experts:
        rules.extend(_fused_expert_rules(layout, cfg))
    return rules


def _fused_expert_rules(layout: WeightLayout, cfg: Config) -> list[Rule]:
    """transformers 5 keeps experts as 3-D tensors: gate_up_proj (E, 2I, C) and down_proj (E, C, I)."""
    E = cfg.n_expert
    size = cfg.moe_intermediate_size or cfg.intermediate_size
    rules = []
    for i in range(cfg.n_layer):
        pre, lpre = layout.layer_prefix.format(i=i), f"transformer.h.{i}.mlp.experts"
        gate_up = tuple(f"{lpre}.{j}.{m}.weight" for m in ("fc_1", "fc_2") for j in range(E))
        down = tuple(f"{lpre}.{j}.proj.weight" for j in range(E))

        def split_gate_up(ts, E=E, size=size):
            (t,) = ts
            if t.dim() != 3 or t.shape[0] != E or t.shape[1] != 2 * size:
                raise ValueError(f"has shape {tuple(t.shape)}, expected ({E}, {2 * size}, n_embd)")
            return [t[j, :size] for j in range(E)] + [t[j, size:] for j in range(E)]

        def stack_gate_up(ts, E=E):
            return [torch.stack([torch.cat((ts[j], ts[E + j]), dim=0) for j in range(E)])]

        def unstack(ts, E=E):
            (t,) = ts
            if t.dim() != 3 or t.shape[0] != E:
                raise ValueError(f"has shape {tuple(t.shape)}, expected {E} experts stacked")
            return [t[j] for j in range(E)]

        rules.append(Rule((f"{pre}{layout.experts}.gate_up_proj",), gate_up, split_gate_up, stack_gate_up,
                          canonical=False))
        rules.append(Rule((f"{pre}{layout.experts}.down_proj",), down, unstack, lambda ts: [torch.stack(ts)],
                          canonical=False))
    return rules


# --------------------------------------------------------------------------------------------------
# families
def _base(h: HFConfig, *, head_dim: bool = True) -> dict:
    """Config fields every family reads the same way, with neutral values for the behaviour flags."""
    n_embd = int(h.require("hidden_size", "n_embd", "d_model"))
    n_head = int(h.require("num_attention_heads", "n_head"))
    size = h.get("head_dim") if head_dim else None
    vocab = int(h.require("vocab_size"))
    n_query_groups = h.get("num_key_value_heads")
    block_size = h.first("max_position_embeddings", "n_positions")
    return dict(
        n_layer=int(h.require("num_hidden_layers", "n_layer")),
        n_embd=n_embd,
        n_head=n_head,
        head_size=int(size) if size else n_embd // n_head,
        n_query_groups=int(n_query_groups) if n_query_groups else n_head,
        vocab_size=vocab,
        padded_vocab_size=vocab,
        block_size=int(block_size) if block_size else 4096,
        tie_embeddings=bool(h.get("tie_word_embeddings")),
        parallel_residual=False,
        shared_attention_norm=False,
        bias=False,
        attn_bias=False,
        lm_head_bias=False,
        rotary_percentage=1.0,
        norm_qk=False,
    )


def _base_to_hf(cfg: Config, *, head_dim: bool = True) -> dict:
    out = dict(
        hidden_size=cfg.n_embd,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_query_groups,
        vocab_size=cfg.padded_vocab_size,
        max_position_embeddings=cfg.block_size,
        tie_word_embeddings=cfg.tie_embeddings,
    )
    if head_dim:
        out["head_dim"] = cfg.head_size
    elif cfg.head_size * cfg.n_head != cfg.n_embd:
        raise Unrepresentable(f"head_size={cfg.head_size} differs from n_embd / n_head")
    return out


def _rope_from_hf(h: HFConfig, fam: "Family", kwargs: dict) -> None:
    params = rope_parameters(h, theta_keys=fam.theta_keys, partial_keys=fam.partial_keys)
    kwargs["rope_base"] = _theta(params["rope_theta"])
    kwargs["rotary_percentage"] = float(params["partial_rotary_factor"])
    kwargs["rope_adjustments"] = rope_adjustments_from_hf(params, kwargs["block_size"])


def _rope_to_hf(cfg: Config, out: dict, *, partial: Optional[str] = None, theta: str = "rope_theta") -> None:
    out[theta] = _theta(cfg.rope_base)
    scaling = rope_scaling_to_hf(cfg)
    if scaling is not None:
        out["rope_scaling"] = scaling
    if partial is not None:
        out[partial] = cfg.rotary_percentage
    elif cfg.rope_n_elem != cfg.head_size:
        raise Unrepresentable(f"rotary_percentage={cfg.rotary_percentage}")


def _window_all(h: HFConfig, use_flag: Optional[str] = None) -> Optional[int]:
    window = h.get("sliding_window")
    if use_flag is not None and not h.get(use_flag):
        return None
    return int(window) if window else None


def _sliding_pattern(cfg: Config) -> list[bool]:
    return [cfg.is_sliding_layer(i) for i in range(cfg.n_layer)]


def _uniform_window(cfg: Config) -> Optional[int]:
    """The sliding window when every layer slides, None when none does; Unrepresentable for a mix."""
    pattern = _sliding_pattern(cfg)
    if any(pattern) and not all(pattern):
        raise Unrepresentable("sliding-window attention on some layers only")
    return cfg.sliding_window_size if any(pattern) else None


def _indices(pattern: list[bool]) -> Optional[list[int]]:
    return None if all(pattern) else [int(p) for p in pattern]


def _layer_types(h: HFConfig, n_layer: int, default: Callable[[int], bool]) -> list[bool]:
    """Per layer, True for sliding-window attention, from `layer_types` or the family's default pattern."""
    types = h.data.get("layer_types")
    if types is None:
        return [default(i) for i in range(n_layer)]
    if len(types) != n_layer:
        raise ValueError(f"config.json layer_types has {len(types)} entries for {n_layer} layers")
    unknown = sorted(set(types) - {"sliding_attention", "full_attention"})
    if unknown:
        raise Unrepresentable(f"layer_types {unknown} are not supported")
    return [t == "sliding_attention" for t in types]


def _types_to_hf(pattern: list[bool]) -> list[str]:
    return ["sliding_attention" if p else "full_attention" for p in pattern]


class Family:
    """A Hugging Face architecture. Subclasses fill in the tables."""

    model_type: str = ""
    architecture: str = ""
    defaults: dict = {}
    theta_keys: tuple = ("rope_theta",)
    partial_keys: tuple = ("partial_rotary_factor",)
    aliases: tuple = ()
    """(regex, replacement) applied to checkpoint keys on import: other spellings of the same tensor."""
    ignored: tuple = (r"\.rotary_emb\.inv_freq$",)
    """Checkpoint keys (regexes) that are buffers, not weights."""
    container_types: tuple = ()
    """Multimodal config.json `model_type`s whose `text_config` is this family's (e.g. Gemma 3's "gemma3")."""

    def config_from_hf(self, h: HFConfig) -> dict:
        raise NotImplementedError

    def config_to_hf(self, cfg: Config) -> dict:
        raise NotImplementedError

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        raise NotImplementedError

    # ---- shared helpers ----
    def hf(self, data: dict) -> HFConfig:
        return HFConfig(data, self)

    def normalize_key(self, key: str) -> Optional[str]:
        """The canonical spelling of a checkpoint key, or None for a buffer to skip."""
        for pattern, repl in self.aliases:
            key = re.sub(pattern, repl, key)
        if any(re.search(p, key) for p in self.ignored):
            return None
        return key

    def full_hf_config(self, cfg: Config) -> dict:
        """config.json for the Config: model_type, architectures and every field the family reads."""
        out = {"architectures": [self.architecture], "model_type": self.model_type}
        out.update(self.config_to_hf(cfg))
        return out


def _llama_layout(**changes: Any) -> WeightLayout:
    layer = {
        "norm_1": "input_layernorm",
        "attn.proj": "self_attn.o_proj",
        "attn.norm_q": "self_attn.q_norm",
        "attn.norm_k": "self_attn.k_norm",
        "norm_2": "post_attention_layernorm",
        "mlp.fc_1": "mlp.gate_proj",
        "mlp.fc_2": "mlp.up_proj",
        "mlp.proj": "mlp.down_proj",
    }
    layer.update(changes.pop("layer", {}))
    kwargs = dict(
        top={"transformer.wte": "model.embed_tokens", "transformer.ln_f": "model.norm", "lm_head": "lm_head"},
        layer_prefix="model.layers.{i}.",
        layer=layer,
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    )
    kwargs.update(changes)
    return WeightLayout(**kwargs)


class LlamaFamily(Family):
    model_type, architecture = "llama", "LlamaForCausalLM"
    defaults = dict(attention_bias=False, mlp_bias=False, hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0,
                    tie_word_embeddings=False, max_position_embeddings=2048)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        attn_bias, mlp_bias = bool(h.get("attention_bias")), bool(h.get("mlp_bias"))
        if attn_bias != mlp_bias:
            raise Unrepresentable(f"attention_bias={attn_bias} with mlp_bias={mlp_bias}")
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")), bias=attn_bias)
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   attention_bias=cfg.bias, mlp_bias=cfg.bias)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout()


class MistralFamily(Family):
    model_type, architecture = "mistral", "MistralForCausalLM"
    defaults = dict(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096,
                    tie_word_embeddings=False, max_position_embeddings=131072)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")), sliding_window_size=_window_all(h))
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        pattern = _sliding_pattern(cfg)
        if not all(pattern):
            raise Unrepresentable("sliding-window attention on some layers only")
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   sliding_window=cfg.sliding_window_size)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout()


class MixtralFamily(MistralFamily):
    model_type, architecture = "mixtral", "MixtralForCausalLM"
    defaults = dict(MistralFamily.defaults, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
                    num_local_experts=8, num_experts_per_tok=2)
    aliases = ((r"\.mlp\.", ".block_sparse_moe."),)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = super().config_from_hf(h)
        kw.update(mlp_class_name="LLaMAMoE", n_expert=int(h.first("num_local_experts", "num_experts")),
                  n_expert_per_token=int(h.get("num_experts_per_tok")))
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        window = _uniform_window(cfg)
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps,
                   intermediate_size=cfg.moe_intermediate_size or cfg.intermediate_size,
                   sliding_window=window,
                   num_local_experts=cfg.n_expert, num_experts_per_tok=cfg.n_expert_per_token)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout(layer={"mlp.gate": "block_sparse_moe.gate"}, experts="block_sparse_moe.experts",
                             expert={"fc_1": "w1", "fc_2": "w3", "proj": "w2"})


class Qwen2Family(Family):
    model_type, architecture = "qwen2", "Qwen2ForCausalLM"
    defaults = dict(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0, use_sliding_window=False,
                    sliding_window=4096, max_window_layers=28, tie_word_embeddings=False, max_position_embeddings=32768)
    qkv_bias = True
    qk_norm = False

    def _window(self, h: HFConfig, n_layer: int) -> tuple[Optional[int], Optional[list[int]]]:
        window = _window_all(h, "use_sliding_window")
        first = int(h.get("max_window_layers") or 0)
        pattern = _layer_types(h, n_layer, lambda i: window is not None and i >= first)
        if window is None or not any(pattern):
            return None, None
        return window, _indices(pattern)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        if not self.qkv_bias and h.get("attention_bias"):
            raise Unrepresentable("attention_bias=True (biases on q, k, v and o)")
        window, indices = self._window(h, kw["n_layer"])
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")), attn_bias=self.qkv_bias,
                  norm_qk=self.qk_norm, sliding_window_size=window, sliding_window_indices=indices)
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        pattern = _sliding_pattern(cfg)
        first = pattern.index(True) if any(pattern) else cfg.n_layer
        if pattern != [i >= first for i in range(cfg.n_layer)]:
            raise Unrepresentable("sliding-window layers that are not the last ones")
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   use_sliding_window=any(pattern), sliding_window=cfg.sliding_window_size if any(pattern) else None,
                   max_window_layers=first, layer_types=_types_to_hf(pattern))
        if not self.qkv_bias:
            out["attention_bias"] = False
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout()


class Qwen3Family(Qwen2Family):
    model_type, architecture = "qwen3", "Qwen3ForCausalLM"
    defaults = dict(Qwen2Family.defaults, head_dim=128)
    qkv_bias = False
    qk_norm = True


class Qwen3MoeFamily(Family):
    model_type, architecture = "qwen3_moe", "Qwen3MoeForCausalLM"
    defaults = dict(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0, use_sliding_window=False,
                    sliding_window=4096, tie_word_embeddings=False, max_position_embeddings=32768, num_experts=128,
                    num_experts_per_tok=8, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
                    moe_intermediate_size=768, intermediate_size=6144)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        if h.get("attention_bias"):
            raise Unrepresentable("attention_bias=True (biases on q, k, v and o)")
        if not h.get("norm_topk_prob"):
            raise Unrepresentable("norm_topk_prob=False (our router always renormalises the top-k weights)")
        if h.get("mlp_only_layers") or int(h.get("decoder_sparse_step") or 1) != 1:
            raise Unrepresentable("dense MLP layers between MoE layers (mlp_only_layers / decoder_sparse_step)")
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), mlp_class_name="LLaMAMoE",
                  intermediate_size=int(h.get("intermediate_size")),
                  moe_intermediate_size=int(h.get("moe_intermediate_size")),
                  n_expert=int(h.first("num_experts", "num_local_experts")),
                  n_expert_per_token=int(h.get("num_experts_per_tok")), norm_qk=True, norm_topk_prob=True,
                  sliding_window_size=_window_all(h, "use_sliding_window"))
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        window = _uniform_window(cfg)
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   moe_intermediate_size=cfg.moe_intermediate_size or cfg.intermediate_size,
                   num_experts=cfg.n_expert, num_experts_per_tok=cfg.n_expert_per_token, norm_topk_prob=True,
                   decoder_sparse_step=1, mlp_only_layers=[], attention_bias=False,
                   use_sliding_window=window is not None, sliding_window=window)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout(layer={"mlp.gate": "mlp.gate"}, experts="mlp.experts",
                             expert={"fc_1": "gate_proj", "fc_2": "up_proj", "proj": "down_proj"})


class GemmaFamily(Family):
    model_type, architecture = "gemma", "GemmaForCausalLM"
    defaults = dict(hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6, rope_theta=10000.0, head_dim=256,
                    attention_bias=False, tie_word_embeddings=True, max_position_embeddings=8192)

    def _common(self, h: HFConfig, act_keys: tuple) -> dict:
        kw = _base(h)
        if h.get("attention_bias"):
            raise Unrepresentable("attention_bias=True (biases on q, k, v and o)")
        act = h.first(*act_keys)
        if self.model_type == "gemma" and act == "gelu":  # transformers reads Gemma's legacy "gelu" as tanh
            act = "gelu_pytorch_tanh"
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), rmsnorm_add_unit_offset=True,
                  mlp_class_name="GemmaMLP", gelu_approximate=_gelu_from_hf(act, act_keys[0]),
                  intermediate_size=int(h.require("intermediate_size")), scale_embeddings=True)
        return kw

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = self._common(h, ("hidden_act", "hidden_activation"))
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def _common_to_hf(self, cfg: Config, act_key: str) -> dict:
        out = _base_to_hf(cfg)
        out.update({act_key: _gelu_to_hf(cfg)}, rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   attention_bias=False)
        return out

    def config_to_hf(self, cfg: Config) -> dict:
        out = self._common_to_hf(cfg, "hidden_act")
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout()


class Gemma2Family(GemmaFamily):
    model_type, architecture = "gemma2", "Gemma2ForCausalLM"
    defaults = dict(GemmaFamily.defaults, hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0, query_pre_attn_scalar=256, sliding_window=4096)
    pattern_period = 2

    def _gemma2_fields(self, h: HFConfig, kw: dict) -> None:
        if h.get("use_bidirectional_attention"):
            raise Unrepresentable("use_bidirectional_attention=True")
        period = int(h.data.get("sliding_window_pattern") or self.pattern_period)
        pattern = _layer_types(h, kw["n_layer"], lambda i: bool((i + 1) % period))
        window = h.get("sliding_window")
        kw.update(post_attention_norm=True, post_mlp_norm=True,
                  attention_scores_scalar=h.get("query_pre_attn_scalar"),
                  attention_logit_softcapping=h.get("attn_logit_softcapping"),
                  final_logit_softcapping=h.get("final_logit_softcapping"),
                  sliding_window_size=int(window) if window and any(pattern) else None,
                  sliding_window_indices=_indices(pattern) if window and any(pattern) else None)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = self._common(h, ("hidden_activation", "hidden_act"))
        self._gemma2_fields(h, kw)
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def _gemma2_to_hf(self, cfg: Config, out: dict) -> None:
        pattern = _sliding_pattern(cfg)
        out.update(query_pre_attn_scalar=cfg.attention_scores_scalar or cfg.head_size,
                   attn_logit_softcapping=cfg.attention_logit_softcapping,
                   final_logit_softcapping=cfg.final_logit_softcapping,
                   sliding_window=cfg.sliding_window_size if any(pattern) else None,
                   layer_types=_types_to_hf(pattern))

    def config_to_hf(self, cfg: Config) -> dict:
        out = self._common_to_hf(cfg, "hidden_activation")
        self._gemma2_to_hf(cfg, out)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout(layer={"post_attention_norm": "post_attention_layernorm",
                                    "norm_2": "pre_feedforward_layernorm",
                                    "post_mlp_norm": "post_feedforward_layernorm"})


class Gemma3Family(Gemma2Family):
    model_type, architecture = "gemma3_text", "Gemma3ForCausalLM"
    container_types = ("gemma3",)
    defaults = dict(Gemma2Family.defaults, attn_logit_softcapping=None, final_logit_softcapping=None,
                    max_position_embeddings=131072, vocab_size=262208, rope_theta=1_000_000.0,
                    rope_local_base_freq=10_000.0)
    pattern_period = 6
    # multimodal checkpoints (Gemma3ForConditionalGeneration) keep the language model under a prefix
    aliases = (
        (r"^model\.language_model\.", "model."),
        (r"^language_model\.model\.", "model."),
        (r"^language_model\.lm_head\.", "lm_head."),
    )
    ignored = Family.ignored + (r"^(model\.)?(vision_tower|multi_modal_projector)\.",)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = self._common(h, ("hidden_activation", "hidden_act"))
        self._gemma2_fields(h, kw)
        nested = h.data.get("rope_parameters")
        if isinstance(nested, dict) and isinstance(nested.get("full_attention"), dict):  # transformers 5
            full = rope_parameters(h, nested="full_attention", theta_keys=("rope_theta",))
            local = rope_parameters(h, nested="sliding_attention", theta_keys=("rope_local_base_freq",),
                                    scaling_key=None)
        else:  # legacy keys: rope_theta (+ rope_scaling) for global layers, rope_local_base_freq for local ones
            full = dict(h.data.get("rope_scaling") or {})
            full["rope_type"] = full.pop("type", None) or full.get("rope_type") or "default"
            full["rope_theta"] = h.get("rope_theta", 1_000_000.0)
            local = {"rope_type": "default", "rope_theta": h.get("rope_local_base_freq", 10_000.0)}
        if full.get("rope_theta") is None:
            full["rope_theta"] = h.get("rope_theta", 1_000_000.0)
        if local.get("rope_theta") is None:
            local["rope_theta"] = h.get("rope_local_base_freq", 10_000.0)
        if local.get("rope_type", "default") != "default":
            raise Unrepresentable(f"RoPE scaling {local['rope_type']!r} on the sliding-window layers")
        if float(full.get("partial_rotary_factor") or 1.0) != 1.0:
            raise Unrepresentable("partial_rotary_factor")
        kw.update(norm_qk=True, rope_base=_theta(full["rope_theta"]), rope_local_base_freq=_theta(local["rope_theta"]),
                  rope_adjustments=rope_adjustments_from_hf(full, kw["block_size"]))
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        if cfg.rope_local_base_freq is None:
            raise Unrepresentable("rope_local_base_freq is not set")
        out = self._common_to_hf(cfg, "hidden_activation")
        self._gemma2_to_hf(cfg, out)
        _rope_to_hf(cfg, out)
        out["rope_local_base_freq"] = _theta(cfg.rope_local_base_freq)
        pattern = _sliding_pattern(cfg)
        for period in range(1, cfg.n_layer + 2):  # transformers < 4.53 knows only this periodic pattern
            if pattern == [bool((i + 1) % period) for i in range(cfg.n_layer)]:
                out["sliding_window_pattern"] = period
                break
        return out


class OlmoFamily(Family):
    model_type, architecture = "olmo", "OlmoForCausalLM"
    defaults = dict(hidden_act="silu", rope_theta=10000.0, attention_bias=False, clip_qkv=None,
                    tie_word_embeddings=False, max_position_embeddings=2048)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        if h.get("attention_bias"):
            raise Unrepresentable("attention_bias=True (biases on q, k, v and o)")
        if h.get("clip_qkv") is not None:
            raise Unrepresentable(f"clip_qkv={h.get('clip_qkv')} (clamping q, k, v)")
        kw.update(norm_class_name="LayerNorm", norm_eps=1e-5, norm_affine=False, mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")))
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", intermediate_size=cfg.intermediate_size, attention_bias=False, clip_qkv=None)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout()


class Olmo2Family(Family):
    model_type, architecture = "olmo2", "Olmo2ForCausalLM"
    defaults = dict(hidden_act="silu", rope_theta=10000.0, attention_bias=False, rms_norm_eps=1e-5,
                    tie_word_embeddings=False, max_position_embeddings=2048)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        if h.get("attention_bias"):
            raise Unrepresentable("attention_bias=True (biases on q, k, v and o)")
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")), norm_1=False, norm_2=False,
                  post_attention_norm=True, post_mlp_norm=True, norm_qk=True, norm_qk_type="olmo2")
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   attention_bias=False)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout(layer={"post_attention_norm": "post_attention_layernorm",
                                    "post_mlp_norm": "post_feedforward_layernorm"})


class Phi3Family(Family):
    model_type, architecture = "phi3", "Phi3ForCausalLM"
    defaults = dict(hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=None,
                    tie_word_embeddings=False, max_position_embeddings=4096)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        _require_silu(h)
        kw.update(norm_class_name="RMSNorm", norm_eps=float(h.get("rms_norm_eps")), mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")), sliding_window_size=_window_all(h))
        _rope_from_hf(h, self, kw)
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        window = _uniform_window(cfg)
        if cfg.rope_adjustments or cfg.rope_condense_ratio != 1:
            raise Unrepresentable("Phi-3 supports no RoPE scaling but longrope")
        out = _base_to_hf(cfg)
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   sliding_window=window)
        _rope_to_hf(cfg, out, partial="partial_rotary_factor")
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout(qkv="self_attn.qkv_proj", gate_up="mlp.gate_up_proj")


class StableLmFamily(Family):
    model_type, architecture = "stablelm", "StableLmForCausalLM"
    defaults = dict(hidden_act="silu", layer_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.25,
                    use_qkv_bias=False, qk_layernorm=False, use_parallel_residual=False, tie_word_embeddings=False,
                    max_position_embeddings=4096)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h, head_dim=False)
        _require_silu(h)
        if h.get("qk_layernorm"):
            raise Unrepresentable("qk_layernorm=True (one LayerNorm per head)")
        parallel = bool(h.get("use_parallel_residual"))
        kw.update(norm_class_name="LayerNorm", norm_eps=float(h.get("layer_norm_eps")), mlp_class_name="LLaMAMLP",
                  intermediate_size=int(h.require("intermediate_size")), attn_bias=bool(h.get("use_qkv_bias")),
                  parallel_residual=parallel, shared_attention_norm=parallel)
        _rope_from_hf(h, self, kw)
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        if cfg.parallel_residual and not cfg.shared_attention_norm:
            raise Unrepresentable("parallel residual with two norms")
        out = _base_to_hf(cfg, head_dim=False)
        out.update(hidden_act="silu", layer_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   use_qkv_bias=cfg.attn_bias or cfg.bias, qk_layernorm=False,
                   use_parallel_residual=cfg.parallel_residual)
        _rope_to_hf(cfg, out, partial="partial_rotary_factor")
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout()


class PhiFamily(Family):
    model_type, architecture = "phi", "PhiForCausalLM"
    defaults = dict(hidden_act="gelu_new", layer_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.5,
                    qk_layernorm=False, tie_word_embeddings=False, max_position_embeddings=2048)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h)
        kw.update(norm_class_name="LayerNorm", norm_eps=float(h.get("layer_norm_eps")), mlp_class_name="GptNeoxMLP",
                  gelu_approximate=_gelu_from_hf(h.get("hidden_act"), "hidden_act"),
                  intermediate_size=int(h.require("intermediate_size")), bias=True, lm_head_bias=True,
                  parallel_residual=True, shared_attention_norm=True, norm_qk=bool(h.get("qk_layernorm")))
        _rope_from_hf(h, self, kw)
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        if cfg.norm_qk and cfg.head_size * cfg.n_head != cfg.n_embd:
            raise Unrepresentable("q/k LayerNorms with head_size != n_embd / n_head")
        out = _base_to_hf(cfg)
        out.update(hidden_act=_gelu_to_hf(cfg), layer_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   qk_layernorm=cfg.norm_qk)
        _rope_to_hf(cfg, out, partial="partial_rotary_factor")
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return _llama_layout(
            top={"transformer.wte": "model.embed_tokens", "transformer.ln_f": "model.final_layernorm",
                 "lm_head": "lm_head"},
            layer={"attn.proj": "self_attn.dense", "attn.norm_q": "self_attn.q_layernorm",
                   "attn.norm_k": "self_attn.k_layernorm", "mlp.fc": "mlp.fc1", "mlp.proj": "mlp.fc2"},
        )


class GptNeoxFamily(Family):
    model_type, architecture = "gpt_neox", "GPTNeoXForCausalLM"
    defaults = dict(hidden_act="gelu", layer_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.25,
                    use_parallel_residual=True, attention_bias=True, tie_word_embeddings=False,
                    max_position_embeddings=2048)
    theta_keys = ("rope_theta", "rotary_emb_base")
    partial_keys = ("partial_rotary_factor", "rotary_pct")
    ignored = Family.ignored + (r"\.attention\.(bias|masked_bias)$",)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h, head_dim=False)
        kw.pop("n_query_groups")
        if not h.get("attention_bias"):
            raise Unrepresentable("attention_bias=False (the MLP keeps its biases)")
        kw.update(norm_class_name="LayerNorm", norm_eps=float(h.get("layer_norm_eps")), mlp_class_name="GptNeoxMLP",
                  gelu_approximate=_gelu_from_hf(h.get("hidden_act"), "hidden_act"),
                  intermediate_size=int(h.require("intermediate_size")), bias=True,
                  parallel_residual=bool(h.get("use_parallel_residual")))
        _rope_from_hf(h, self, kw)
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        if cfg.n_query_groups != cfg.n_head:
            raise Unrepresentable("grouped-query attention")
        out = _base_to_hf(cfg, head_dim=False)
        del out["num_key_value_heads"]
        out.update(hidden_act=_gelu_to_hf(cfg), layer_norm_eps=cfg.norm_eps, intermediate_size=cfg.intermediate_size,
                   use_parallel_residual=cfg.parallel_residual, attention_bias=True)
        _rope_to_hf(cfg, out, partial="rotary_pct", theta="rotary_emb_base")
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return WeightLayout(
            top={"transformer.wte": "gpt_neox.embed_in", "transformer.ln_f": "gpt_neox.final_layer_norm",
                 "lm_head": "embed_out"},
            layer_prefix="gpt_neox.layers.{i}.",
            layer={"norm_1": "input_layernorm", "norm_2": "post_attention_layernorm", "attn.proj": "attention.dense",
                   "mlp.fc": "mlp.dense_h_to_4h", "mlp.proj": "mlp.dense_4h_to_h"},
            qkv="attention.query_key_value",
            qkv_groups=(cfg.n_head, 1),
        )


class Gpt2Family(Family):
    model_type, architecture = "gpt2", "GPT2LMHeadModel"
    defaults = dict(activation_function="gelu_new", layer_norm_epsilon=1e-5, n_inner=None, n_positions=1024,
                    scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, tie_word_embeddings=True)
    # checkpoints saved from GPT2Model (the Hub's `gpt2`) lack the `transformer.` prefix and hold mask buffers
    aliases = ((r"^(h\.\d+\.|wte\.|wpe\.|ln_f\.)", r"transformer.\1"),)
    ignored = Family.ignored + (r"\.attn\.(bias|masked_bias)$",)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h, head_dim=False)
        kw.pop("n_query_groups")
        if not h.get("scale_attn_weights") or h.get("scale_attn_by_inverse_layer_idx"):
            raise Unrepresentable("attention scaling other than 1/sqrt(head_size)")
        if h.get("add_cross_attention"):
            raise Unrepresentable("add_cross_attention=True")
        n_inner = h.get("n_inner")
        kw.update(block_size=int(h.first("n_positions", "max_position_embeddings")), norm_class_name="LayerNorm",
                  norm_eps=float(h.get("layer_norm_epsilon")), mlp_class_name="GptNeoxMLP",
                  gelu_approximate=_gelu_from_hf(h.get("activation_function"), "activation_function"),
                  intermediate_size=int(n_inner) if n_inner else 4 * kw["n_embd"], bias=True,
                  learned_pos_embedding=True, rotary_percentage=0.0)
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        if cfg.n_query_groups != cfg.n_head:
            raise Unrepresentable("grouped-query attention")
        if cfg.head_size * cfg.n_head != cfg.n_embd:
            raise Unrepresentable(f"head_size={cfg.head_size} differs from n_embd / n_head")
        return dict(n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, n_positions=cfg.block_size,
                    n_inner=cfg.intermediate_size, vocab_size=cfg.padded_vocab_size,
                    activation_function=_gelu_to_hf(cfg), layer_norm_epsilon=cfg.norm_eps,
                    scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                    tie_word_embeddings=cfg.tie_embeddings)

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        return WeightLayout(
            top={"transformer.wte": "transformer.wte", "transformer.wpe": "transformer.wpe",
                 "transformer.ln_f": "transformer.ln_f", "lm_head": "lm_head"},
            layer_prefix="transformer.h.{i}.",
            layer={"norm_1": "ln_1", "norm_2": "ln_2", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc",
                   "mlp.proj": "mlp.c_proj"},
            qkv="attn.c_attn",
            transposed=frozenset({"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"}),
        )


class FalconFamily(Family):
    model_type, architecture = "falcon", "FalconForCausalLM"
    defaults = dict(activation="gelu", layer_norm_epsilon=1e-5, rope_theta=10000.0, bias=False, alibi=False,
                    multi_query=True, new_decoder_architecture=False, parallel_attn=True, num_ln_in_parallel_attn=None,
                    tie_word_embeddings=True, max_position_embeddings=2048)

    def config_from_hf(self, h: HFConfig) -> dict:
        kw = _base(h, head_dim=False)
        if h.get("alibi"):
            raise Unrepresentable("alibi=True (ALiBi position biases)")
        if h.get("apply_residual_connection_post_layernorm", False):
            raise Unrepresentable("apply_residual_connection_post_layernorm=True")
        n_head = kw["n_head"]
        if h.get("new_decoder_architecture"):
            groups = int(h.first("num_kv_heads", "n_head_kv", default=None) or n_head)
            two_norms = (h.get("num_ln_in_parallel_attn") or 2) == 2
            kw.update(n_query_groups=groups, parallel_residual=True, shared_attention_norm=not two_norms)
        else:
            parallel = bool(h.get("parallel_attn"))
            kw.update(n_query_groups=1 if h.get("multi_query") else n_head, parallel_residual=parallel,
                      shared_attention_norm=parallel)
        ffn = h.get("ffn_hidden_size")
        bias = bool(h.get("bias"))
        kw.update(norm_class_name="LayerNorm", norm_eps=float(h.get("layer_norm_epsilon")), mlp_class_name="GptNeoxMLP",
                  gelu_approximate=_gelu_from_hf(h.get("activation"), "activation"),
                  intermediate_size=int(ffn) if ffn else 4 * kw["n_embd"], bias=bias)
        _rope_from_hf(h, self, kw)
        if kw["rotary_percentage"] != 1.0:
            raise Unrepresentable(f"partial_rotary_factor={kw['rotary_percentage']}")
        return kw

    def config_to_hf(self, cfg: Config) -> dict:
        nh, ng = cfg.n_head, cfg.n_query_groups
        out = _base_to_hf(cfg, head_dim=False)
        del out["num_key_value_heads"]
        out.update(activation=_gelu_to_hf(cfg), layer_norm_epsilon=cfg.norm_eps, ffn_hidden_size=cfg.intermediate_size,
                   bias=cfg.bias, alibi=False)
        if cfg.parallel_residual and (not cfg.shared_attention_norm or ng not in (1, nh)):
            out.update(new_decoder_architecture=True, num_kv_heads=ng, parallel_attn=True, multi_query=ng == 1,
                       num_ln_in_parallel_attn=1 if cfg.shared_attention_norm else 2)
        else:
            if ng not in (1, nh):
                raise Unrepresentable("grouped-query attention with a sequential residual")
            out.update(new_decoder_architecture=False, multi_query=ng == 1, num_kv_heads=ng,
                       parallel_attn=cfg.parallel_residual)
        _rope_to_hf(cfg, out)
        return out

    def weight_layout(self, cfg: Config, hf: dict) -> WeightLayout:
        h = self.hf(hf)
        nh, ng = cfg.n_head, cfg.n_query_groups
        layer = {"attn.proj": "self_attention.dense", "mlp.fc": "mlp.dense_h_to_4h", "mlp.proj": "mlp.dense_4h_to_h"}
        if h.get("new_decoder_architecture"):
            groups = (ng, nh // ng)
            if (h.get("num_ln_in_parallel_attn") or 2) == 2:
                layer.update(norm_1="ln_attn", norm_2="ln_mlp")
            else:
                layer.update(norm_1="input_layernorm")
        else:
            groups = None if h.get("multi_query") else (nh, 1)
            layer.update(norm_1="input_layernorm", norm_2="post_attention_layernorm")
        return WeightLayout(
            top={"transformer.wte": "transformer.word_embeddings", "transformer.ln_f": "transformer.ln_f",
                 "lm_head": "lm_head"},
            layer_prefix="transformer.h.{i}.",
            layer=layer,
            qkv="self_attention.query_key_value",
            qkv_groups=groups,
        )


FAMILY_TABLE: tuple[Family, ...] = (
    # Export tries the families in this order and takes the first that represents the Config exactly, so a more
    # specific family (more fields it can express, or a stricter layout) comes before a more general one.
    # Adding a family is one line here (see tutorials/adding-a-model.md).
    Gpt2Family(), Olmo2Family(), Qwen3MoeFamily(), MixtralFamily(), Gemma3Family(), Gemma2Family(), GemmaFamily(),
    OlmoFamily(), PhiFamily(), GptNeoxFamily(), FalconFamily(), StableLmFamily(), Qwen3Family(), Qwen2Family(),
    LlamaFamily(), MistralFamily(), Phi3Family(),
)
FAMILIES: dict[str, Family] = {f.model_type: f for f in FAMILY_TABLE}
"""config.json `model_type` -> family (derived from FAMILY_TABLE)."""
CONTAINER_TYPES: dict[str, Family] = {t: f for f in FAMILY_TABLE for t in f.container_types}
"""Multimodal `model_type`s whose `text_config` a family reads (derived from FAMILY_TABLE)."""
SUPPORTED_MODEL_TYPES = tuple(sorted(FAMILIES)) + tuple(sorted(CONTAINER_TYPES))
EXPORT_ORDER = tuple(f.model_type for f in FAMILY_TABLE)
"""Export tries the families in this order (most specific first) and takes the first exact one."""


def family_for_model_type(model_type: Any) -> Family:
    """The family of a config.json `model_type` (ValueError naming it and the supported ones otherwise)."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unsupported model_type {model_type!r} in config.json; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return FAMILIES[model_type]


def text_config(hf: dict) -> tuple[Family, dict]:
    """The family and the language-model config of a config.json (multimodal Gemma 3 -> its text_config)."""
    if not isinstance(hf, dict):
        raise ValueError("config.json does not hold a JSON object")
    model_type = hf.get("model_type")
    if model_type in CONTAINER_TYPES:
        family = CONTAINER_TYPES[model_type]
        text = hf.get("text_config")
        if not isinstance(text, dict):
            raise ValueError(f"config.json of model_type {model_type!r} lacks its 'text_config'")
        text = dict(text)
        text.setdefault("model_type", family.model_type)
        return family, text
    return family_for_model_type(model_type), hf


def config_from_hf(hf: dict, name: str = "") -> tuple[Config, Family, dict]:
    """Infers our Config from a Hugging Face config.json dict. Returns (config, family, the text config).

    Raises ValueError (one line) for an unsupported model_type or a feature our model lacks.
    """
    family, data = text_config(hf)
    h = family.hf(data)
    try:
        kwargs = family.config_from_hf(h)
        kwargs["name"] = name
        config = Config(**kwargs)
    except Unrepresentable as err:
        raise ValueError(
            f"config.json of model_type {family.model_type!r} uses an unsupported feature: {err}"
        ) from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.json of model_type {family.model_type!r}: {err}") from None
    return config, family, data


def exact_family(family: Family, cfg: Config) -> tuple[Optional[dict], str]:
    """(config.json dict, "") if `family` represents `cfg` exactly, else (None, why not)."""
    try:
        hf = family.full_hf_config(cfg)
        back = Config(**family.config_from_hf(family.hf(hf)))
        family.weight_layout(cfg, hf)
    except (ValueError, TypeError, KeyError) as err:
        return None, str(err)
    diff = signature_diff(cfg, back)
    if diff:
        return None, f"differs in {', '.join(diff)}"
    return hf, ""


def family_for_config(cfg: Config) -> tuple[Family, dict]:
    """The most specific family that represents `cfg` exactly, and its config.json dict.

    Decided from the Config's explicit fields only. ValueError (one line) when no family fits.
    """
    reasons = []
    for model_type in EXPORT_ORDER:
        family = FAMILIES[model_type]
        hf, why = exact_family(family, cfg)
        if hf is not None:
            return family, hf
        reasons.append(f"{model_type}: {why}")
    raise ValueError(
        f"No supported Hugging Face architecture represents config {cfg.name!r} exactly ({'; '.join(reasons[:4])}; ...)"
    )
