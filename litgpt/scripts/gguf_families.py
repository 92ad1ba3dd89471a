"""GGUF (llama.cpp, Ollama, LM Studio) tables: which families export, their metadata, tensor names and layouts.

The tensors go through the Hugging Face names `hf_families` already knows for a Config, then through the
`gguf` package's own name map (`gguf.get_tensor_name_map`), so the llama.cpp names are the ones llama.cpp's
loader looks up. On top of that a family may need:

* its RoPE rows interleaved (llama.cpp's `llama` architecture rotates adjacent pairs; we and Hugging Face
  rotate halves), applied to q and k;
* an offset on its RMSNorm weights (Gemma stores `w` and multiplies by `1 + w`; llama.cpp multiplies by
  the stored value).

Both directions use the same tables: `gguf_tensor_plan` for export, `convert_gguf_file` for import
(`litgpt convert_to_litgpt FILE.gguf`). Tokenizers are converted here too (`tokenizer_to_gguf`,
`tokenizer_from_gguf`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from litgpt.config import Config
from litgpt.scripts.hf_families import (
    Rule,
    config_from_hf,
    family_for_config,
    rope_scaling_to_hf,
    weight_rules,
)

CONFIG_KEY = "litgpt.model_config"
"""GGUF metadata key holding our Config as JSON, so importing our own files is lossless."""


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError("GGUF files need the `gguf` package: pip install 'litgpt[gguf]'") from None
    return gguf


# --------------------------------------------------------------------------------------------------
# the families
@dataclass(frozen=True)
class GGUFFamily:
    """One llama.cpp architecture and the Hugging Face families (`hf_families` model_types) written as it."""

    arch: str
    """llama.cpp's `general.architecture`."""
    model_types: tuple[str, ...]
    """hf_families model_types exported as this architecture; the first is used on import."""
    label: str
    """The model families, for messages and docs."""
    interleave_rope: bool = False
    """llama.cpp rotates adjacent pairs for this architecture: q and k rows are permuted on export."""
    norm_offset: float = 0.0
    """Added to every RMSNorm weight on export (Gemma's `1 + w`)."""
    sliding_window: bool = False
    """llama.cpp slides the attention window for this architecture (elsewhere the key is informational)."""
    sliding_period: Optional[int] = None
    """llama.cpp's fixed sliding pattern: layer i slides when (i + 1) % period != 0 (None: every layer)."""


GGUF_FAMILIES: tuple[GGUFFamily, ...] = (
    GGUFFamily("llama", ("llama", "mistral"), "Llama 2 / 3 / 3.x, Mistral, SmolLM2, TinyLlama", interleave_rope=True),
    GGUFFamily("qwen2", ("qwen2",), "Qwen2 / Qwen2.5"),
    GGUFFamily("qwen3", ("qwen3",), "Qwen3"),
    GGUFFamily("gemma2", ("gemma2",), "Gemma 2", norm_offset=1.0, sliding_window=True, sliding_period=2),
    GGUFFamily("phi3", ("phi3",), "Phi-3 / Phi-4-mini"),
)
BY_ARCH = {f.arch: f for f in GGUF_FAMILIES}
BY_MODEL_TYPE = {t: f for f in GGUF_FAMILIES for t in f.model_types}
SUPPORTED = "; ".join(f"{f.label} ({f.arch})" for f in GGUF_FAMILIES)

DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def gguf_family_for_config(config: Config) -> tuple[GGUFFamily, Any, dict]:
    """(GGUF family, hf_families family, its config.json dict) for a Config; one-line ValueError otherwise."""
    try:
        family, hf = family_for_config(config)
    except ValueError:
        raise ValueError(
            f"config {config.name!r} matches no Hugging Face architecture; GGUF export supports: {SUPPORTED}"
        ) from None
    if family.model_type not in BY_MODEL_TYPE:
        raise ValueError(
            f"GGUF export does not support {family.model_type!r} models like {config.name!r}; supported: {SUPPORTED}"
        )
    return BY_MODEL_TYPE[family.model_type], family, hf


# --------------------------------------------------------------------------------------------------
# tensors
def _interleave(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head from rotate-half order [x0..x(n/2-1) | x(n/2)..] to adjacent pairs (x0, x(n/2)), ..."""
    rest = t.shape[1:]
    return t.reshape(heads, 2, t.shape[0] // heads // 2, *rest).transpose(1, 2).reshape(t.shape)


def _deinterleave(t: torch.Tensor, heads: int) -> torch.Tensor:
    rest = t.shape[1:]
    return t.reshape(heads, t.shape[0] // heads // 2, 2, *rest).transpose(1, 2).reshape(t.shape)


@dataclass
class TensorPlan:
    """How one Hugging Face tensor of a rule becomes one GGUF tensor and back."""

    name: str
    rule: Rule
    position: int
    to_gguf: Callable[[torch.Tensor], torch.Tensor]
    from_gguf: Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def gguf_tensor_plan(config: Config) -> tuple[GGUFFamily, dict, list[TensorPlan]]:
    """The GGUF family, the config.json dict and one plan per GGUF tensor of a model with `config`.

    A tied LM head has no tensor of its own (llama.cpp reads `token_embd` then).
    """
    gguf = _gguf()
    gfam, family, hf = gguf_family_for_config(config)
    from litgpt.model import GPT

    with torch.device("meta"):
        names = list(GPT(config).state_dict())
    rules = [r for r in weight_rules(family.weight_layout(config, hf), config, names) if r.canonical]
    if config.tie_embeddings:
        rules = [r for r in rules if r.lit != ("lm_head.weight",)]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == gfam.arch)
    name_map = gguf.get_tensor_name_map(arch, config.n_layer)
    plans = []
    for rule in rules:
        for pos, hf_name in enumerate(rule.hf):
            name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(f"{hf_name!r} has no llama.cpp name in the {gfam.arch} architecture")
            to_gguf, from_gguf = _identity, _identity
            m = re.fullmatch(r"blk\.\d+\.attn_([qk])\.(weight|bias)", name)
            if gfam.interleave_rope and m:
                heads = config.n_head if m[1] == "q" else config.n_query_groups
                to_gguf = lambda t, h=heads: _interleave(t, h)  # noqa: E731
                from_gguf = lambda t, h=heads: _deinterleave(t, h)  # noqa: E731
            elif gfam.norm_offset and name.endswith("norm.weight"):
                off = gfam.norm_offset
                to_gguf = lambda t, o=off: t.float() + o  # noqa: E731
                from_gguf = lambda t, o=off: t.float() - o  # noqa: E731
            plans.append(TensorPlan(name, rule, pos, to_gguf, from_gguf))
    return gfam, hf, plans


def llama3_rope_factors(config: Config, adj: dict) -> torch.Tensor:
    """llama.cpp's `rope_freqs` tensor for Llama 3.1 RoPE scaling: the divisor of each rotary frequency."""
    n = config.rope_n_elem
    freqs = 1.0 / (config.rope_base ** (torch.arange(0, n, 2, dtype=torch.float64) / n))
    factor, low, high = float(adj["factor"]), float(adj["low_freq_factor"]), float(adj["high_freq_factor"])
    old = float(adj["original_max_seq_len"])
    wavelen = 2 * math.pi / freqs
    smooth = (old / wavelen - low) / (high - low)
    out = 1.0 / ((1 - smooth) / factor + smooth)
    out = torch.where(wavelen < old / high, torch.ones_like(out), out)
    out = torch.where(wavelen > old / low, torch.full_like(out, factor), out)
    return out.float()


def _llama3_from_factors(config_kw: dict, factors: torch.Tensor) -> dict:
    """Llama 3.1 RoPE parameters that reproduce a `rope_freqs` tensor (ValueError if none do)."""
    factor = float(factors.max())
    for old in (8192, *(2**k for k in range(4, 18))):
        for low in (1.0, 0.5, 2.0, 4.0):
            for high in (4.0, 2.0, 8.0, 1.0, 16.0):
                if high <= low:
                    continue
                adj = {"factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                       "original_max_seq_len": old}
                probe = Config(**{**config_kw, "rope_adjustments": adj})
                if torch.allclose(llama3_rope_factors(probe, adj), factors.float(), rtol=1e-4, atol=1e-5):
                    return adj
    raise ValueError("the file's rope_freqs tensor matches no Llama 3.1 RoPE scaling this importer knows")


# --------------------------------------------------------------------------------------------------
# metadata
def check_exportable(config: Config, gfam: GGUFFamily) -> None:
    """One-line ValueError for a Config llama.cpp's architecture would compute differently."""
    pattern = [config.is_sliding_layer(i) for i in range(config.n_layer)]
    if gfam.sliding_period is not None and any(pattern):
        expected = [bool((i + 1) % gfam.sliding_period) for i in range(config.n_layer)]
        if pattern != expected:
            raise ValueError(
                f"llama.cpp's {gfam.arch} slides the window on every layer but each {gfam.sliding_period}th; "
                f"config {config.name!r} slides on layers {[i for i, p in enumerate(pattern) if p]}"
            )
    elif any(pattern) and not gfam.sliding_window and config.sliding_window_size < config.block_size:
        print(
            f"Note: llama.cpp's {gfam.arch} architecture has no sliding window; the exported model attends to all "
            f"tokens, which differs from ours only beyond {config.sliding_window_size} tokens",
            file=sys.stderr,
        )
    if gfam.arch == "gemma2":
        scalar = config.attention_scores_scalar or config.head_size
        if scalar != config.head_size and not (config.n_layer == 46 and scalar == config.n_embd // config.n_head):
            raise ValueError(
                f"llama.cpp's gemma2 scales attention by 1/sqrt(head_size); config {config.name!r} uses "
                f"attention_scores_scalar={scalar}"
            )
    scaling = rope_scaling_to_hf(config)
    if scaling is not None and scaling["rope_type"] not in ("linear", "llama3"):
        raise ValueError(f"GGUF export supports linear and llama3 RoPE scaling, not {scaling['rope_type']!r}")


def write_metadata(writer: Any, config: Config, gfam: GGUFFamily, name: str) -> Optional[torch.Tensor]:
    """Writes the architecture keys llama.cpp reads. Returns the `rope_freqs` tensor when one is needed."""
    gguf = _gguf()
    writer.add_name(name)
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_query_groups)
    writer.add_key_length(config.head_size)
    writer.add_value_length(config.head_size)
    writer.add_rope_dimension_count(config.rope_n_elem)
    writer.add_rope_freq_base(float(config.rope_base))
    writer.add_layer_norm_rms_eps(float(config.norm_eps))
    writer.add_vocab_size(config.padded_vocab_size)
    if config.sliding_window_size is not None and any(config.is_sliding_layer(i) for i in range(config.n_layer)):
        writer.add_sliding_window(config.sliding_window_size)  # informational where llama.cpp has no SWA
    if config.attention_logit_softcapping is not None:
        writer.add_attn_logit_softcapping(float(config.attention_logit_softcapping))
    if config.final_logit_softcapping is not None:
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    writer.add_string(CONFIG_KEY, json.dumps(dataclasses.asdict(config), sort_keys=True))
    scaling = rope_scaling_to_hf(config)
    if scaling is None:
        return None
    if scaling["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        return None
    adj = {"factor": scaling["factor"], "low_freq_factor": scaling["low_freq_factor"],
           "high_freq_factor": scaling["high_freq_factor"],
           "original_max_seq_len": scaling["original_max_position_embeddings"]}
    return llama3_rope_factors(config, adj)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    if isinstance(value, float):  # float32 in the file: the shortest decimal that rounds to it (1e-06)
        import numpy as np

        value = float(str(np.float32(value)))
    return value


def config_from_gguf(reader: Any, name: str) -> tuple[Config, GGUFFamily]:
    """Our Config for a GGUF file: the stored `litgpt.model_config` when present, else from llama.cpp's keys."""
    arch = _field(reader, "general.architecture")
    if arch not in BY_ARCH:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; supported: {SUPPORTED}")
    gfam = BY_ARCH[arch]
    stored = _field(reader, CONFIG_KEY)
    if stored:
        kw = json.loads(stored)
        known = {f.name for f in dataclasses.fields(Config)}
        return Config(**{k: v for k, v in kw.items() if k in known}), gfam

    def key(suffix: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{suffix}", default)

    tensors = {t.name: t for t in reader.tensors}
    n_embd, n_head = int(key("embedding_length")), int(key("attention.head_count"))
    kv = key("attention.head_count_kv", n_head)
    vocab = key("vocab_size") or len(_field(reader, "tokenizer.ggml.tokens", []))
    if isinstance(kv, list):
        raise ValueError("per-layer KV head counts are not supported")
    hf = {
        "model_type": gfam.model_types[0],
        "hidden_size": n_embd,
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(kv),
        "head_dim": int(key("attention.key_length", n_embd // n_head)),
        "intermediate_size": int(key("feed_forward_length")),
        "vocab_size": int(vocab),
        "max_position_embeddings": int(key("context_length", 4096)),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(key("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensors,
        "hidden_act": "silu",
    }
    rope_dims = key("rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != hf["head_dim"]:
        hf["partial_rotary_factor"] = int(rope_dims) / hf["head_dim"]
    if key("rope.scaling.type") == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": float(key("rope.scaling.factor"))}
    elif key("rope.scaling.type") not in (None, "none"):
        raise ValueError(f"RoPE scaling {key('rope.scaling.type')!r} is not supported on import")
    window = key("attention.sliding_window")
    if gfam.arch == "gemma2":
        hf.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=hf["head_dim"],
                  attn_logit_softcapping=key("attn_logit_softcapping"),
                  final_logit_softcapping=key("final_logit_softcapping"), sliding_window=window)
        if hf["num_hidden_layers"] == 46:
            hf["query_pre_attn_scalar"] = n_embd // n_head
    elif gfam.arch == "phi3":
        hf["sliding_window"] = window
    elif gfam.arch == "llama" and window:
        hf.update(model_type="mistral", sliding_window=window)
    config, _, _ = config_from_hf(hf, name=name)
    if "rope_freqs.weight" in tensors:
        factors = torch.from_numpy(_dequantize(tensors["rope_freqs.weight"]).copy()).reshape(-1)
        kw = dataclasses.asdict(config)
        config = Config(**{**kw, "rope_adjustments": _llama3_from_factors(kw, factors)})
    return config, gfam


# --------------------------------------------------------------------------------------------------
# tokenizers
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


PRE_TOKENIZERS: dict[str, dict] = {
    # llama.cpp's `tokenizer.ggml.pre` name -> the tokenizer.json pre_tokenizer that splits text the same way
    "gpt-2": _byte_level(True),
    "llama-bpe": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]},
    "qwen2": {"type": "Sequence", "pretokenizers": [_split(_QWEN2_REGEX), _byte_level(False)]},
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                     _byte_level(True)]},
}


def _pre_signature(pre: Any) -> Any:
    """What of a pre_tokenizer decides the split (drops offsets-only options)."""
    if not isinstance(pre, dict):
        return pre
    kind = pre.get("type")
    if kind == "Sequence":
        return ("Sequence", tuple(_pre_signature(p) for p in pre.get("pretokenizers", [])))
    if kind == "ByteLevel":
        return ("ByteLevel", bool(pre.get("add_prefix_space")), bool(pre.get("use_regex", True)))
    if kind == "Split":
        pattern = pre.get("pattern", {})
        return ("Split", pattern.get("Regex", pattern.get("String")), pre.get("behavior"), bool(pre.get("invert")))
    if kind == "Digits":
        return ("Digits", bool(pre.get("individual_digits")))
    return (kind, tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in pre.items())))


def pre_tokenizer_name(pre: Any) -> Optional[str]:
    """llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer, None when it matches none."""
    sig = _pre_signature(pre)
    return next((name for name, known in PRE_TOKENIZERS.items() if _pre_signature(known) == sig), None)


@dataclass
class GGUFVocab:
    """A tokenizer as GGUF stores it."""

    model: str
    """"gpt2" (byte-level BPE) or "llama" (SentencePiece-style)."""
    tokens: list[str]
    scores: list[float]
    types: list[int]
    merges: list[str]
    pre: Optional[str] = None
    add_space_prefix: Optional[bool] = None


def _pad_vocab(vocab: GGUFVocab, size: int) -> None:
    gguf = _gguf()
    if len(vocab.tokens) > size:
        raise ValueError(f"the tokenizer has {len(vocab.tokens)} tokens, more than the model's {size} embeddings")
    for i in range(len(vocab.tokens), size):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.scores.append(-1000.0)
        vocab.types.append(int(gguf.TokenType.UNUSED))


def _tokens_and_types(data: dict) -> tuple[list[str], list[int]]:
    """Every id of a tokenizer.json in order (gaps as unused [PADi]) with its GGUF token type."""
    gguf = _gguf()
    model = data["model"]
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens") or []}
    for i, a in added.items():
        by_id[i] = a["content"]
    tokens, types = [], []
    for i in range(max(by_id) + 1):
        token = by_id.get(i, f"[PAD{i}]")
        if i not in by_id:
            kind = gguf.TokenType.UNUSED
        elif i in added:
            kind = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
        elif token == model.get("unk_token"):
            kind = gguf.TokenType.UNKNOWN
        elif model.get("byte_fallback") and re.fullmatch(r"<0x[0-9A-F]{2}>", token):
            kind = gguf.TokenType.BYTE
        else:
            kind = gguf.TokenType.NORMAL
        tokens.append(token)
        types.append(int(kind))
    return tokens, types


def _bpe_vocab(data: dict) -> GGUFVocab:
    tokens, types = _tokens_and_types(data)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges") or []]
    pre = pre_tokenizer_name(data.get("pre_tokenizer"))
    if pre is None:
        print("Note: the tokenizer's pre-tokenizer is not one llama.cpp knows by name; writing 'default' "
              "(llama.cpp may split some text differently)", file=sys.stderr)
        pre = "default"
    return GGUFVocab("gpt2", tokens, [0.0] * len(tokens), types, merges, pre=pre)


def _byte_fallback_vocab(data: dict) -> GGUFVocab:
    """A '▁' BPE tokenizer.json with byte fallback (Llama 2 style) as SentencePiece pieces: each token's score
    is minus the rank of the merge that makes it, so llama.cpp's highest-score-first merging follows the merges."""
    tokens, types = _tokens_and_types(data)
    rank: dict[str, int] = {}
    for r, m in enumerate(data["model"].get("merges") or []):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(left + right, r)
    scores = [-float(rank.get(token, 0)) for token in tokens]
    return GGUFVocab("llama", tokens, scores, types, [], add_space_prefix=_uses_prefix_space(data))


def _uses_prefix_space(data: dict) -> bool:
    pre, norm = data.get("pre_tokenizer") or {}, data.get("normalizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for p in parts:
        if p.get("type") == "Metaspace":
            return p.get("prepend_scheme", "always" if p.get("add_prefix_space", True) else "never") != "never"
    norms = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    return any(n.get("type") == "Prepend" for n in norms)


def _sentencepiece_vocab(checkpoint_dir: Path) -> GGUFVocab:
    gguf = _gguf()
    sp = gguf.SentencePieceVocab(checkpoint_dir)
    tokens, scores, types = zip(*sp.all_tokens())
    probe = sp.sentencepiece_tokenizer
    first = probe.id_to_piece(probe.encode("a")[0])
    return GGUFVocab("llama", [t.decode("utf-8") for t in tokens], list(scores), [int(t) for t in types], [],
                     add_space_prefix=first.startswith("\u2581"))


def tokenizer_to_gguf(checkpoint_dir: Path, vocab_size: int) -> GGUFVocab:
    """The checkpoint's tokenizer (tokenizer.json preferred, as `litgpt.Tokenizer` does) in GGUF form."""
    gguf = _gguf()
    json_path, model_path = checkpoint_dir / "tokenizer.json", checkpoint_dir / "tokenizer.model"
    if json_path.is_file():
        data = json.loads(json_path.read_text(encoding="utf-8"))
        model = data.get("model") or {}
        if model.get("type") == "BPE" and not model.get("byte_fallback"):
            vocab = _bpe_vocab(data)
        elif model.get("type") == "BPE" and model_path.is_file():  # the SentencePiece original has the scores
            vocab = _sentencepiece_vocab(checkpoint_dir)
        elif model.get("type") == "BPE":
            vocab = _byte_fallback_vocab(data)
        else:
            raise ValueError(f"{json_path}: a {model.get('type')!r} tokenizer cannot be written to GGUF (BPE only)")
    elif model_path.is_file():
        vocab = _sentencepiece_vocab(checkpoint_dir)
    else:
        raise FileNotFoundError(f"{checkpoint_dir} holds no tokenizer.json or tokenizer.model to put in the GGUF file")
    _pad_vocab(vocab, vocab_size)
    return vocab


def write_tokenizer(writer: Any, checkpoint_dir: Path, vocab_size: int, arch: str) -> None:
    """Writes vocabulary, merges, special tokens and the chat template of `checkpoint_dir`'s tokenizer."""
    from litgpt.tokenizer import Tokenizer

    vocab = tokenizer_to_gguf(checkpoint_dir, vocab_size)
    if arch == "phi3" and "<|endoftext|>" not in vocab.tokens:
        raise ValueError("llama.cpp's phi3 architecture needs a '<|endoftext|>' token, which the tokenizer lacks")
    ours = Tokenizer(checkpoint_dir)
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if ours.bos_id is not None:
        writer.add_bos_token_id(ours.bos_id)
    if ours.eos_id is not None:
        writer.add_eos_token_id(ours.eos_id)
    writer.add_add_bos_token(bool(ours.use_bos))
    writer.add_add_eos_token(False)
    for i in ours.stop_tokens[1:2]:
        writer.add_eot_token_id(i)
    config = ours.tokenizer_config
    unk = _special_content(config.get("unk_token"))
    pad = _special_content(config.get("pad_token"))
    for content, add in ((unk, writer.add_unk_token_id), (pad, writer.add_pad_token_id)):
        if content is not None and content in vocab.tokens:
            add(vocab.tokens.index(content))
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: llama.cpp reads the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if isinstance(template, str):
        writer.add_chat_template(template)


def _special_content(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_from_gguf(reader: Any, out_dir: Path) -> None:
    """Writes tokenizer.json, tokenizer_config.json and generation_config.json for a GGUF file's tokenizer."""
    gguf = _gguf()
    model = _field(reader, "tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise ValueError("the GGUF file holds no tokenizer (tokenizer.ggml.model / tokens)")
    types = _field(reader, "tokenizer.ggml.token_type", [int(gguf.TokenType.NORMAL)] * len(tokens))
    special = {int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED)}
    unused = int(gguf.TokenType.UNUSED)
    keep = [i for i, t in enumerate(types) if not (t == unused and re.fullmatch(r"\[PAD\d+\]", tokens[i]))]
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": types[i] != int(gguf.TokenType.CONTROL), "special": types[i] == int(gguf.TokenType.CONTROL)}
             for i in keep if types[i] in special]
    if model == "gpt2":
        pre = _field(reader, "tokenizer.ggml.pre", "gpt-2")
        if pre not in PRE_TOKENIZERS:
            print(f"Note: llama.cpp pre-tokenizer {pre!r} is not known here; using GPT-2's", file=sys.stderr)
            pre = "gpt-2"
        merges = _field(reader, "tokenizer.ggml.merges", [])
        data = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": PRE_TOKENIZERS[pre],
            "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                               "use_regex": False},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": pre == "llama-bpe",
                      "vocab": {tokens[i]: i for i in keep}, "merges": [m.split(" ", 1) for m in merges]},
        }
    elif model == "llama":
        scores = _field(reader, "tokenizer.ggml.scores", [0.0] * len(tokens))
        prefix = _field(reader, "tokenizer.ggml.add_space_prefix", True)
        data = _spm_tokenizer_json(tokens, scores, types, keep, added, prefix)
    else:
        raise ValueError(f"GGUF tokenizer model {model!r} is not supported on import (gpt2 and llama are)")
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    def token(key: str) -> Optional[str]:
        i = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    config: dict[str, Any] = {"add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
                              "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token", False))}
    for kind in ("bos", "eos", "unk", "pad"):
        if token(kind) is not None:
            config[f"{kind}_token"] = token(kind)
    template = _field(reader, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")
    generation: dict[str, Any] = {}
    bos, eos, eot = (_field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "eot"))
    if bos is not None:
        generation["bos_token_id"] = bos
    if eos is not None:
        generation["eos_token_id"] = eos if eot is None or eot == eos else [eos, eot]
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")


def _spm_tokenizer_json(tokens: list, scores: list, types: list, keep: list, added: list, prefix: bool) -> dict:
    """A SentencePiece-style vocabulary (scores, byte tokens) as a byte-fallback BPE tokenizer.json; merges are
    ordered by the score of the token they make, as SentencePiece's BPE applies them."""
    gguf = _gguf()
    normal = {int(gguf.TokenType.NORMAL)}
    vocab = {tokens[i]: i for i in keep}
    mergeable = {tokens[i]: scores[i] for i in keep if types[i] in normal}
    merges = []
    for piece, score in mergeable.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                merges.append((score, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    unk = next((tokens[i] for i in keep if types[i] == int(gguf.TokenType.UNKNOWN)), None)
    decoders = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        # SentencePiece (and llama.cpp) prepend the dummy prefix even before a leading space
        "normalizer": {"type": "Sequence", "normalizers": (
            [{"type": "Prepend", "prepend": "\u2581"}] if prefix else []) + [
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[m[3], m[4]] for m in merges]},
    }


# --------------------------------------------------------------------------------------------------
# import
def _dequantize(tensor: Any):
    """A GGUF tensor as a float32 numpy array in our (row-major) shape."""
    gguf = _gguf()
    import numpy as np

    kind = tensor.tensor_type
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    if kind == gguf.GGMLQuantizationType.F32:
        return np.asarray(tensor.data, dtype=np.float32).reshape(shape)
    if kind == gguf.GGMLQuantizationType.F16:
        return np.asarray(tensor.data, dtype=np.float16).reshape(shape)
    if kind in (gguf.GGMLQuantizationType.BF16, gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
        return gguf.quants.dequantize(tensor.data, kind).reshape(shape)
    raise ValueError(f"tensor {tensor.name!r} has type {kind.name}; import reads F32, F16, BF16, Q8_0 and Q4_0")


def _to_torch(tensor: Any) -> torch.Tensor:
    """A GGUF tensor as a torch tensor, keeping F16 / BF16 / F32 values bit-exact (quantized: float32)."""
    gguf = _gguf()
    import numpy as np

    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        raw = np.ascontiguousarray(tensor.data).view(np.int16).reshape(shape)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(_dequantize(tensor)))


def convert_gguf_file(path: Path, out_dir: Optional[Path] = None, dtype: Optional[torch.dtype] = None) -> Path:
    """Imports a GGUF file as a checkpoint folder (lit_model.pth, model_config.yaml, tokenizer files).

    The folder is `out_dir`, default the file's path without `.gguf`. Tensors keep their F16 / BF16 / F32
    type unless `dtype` is given; quantized ones (Q8_0, Q4_0) are dequantized to float32.

    Returns:
        The path of the written `lit_model.pth`.
    """
    gguf = _gguf()
    from litgpt.utils import atomic_path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the reader raises ValueError, struct errors or KeyError on bad files
        raise ValueError(f"{path} is not a readable GGUF file ({type(err).__name__}: {err})") from None
    out_dir = Path(out_dir) if out_dir is not None else path.with_suffix("")
    name = _field(reader, "general.name") or out_dir.name
    config, gfam = config_from_gguf(reader, name=out_dir.name)
    got, plans = _plans_for(config, gfam)
    tensors = {t.name: t for t in reader.tensors}
    pending: dict[int, dict[int, torch.Tensor]] = {}
    state: dict[str, torch.Tensor] = {}
    for plan in plans:
        if plan.name not in tensors:
            raise ValueError(f"{path} lacks tensor {plan.name!r} that a {gfam.arch} model with this config needs")
        value = plan.from_gguf(_to_torch(tensors[plan.name]))
        group = pending.setdefault(id(plan.rule), {})
        group[plan.position] = value
        if len(group) == len(plan.rule.hf):
            del pending[id(plan.rule)]
            for key, t in zip(plan.rule.lit, plan.rule.to_lit([group[i] for i in range(len(group))])):
                state[key] = t.contiguous()
    if config.tie_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    target = dtype or _dominant_dtype(state)
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_from_gguf(reader, out_dir)
    out_path = out_dir / "lit_model.pth"
    with atomic_path(out_path) as tmp:
        torch.save(state, tmp)
    config.save(out_dir)
    print(f"Imported {name!r} ({gfam.arch}, {len(plans)} tensors) from {path} into {out_dir}", file=sys.stderr)
    return out_path


def _plans_for(config: Config, gfam: GGUFFamily) -> tuple[GGUFFamily, list[TensorPlan]]:
    try:
        got, _, plans = gguf_tensor_plan(config)
    except ValueError as err:
        raise ValueError(f"the GGUF file's {gfam.arch} model cannot be represented here: {err}") from None
    return got, plans


def _dominant_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype most of the matrices have (1-D tensors are stored float32 in GGUF files)."""
    counts: dict[torch.dtype, int] = {}
    for t in state.values():
        if t.dim() >= 2:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else torch.float32


__all__ = ["GGUF_FAMILIES", "SUPPORTED", "DTYPES", "gguf_tensor_plan", "write_metadata", "write_tokenizer",
           "convert_gguf_file", "config_from_gguf", "tokenizer_to_gguf", "tokenizer_from_gguf"]
