"""`Config`: every architectural behaviour of a model as an explicit field, and the registry of named configs.

Field names and meanings follow LitGPT 0.5.x's `model_config.yaml`, so checkpoints move both ways. A few
behaviours LitGPT derives elsewhere are explicit fields here (`rmsnorm_add_unit_offset`, `norm_affine`,
`learned_pos_embedding`, `tie_embeddings`); `save` writes them only when a LitGPT-style file could not
recover them from the registry entry of the same name. Checkpoints always hold both `lm_head.weight` and
`transformer.wte.weight`; a tied config whose checkpoint has two different matrices loads untied.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from litgpt.config_registry import configs as _registry_entries
from litgpt.config_registry import hf_aliases as _hf_aliases


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of k that is >= n."""
    return n if n % k == 0 else n + k - (n % k)


@dataclass
class Config:
    """Architecture of a decoder-only transformer. See `tutorials/models.md` for what each field does."""

    name: str = ""
    hf_config: dict = field(default_factory=dict)
    """`{"org": ..., "name": ...}`: the Hugging Face repository the config comes from."""
    block_size: int = 4096
    """Maximum context length."""
    n_layer: int = 16
    n_embd: int = 4096
    vocab_size: int = 50254
    padding_multiple: int = 512
    padded_vocab_size: Optional[int] = None
    """Rows of the embedding and LM head; defaults to vocab_size rounded up to padding_multiple."""
    norm_class_name: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    norm_eps: float = 1e-5
    norm_qk: bool = False
    """Normalise queries and keys before RoPE."""
    norm_qk_type: Literal["default", "olmo2"] = "default"
    """'default': one norm over head_size shared by the heads; 'olmo2': over all heads together."""
    post_attention_norm: bool = False
    post_mlp_norm: bool = False
    parallel_residual: bool = True
    """x + attn(norm_1(x)) + mlp(norm_2(x)) instead of the sequential residual."""
    shared_attention_norm: bool = False
    """With parallel_residual, the MLP reads norm_1's output (no norm_2)."""
    n_head: int = 32
    head_size: Optional[int] = None
    n_query_groups: Optional[int] = None
    """Number of key/value heads: n_head for MHA, 1 for MQA, in between for GQA."""
    attn_bias: bool = False
    """Bias on the qkv projection (on top of `bias`)."""
    attention_scores_scalar: Optional[int] = None
    """Scores are scaled by 1/sqrt(attention_scores_scalar) instead of 1/sqrt(head_size)."""
    sliding_window_size: Optional[int] = None
    sliding_window_indices: Optional[list[int]] = None
    """Per layer, 1 for sliding-window attention and 0 for global; None: every layer slides."""
    attention_logit_softcapping: Optional[float] = None
    rope_base: int = 10000
    rotary_percentage: float = 0.25
    """Fraction of each head's features that RoPE rotates (0 with learned positions)."""
    rope_condense_ratio: int = 1
    """Positions are divided by this (linear position interpolation)."""
    rope_adjustments: Optional[dict] = None
    """RoPE frequency scaling: {'factor'} (linear), {'factor', 'low_freq_factor', 'high_freq_factor',
    'original_max_seq_len'} (Llama 3), or {'rope_type': 'yarn', 'factor', 'original_max_seq_len'} with the
    optional YaRN keys 'beta_fast' (32), 'beta_slow' (1), 'attention_factor' and 'truncate' (True)."""
    rope_interleave: bool = False
    intermediate_size: Optional[int] = None
    moe_intermediate_size: Optional[int] = None
    bias: bool = True
    """Bias on all linear layers except the LM head."""
    mlp_class_name: Literal["GptNeoxMLP", "LLaMAMLP", "GemmaMLP", "LLaMAMoE"] = "GptNeoxMLP"
    """GptNeoxMLP: fc-GELU-proj; LLaMAMLP: SwiGLU; GemmaMLP: GeGLU; LLaMAMoE: mixture of SwiGLU experts."""
    gelu_approximate: str = "none"
    n_expert: int = 0
    n_shared_expert: Optional[int] = None
    n_expert_groups: Optional[int] = None
    n_topk_groups: Optional[int] = None
    n_topk_scores_per_group: Optional[int] = None
    n_expert_per_token: int = 0
    first_k_dense_replace: Optional[int] = None
    routed_scaling_factor: float = 1.0
    """The MoE output (sum of the weighted experts) is multiplied by this."""
    norm_topk_prob: bool = False
    """LitGPT's field. The softmax router always renormalises its top-k weights (softmax over the k chosen
    logits), whatever this says, exactly as LitGPT 0.5.13 does for Mixtral and Qwen3-MoE; Hugging Face's
    `norm_topk_prob=False` (un-normalised weights, Qwen2-MoE) is not representable and the converter refuses
    it. It would matter for DeepSeek-style grouped routing (`n_expert_groups`), which is rejected."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(n_embd) (Gemma)."""
    lm_head_bias: bool = False
    final_logit_softcapping: Optional[float] = None
    norm_1: bool = True
    """Pre-attention norm (False for OLMo-2, which only has post norms)."""
    norm_2: bool = True
    """Pre-MLP norm."""
    latent_attention: Optional[dict] = None
    """Multi-head latent attention (DeepSeek): {'kv_lora_rank', 'qk_rope_head_dim', 'qk_nope_head_dim',
    'v_head_dim'} and optionally 'q_lora_rank' (None or absent: a full-rank query projection)."""
    rope_local_base_freq: Optional[float] = None
    """RoPE base of the local (sliding-window) layers, which then use no RoPE scaling (Gemma 3)."""
    rope_indices: Optional[list[int]] = None
    """Per layer, 1 where the local RoPE base applies; None: the sliding-window layers."""
    # ---- explicit fields LitGPT does not have (derived there) ----
    rmsnorm_add_unit_offset: bool = False
    """RMSNorm scales by (1 + weight) (Gemma)."""
    norm_affine: bool = True
    """Norms have learnable weights (False: OLMo's parameter-free LayerNorm)."""
    learned_pos_embedding: bool = False
    """Learned absolute position embeddings `transformer.wpe` (GPT-2)."""
    tie_embeddings: bool = False
    """The LM head shares the token embedding matrix."""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.hf_config.get("name", self.name)
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
            self.head_size = self.n_embd // self.n_head
        if self.padded_vocab_size is None:
            self.padded_vocab_size = find_multiple(self.vocab_size, self.padding_multiple)
        else:
            self.vocab_size = min(self.vocab_size, self.padded_vocab_size)
        if self.n_query_groups is None:
            self.n_query_groups = self.n_head
        if self.n_head % self.n_query_groups:
            raise ValueError(f"n_head={self.n_head} is not divisible by n_query_groups={self.n_query_groups}")
        if self.intermediate_size is None:
            if self.mlp_class_name != "GptNeoxMLP":
                raise ValueError(f"{self.mlp_class_name} requires intermediate_size to be set")
            self.intermediate_size = 4 * self.n_embd
        if self.sliding_window_size is not None and self.sliding_window_indices is None:
            self.sliding_window_indices = [1] * self.n_layer  # every layer slides (what LitGPT writes)
        if self.sliding_window_indices is not None and len(self.sliding_window_indices) != self.n_layer:
            # a registry entry overridden with fewer layers keeps the pattern's prefix
            pattern = self.sliding_window_indices
            self.sliding_window_indices = [pattern[i % len(pattern)] for i in range(self.n_layer)]
        if self.rope_indices is not None and len(self.rope_indices) != self.n_layer:
            pattern = self.rope_indices
            self.rope_indices = [pattern[i % len(pattern)] for i in range(self.n_layer)]
        # Fields of LitGPT's Config that no module here reads: a non-default value is refused rather than
        # silently ignored. (MoE sizes are checked where the MoE is built, so overrides can shrink a config.)
        unsupported = {
            "n_shared_expert": self.n_shared_expert,
            "n_expert_groups": self.n_expert_groups,
            "n_topk_groups": self.n_topk_groups,
            "n_topk_scores_per_group": self.n_topk_scores_per_group,
            "first_k_dense_replace": self.first_k_dense_replace,
        }
        for key, value in unsupported.items():
            if value:
                raise ValueError(
                    f"Config field {key}={value!r} (DeepSeek-style models) is not supported; leave it unset (None)"
                )
        # ---- multi-head latent attention (litgpt.model.MultiheadLatentAttention) ----
        if self.latent_attention is not None:
            keys = {"kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"}
            missing = sorted(keys - set(self.latent_attention))
            unknown = sorted(set(self.latent_attention) - keys - {"q_lora_rank"})
            if missing or unknown:
                raise ValueError(f"latent_attention needs the keys {sorted(keys)} (and optionally q_lora_rank); "
                                 f"missing {missing}, unknown {unknown}")
        if self.rope_interleave and self.latent_attention is None:
            raise ValueError("Config field rope_interleave=True is supported with latent_attention only")

    # ---- derived quantities ----
    @property
    def rope_n_elem(self) -> int:
        """How many features of each head RoPE rotates (latent attention: its `qk_rope_head_dim`)."""
        if self.latent_attention is not None:
            return self.latent_attention["qk_rope_head_dim"]
        return int(self.rotary_percentage * self.head_size)

    @property
    def has_sliding_layers(self) -> bool:
        return self.sliding_window_size is not None and (
            self.sliding_window_indices is None or any(self.sliding_window_indices)
        )

    def is_sliding_layer(self, block_idx: int) -> bool:
        """Whether layer `block_idx` uses sliding-window attention."""
        if self.sliding_window_size is None:
            return False
        return self.sliding_window_indices is None or bool(self.sliding_window_indices[block_idx])

    def uses_local_rope(self, block_idx: int) -> bool:
        """Whether layer `block_idx` takes the local RoPE base (`rope_local_base_freq`)."""
        if self.rope_local_base_freq is None:
            return False
        if self.rope_indices is not None:
            return bool(self.rope_indices[block_idx])
        return self.is_sliding_layer(block_idx)

    # ---- construction ----
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "Config":
        """The registry config `name` (a LitGPT name or a Hugging Face `org/name`), with fields overridden.

        Raises ValueError listing the closest known names when `name` is unknown.
        """
        entry = _lookup(name)
        if entry is None:
            entry = _lookup_any_case(name)
            if entry is None:
                raise ValueError(_unknown_name_message(name))
            warnings.warn(f"Model name {name!r} resolved to {entry['name']!r} (names are case-sensitive)", stacklevel=2)
        kwargs = copy.deepcopy(entry)
        # like LitGPT: head_size and n_query_groups that merely follow from n_embd / n_head follow the overrides
        if "head_size" not in overrides and ("n_embd" in overrides or "n_head" in overrides):
            if kwargs.get("head_size") == kwargs.get("n_embd", 4096) // kwargs.get("n_head", 32):
                kwargs.pop("head_size", None)
        if "n_query_groups" not in overrides and "n_head" in overrides:
            if kwargs.get("n_query_groups") == kwargs.get("n_head", 32):
                kwargs.pop("n_query_groups", None)
        kwargs.update(overrides)
        if "n_layer" in overrides:
            for key in ("sliding_window_indices", "rope_indices"):
                if kwargs.get(key) is not None and key not in overrides:
                    kwargs[key] = kwargs[key][: overrides["n_layer"]] or None
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: Union[str, Path], **overrides: Any) -> "Config":
        """Reads a `model_config.yaml` (ours or LitGPT's). Fields LitGPT does not write come from the
        registry entry of the same name, if there is one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        from litgpt.utils import read_yaml

        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a mapping of Config fields")
        data.update(overrides)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "Config":
        """Builds a Config from a dict of fields (extra fields this version does not know are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown Config field(s) {', '.join(unknown)}")
        kwargs = {}
        entry = _lookup(data.get("name", ""))
        if entry is not None:
            for key in _EXTRA_FIELDS:
                if key in entry:
                    kwargs[key] = entry[key]
        kwargs.update(data)
        return cls(**kwargs)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], **overrides: Any) -> "Config":
        """The config of a checkpoint folder (its `model_config.yaml`), or of a registry name."""
        path = Path(path)
        if (path / "model_config.yaml").is_file():
            return cls.from_file(path / "model_config.yaml", **overrides)
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            return cls.from_file(path, **overrides)
        if _lookup(path.name) is not None:
            return cls.from_name(path.name, **overrides)
        raise FileNotFoundError(
            f"{path} has no model_config.yaml and {path.name!r} is not a known model name; "
            "convert a Hugging Face checkpoint with `litgpt convert_to_litgpt` first"
        )

    # ---- saving ----
    def to_dict(self) -> dict:
        """All fields as a plain dict."""
        return asdict(self)

    def save(self, checkpoint_dir: Union[str, Path]) -> Path:
        """Writes `model_config.yaml` into `checkpoint_dir` (atomically) and returns its path.

        Fields LitGPT does not know are written only where the registry entry of the same name would
        not restore them, so LitGPT loads the file for every architecture it supports.
        """
        data = self.to_dict()
        entry = _lookup(self.name) or {}
        defaults = {f.name: f.default for f in fields(self) if f.name in _EXTRA_FIELDS}
        for key in _EXTRA_FIELDS:
            if data[key] == entry.get(key, defaults[key]):
                del data[key]
        if data.get("tie_embeddings") is False:
            # LitGPT's behaviour: a tied-by-default family is untied at load time when the checkpoint's
            # two matrices differ (GPT.load_state_dict unties them), so False never needs writing
            del data["tie_embeddings"]
        path = Path(checkpoint_dir) / "model_config.yaml"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        return path


_EXTRA_FIELDS = ("rmsnorm_add_unit_offset", "norm_affine", "learned_pos_embedding", "tie_embeddings")


def _build_registry(entries: list[dict]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for entry in entries:
        name = entry["name"]
        if name in table:
            raise ValueError(f"duplicate config name {name!r} in the registry")
        table[name] = entry
    return table


name_to_config: dict[str, dict] = _build_registry(_registry_entries)
"""Registry name -> dict of Config fields (the published hyperparameters)."""

# Hugging Face repository id ("org/name") -> registry name, and the bare repository name.
_hf_to_name: dict[str, str] = {
    **_hf_aliases,
    **{f"{e['hf_config']['org']}/{e['hf_config']['name']}": e["name"] for e in _registry_entries if e.get("hf_config")},
}
_hf_repo_to_name: dict[str, str] = {
    e["hf_config"]["name"]: e["name"] for e in _registry_entries if e.get("hf_config")
}


def _unique_lowercase(spellings: dict[str, str]) -> dict[str, str]:
    """lowercased spelling -> registry name, leaving out spellings that lowercase to two different models."""
    table: dict[str, Optional[str]] = {}
    for spelling, target in spellings.items():
        low = spelling.lower()
        table[low] = None if low in table and table[low] != target else target
    return {low: target for low, target in table.items() if target is not None}


_any_case: dict[str, str] = _unique_lowercase({**_hf_to_name, **_hf_repo_to_name, **{n: n for n in name_to_config}})


def _lookup(name: str) -> Optional[dict]:
    """The registry entry for a registry name, a Hugging Face `org/name`, or a bare repository name."""
    if name in name_to_config:
        return name_to_config[name]
    if name in _hf_repo_to_name:  # LitGPT accepts e.g. "gemma-2-2b" and "Meta-Llama-3-8B"
        return name_to_config[_hf_repo_to_name[name]]
    key = _hf_to_name.get(name)
    return name_to_config[key] if key else None


def _lookup_any_case(name: str) -> Optional[dict]:
    """The entry for `name` spelled in another case (None when unknown or ambiguous)."""
    found = _any_case.get(name.lower())
    return name_to_config[found] if found is not None else None


def _unknown_name_message(name: str) -> str:
    lowered = {n.lower(): n for n in name_to_config}
    close = [lowered[n] for n in difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.6)]
    if not close:
        low = name.lower()
        close = [n for n in name_to_config if low and low in n.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `litgpt download list` for the known names."
    return f"{name!r} is not a supported config name.{hint}"


configs = _registry_entries
