"""The registry of named configs: published hyperparameters, as data.

Every entry is a dict of `litgpt.config.Config` fields and nothing else; `litgpt.config` turns the
list into `name_to_config` (and refuses duplicate names). Values come from each model's Hugging Face
`config.json`:

* `block_size` is `max_position_embeddings`;
* `vocab_size` is the tokenizer's vocabulary and `padded_vocab_size` the number of embedding rows in the
  checkpoint (HF's `vocab_size`), set explicitly or reproduced by `padding_multiple`;
* `n_query_groups` is `num_key_value_heads`, `head_size` is set where it is not `n_embd // n_head`;
* `tie_embeddings` follows `tie_word_embeddings`.

Names follow LitGPT's where the families overlap, because existing `model_config.yaml` files are matched
to their registry entry by `name`. `hf_config` names the Hugging Face repository; `Config.from_name`
also accepts that `org/name`.

Families are written as one base dict plus small loops for the sizes and the base/instruct variants.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

configs: list[dict] = []


def _add(name: str, org: str, repo: Optional[str] = None, **fields: Any) -> dict:
    """Appends an entry named `name` whose Hugging Face repository is `org/repo` (default: `org/name`)."""
    entry = dict(name=name, hf_config=dict(org=org, name=repo or name), **copy.deepcopy(fields))
    configs.append(entry)
    return entry


def _variant(base: dict, name: str, repo: Optional[str] = None, org: Optional[str] = None, **changes: Any) -> dict:
    """Appends a copy of `base` renamed to `name` (HF repo `repo`, default `name`) with some fields changed."""
    entry = copy.deepcopy(base)
    entry.update(changes)
    entry["name"] = name
    entry["hf_config"] = dict(org=org or base["hf_config"]["org"], name=repo or name)
    configs.append(entry)
    return entry


# Architecture templates shared by many families.
# GPT-NeoX style: parallel residual, LayerNorm with bias, fc-GELU-proj MLP, partial RoPE.
NEOX = dict(
    norm_class_name="LayerNorm", norm_eps=1e-5, parallel_residual=True, bias=True,
    mlp_class_name="GptNeoxMLP", rotary_percentage=0.25,
)
# Llama style: sequential residual, RMSNorm, SwiGLU, full RoPE, no biases.
LLAMA = dict(
    norm_class_name="RMSNorm", norm_eps=1e-5, parallel_residual=False, bias=False,
    mlp_class_name="LLaMAMLP", rotary_percentage=1.0,
)


def _sliding_pattern(n_layer: int, period: int) -> list[int]:
    """Gemma 3 layout: `period - 1` sliding-window layers, then one global layer, repeated."""
    return [0 if (i + 1) % period == 0 else 1 for i in range(n_layer)]


# --------------------------------------------------------------------------------------------------
# EleutherAI Pythia (GPT-NeoX). https://huggingface.co/EleutherAI
for size, n_layer, n_embd, n_head, padding, block_size in [
    ("14m", 6, 128, 4, 128, 512),  # the two smallest were trained on shorter contexts
    ("31m", 6, 256, 8, 128, 1024),
    ("70m", 6, 512, 8, 128, 2048),
    ("160m", 12, 768, 12, 128, 2048),
    ("410m", 24, 1024, 16, 128, 2048),
    ("1b", 16, 2048, 8, 128, 2048),
    ("1.4b", 24, 2048, 16, 128, 2048),
    ("2.8b", 32, 2560, 32, 128, 2048),
    ("6.9b", 32, 4096, 32, 256, 2048),  # 50432 embedding rows
    ("12b", 36, 5120, 40, 512, 2048),  # 50688 embedding rows
]:
    pythia = _add(
        f"pythia-{size}", "EleutherAI", block_size=block_size, vocab_size=50254, padding_multiple=padding,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, **NEOX,
    )
    if size not in ("14m", "31m"):  # the two smallest have no deduped twin
        _variant(pythia, f"pythia-{size}-deduped")

# --------------------------------------------------------------------------------------------------
# OpenAI GPT-2: learned absolute positions, no RoPE, tied embeddings, gelu_new.
for name, n_layer, n_embd, n_head in [
    ("gpt2", 12, 768, 12),
    ("gpt2-medium", 24, 1024, 16),
    ("gpt2-large", 36, 1280, 20),
    ("gpt2-xl", 48, 1600, 25),
]:
    _add(
        name, "openai-community", block_size=1024, vocab_size=50257, padded_vocab_size=50257,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, norm_class_name="LayerNorm", norm_eps=1e-5,
        parallel_residual=False, bias=True, mlp_class_name="GptNeoxMLP", gelu_approximate="tanh",
        rotary_percentage=0.0, learned_pos_embedding=True, tie_embeddings=True,
    )

# --------------------------------------------------------------------------------------------------
# Meta Llama 2. https://huggingface.co/meta-llama
for size, n_layer, n_embd, n_head, n_kv, inter in [
    ("7b", 32, 4096, 32, 32, 11008),
    ("13b", 40, 5120, 40, 40, 13824),
    ("70b", 80, 8192, 64, 8, 28672),
]:
    llama2 = _add(
        f"Llama-2-{size}-hf", "meta-llama", block_size=4096, vocab_size=32000, padded_vocab_size=32000,
        padding_multiple=64,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter,
        rope_base=10000, **LLAMA,
    )
    _variant(llama2, f"Llama-2-{size}-chat-hf")

# Meta Llama 3 / 3.1 / 3.2 / 3.3: 128k-token tiktoken vocabulary (+256 special tokens).
LLAMA3 = dict(LLAMA, vocab_size=128000, padded_vocab_size=128256, rope_base=500000)
LLAMA31_ROPE = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)
LLAMA32_ROPE = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)
LLAMA3_SIZES = {  # n_layer, n_embd, n_head, n_query_groups, intermediate_size
    "8B": (32, 4096, 32, 8, 14336),
    "70B": (80, 8192, 64, 8, 28672),
    "405B": (126, 16384, 128, 8, 53248),
}
for size in ("8B", "70B"):
    n_layer, n_embd, n_head, n_kv, inter = LLAMA3_SIZES[size]
    llama3 = _add(
        f"Llama-3-{size}", "meta-llama", f"Meta-Llama-3-{size}", block_size=8192, n_layer=n_layer,
        n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter, **LLAMA3,
    )
    _variant(llama3, f"Llama-3-{size}-Instruct", f"Meta-Llama-3-{size}-Instruct")
for size in ("8B", "70B", "405B"):
    n_layer, n_embd, n_head, n_kv, inter = LLAMA3_SIZES[size]
    llama31 = _add(  # LitGPT keeps the repos' original "Meta-" names (the Hub redirects both)
        f"Llama-3.1-{size}", "meta-llama", f"Meta-Llama-3.1-{size}", block_size=131072, n_layer=n_layer,
        n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter, rope_adjustments=LLAMA31_ROPE,
        **LLAMA3,
    )
    _variant(llama31, f"Llama-3.1-{size}-Instruct", f"Meta-Llama-3.1-{size}-Instruct")
for size, n_layer, n_embd, n_head in [("1B", 16, 2048, 32), ("3B", 28, 3072, 24)]:
    llama32 = _add(
        f"Llama-3.2-{size}", "meta-llama", block_size=131072, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        n_query_groups=8, intermediate_size=8192, rope_adjustments=LLAMA32_ROPE, tie_embeddings=True, **LLAMA3,
    )
    _variant(llama32, f"Llama-3.2-{size}-Instruct")
llama31_70b = next(c for c in configs if c["name"] == "Llama-3.1-70B")
_variant(llama31_70b, "Llama-3.3-70B-Instruct")
_variant(llama31_70b, "Llama-3.1-Nemotron-70B-Instruct-HF", org="nvidia")
# DeepSeek-R1 distilled into Llama 3.1 8B / Llama 3.3 70B: the Llama architecture unchanged.
_variant(next(c for c in configs if c["name"] == "Llama-3.1-8B"), "R1-Distill-Llama-8B",
         "DeepSeek-R1-Distill-Llama-8B", org="deepseek-ai")
_variant(llama31_70b, "R1-Distill-Llama-70B", "DeepSeek-R1-Distill-Llama-70B", org="deepseek-ai")

# Community fine-tunes of Llama 2 (and of the first Llama 30B) with the base architectures unchanged.
LLAMA2_ARCH = {  # n_layer, n_embd, n_head, n_query_groups, intermediate_size
    "7B": (32, 4096, 32, 32, 11008),
    "13B": (40, 5120, 40, 40, 13824),
    "30B": (60, 6656, 52, 52, 17920),
    "70B": (80, 8192, 64, 8, 28672),
}
for name, org, size, extra in [
    ("Platypus-30B", "garage-bAInd", "30B", dict(block_size=2048, norm_eps=1e-6)),
    ("Platypus2-7B", "garage-bAInd", "7B", {}),
    ("Platypus2-13B", "garage-bAInd", "13B", {}),
    ("Platypus2-70B", "garage-bAInd", "70B", {}),
    ("Camel-Platypus2-13B", "garage-bAInd", "13B", {}),
    ("Camel-Platypus2-70B", "garage-bAInd", "70B", {}),
    ("Stable-Platypus2-13B", "garage-bAInd", "13B", {}),
    ("Platypus2-70B-instruct", "garage-bAInd", "70B", {}),
    ("FreeWilly2", "stabilityai", "70B", dict(padding_multiple=64)),
    # 32k context by linear position interpolation (x8)
    ("LLaMA-2-7B-32K", "togethercomputer", "7B", dict(block_size=32768, rope_condense_ratio=8, padding_multiple=64)),
    ("Llama-2-7b-chat-hf-function-calling-v2", "Trelis", "7B", dict(norm_eps=1e-6, padding_multiple=64)),
]:
    n_layer, n_embd, n_head, n_kv, inter = LLAMA2_ARCH[size]
    fields = dict(LLAMA, block_size=4096, vocab_size=32000, padded_vocab_size=32000, rope_base=10000)
    fields.update(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter)
    fields.update(extra)
    _add(name, org, **fields)

# --------------------------------------------------------------------------------------------------
# Meta Code Llama. 7b/13b base and Instruct carry 16 extra infilling tokens (32016 rows).
CODELLAMA = dict(LLAMA, block_size=16384, rope_base=1000000)


def _codellama_vocab(n: int) -> dict:
    return dict(vocab_size=n, padded_vocab_size=n, padding_multiple=16 if n == 32016 else 512)


for size, n_layer, n_embd, n_head, n_kv, inter in [
    ("7b", 32, 4096, 32, 32, 11008),
    ("13b", 40, 5120, 40, 40, 13824),
    ("34b", 48, 8192, 64, 8, 22016),
    ("70b", 80, 8192, 64, 8, 28672),
]:
    arch = dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter)
    infill_vocab = 32000 if size == "34b" else 32016
    python_vocab = 32016 if size == "70b" else 32000
    _add(f"CodeLlama-{size}-hf", "codellama", **_codellama_vocab(infill_vocab), **arch, **CODELLAMA)
    _add(f"CodeLlama-{size}-Python-hf", "codellama", **_codellama_vocab(python_vocab), **arch, **CODELLAMA)
    instruct = dict(CODELLAMA, block_size=4096, rope_base=10000) if size == "70b" else CODELLAMA
    _add(f"CodeLlama-{size}-Instruct-hf", "codellama", **_codellama_vocab(infill_vocab), **arch, **instruct)

# --------------------------------------------------------------------------------------------------
# Mistral AI. v0.1 uses sliding-window attention (4096) on every layer; v0.2+ dropped it.
MISTRAL_7B = dict(
    LLAMA, block_size=32768, vocab_size=32000, padded_vocab_size=32000, n_layer=32, n_embd=4096, n_head=32,
    n_query_groups=8, intermediate_size=14336,
)
mistral = _add("Mistral-7B-v0.1", "mistralai", sliding_window_size=4096, rope_base=10000, **MISTRAL_7B)
_variant(mistral, "Mistral-7B-Instruct-v0.1")
mistral = _add("Mistral-7B-v0.2", "unsloth", rope_base=1000000, **MISTRAL_7B)  # as LitGPT: a mirror of the weights
_variant(mistral, "Mistral-7B-Instruct-v0.2", org="mistralai")
MISTRAL_7B_V03 = dict(MISTRAL_7B, vocab_size=32768, padded_vocab_size=32768)  # larger vocabulary
mistral = _add("Mistral-7B-v0.3", "mistralai", rope_base=1000000, **MISTRAL_7B_V03)
_variant(mistral, "Mistral-7B-Instruct-v0.3")
_add("Mathstral-7B-v0.1", "mistralai", "mathstral-7B-v0.1", rope_base=1000000, sliding_window_size=4096,
     **MISTRAL_7B_V03)
for version in ("2407", "2411"):
    _add(f"Mistral-Large-Instruct-{version}", "mistralai", rope_base=1000000, **dict(
        MISTRAL_7B_V03, n_layer=88, n_embd=12288, n_head=96, n_query_groups=8, intermediate_size=28672))

MIXTRAL = dict(LLAMA, mlp_class_name="LLaMAMoE", n_expert=8, n_expert_per_token=2, rope_base=1000000)
mixtral = _add(
    "Mixtral-8x7B-v0.1", "mistralai", block_size=32768, vocab_size=32000, padded_vocab_size=32000, n_layer=32,
    n_embd=4096, n_head=32, n_query_groups=8, intermediate_size=14336, **MIXTRAL,
)
_variant(mixtral, "Mixtral-8x7B-Instruct-v0.1")
mixtral = _add(
    "Mixtral-8x22B-v0.1", "mistralai", block_size=65536, vocab_size=32768, padded_vocab_size=32768, n_layer=56,
    n_embd=6144, n_head=48, n_query_groups=8, intermediate_size=16384, **MIXTRAL,
)
_variant(mixtral, "Mixtral-8x22B-Instruct-v0.1")

# --------------------------------------------------------------------------------------------------
# Google Gemma: GeGLU (tanh GELU), RMSNorm scaling by (1 + weight), embeddings scaled by sqrt(n_embd),
# tied embeddings, head_size 256 (128 for gemma-2-27b and gemma-3-27b).
GEMMA = dict(
    norm_class_name="RMSNorm", norm_eps=1e-6, rmsnorm_add_unit_offset=True, parallel_residual=False, bias=False,
    mlp_class_name="GemmaMLP", gelu_approximate="tanh", rotary_percentage=1.0, scale_embeddings=True,
    tie_embeddings=True,
)
GEMMA1 = dict(GEMMA, block_size=8192, vocab_size=256000, padded_vocab_size=256000, rope_base=10000, head_size=256,
              padding_multiple=64)
gemma = _add("Gemma-2b", "google", "gemma-2b", n_layer=18, n_embd=2048, n_head=8, n_query_groups=1,
             intermediate_size=16384, **GEMMA1)
_variant(gemma, "Gemma-2b-it", "gemma-2b-it")
gemma = _add("Gemma-7b", "google", "gemma-7b", n_layer=28, n_embd=3072, n_head=16, n_query_groups=16,
             intermediate_size=24576, **GEMMA1)
_variant(gemma, "Gemma-7b-it", "gemma-7b-it")
_variant(gemma, "CodeGemma-7b-it", "codegemma-7b-it")

# Gemma 2: even layers use a 4096-token sliding window; logit soft-capping; pre and post norms.
GEMMA2 = dict(
    GEMMA, block_size=8192, vocab_size=256000, padded_vocab_size=256000, rope_base=10000, post_attention_norm=True,
    post_mlp_norm=True, sliding_window_size=4096, attention_logit_softcapping=50.0, final_logit_softcapping=30.0,
)
for size, n_layer, n_embd, n_head, n_kv, head_size, inter, scalar in [
    ("2b", 26, 2304, 8, 4, 256, 9216, 256),
    ("9b", 42, 3584, 16, 8, 256, 14336, 256),
    ("27b", 46, 4608, 32, 16, 128, 36864, 144),
]:
    gemma2 = _add(
        f"Gemma-2-{size}", "google", f"gemma-2-{size}", n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        n_query_groups=n_kv, head_size=head_size, intermediate_size=inter, attention_scores_scalar=scalar,
        sliding_window_indices=[1, 0] * (n_layer // 2), **GEMMA2,
    )
    _variant(gemma2, f"Gemma-2-{size}-it", f"gemma-2-{size}-it")

# Gemma 3 (text part): 5 local layers then 1 global; local layers use RoPE base 10k, global 1M
# (linearly scaled x8 from 4b up); QK RMSNorm; 4b+ checkpoints have 64 extra (image) embedding rows.
GEMMA3 = dict(
    GEMMA, vocab_size=262144, rope_base=1000000, rope_local_base_freq=10000, post_attention_norm=True,
    post_mlp_norm=True, norm_qk=True,
)
for size, n_layer, n_embd, n_head, n_kv, head_size, inter, scalar in [
    ("270m", 18, 640, 4, 1, 256, 2048, 256),
    ("1b", 26, 1152, 4, 1, 256, 6912, 256),
    ("4b", 34, 2560, 8, 4, 256, 10240, 256),
    ("12b", 48, 3840, 16, 8, 256, 15360, 256),
    ("27b", 62, 5376, 32, 16, 128, 21504, 168),
]:
    small = size in ("270m", "1b")
    pattern = _sliding_pattern(n_layer, 6)
    gemma3 = _add(
        f"Gemma-3-{size}-it", "google", f"gemma-3-{size}-it", n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        n_query_groups=n_kv, head_size=head_size, intermediate_size=inter, attention_scores_scalar=scalar,
        block_size=32768 if small else 131072, padded_vocab_size=262144 if small else 262208,
        sliding_window_size=512 if small else 1024, sliding_window_indices=pattern, rope_indices=list(pattern),
        rope_adjustments=None if small else dict(factor=8.0), **GEMMA3,
    )
    if size == "270m":  # its pretrained checkpoint has no "-pt" suffix
        _variant(gemma3, "Gemma-3-270m", "gemma-3-270m")
    else:
        _variant(gemma3, f"Gemma-3-{size}-pt", f"gemma-3-{size}-pt")

# --------------------------------------------------------------------------------------------------
# Microsoft Phi. Phi-1.5 / Phi-2: parallel residual with one shared LayerNorm, partial RoPE, gelu_new,
# biases everywhere including the LM head.
PHI = dict(
    NEOX, block_size=2048, vocab_size=50257, padded_vocab_size=51200, shared_attention_norm=True,
    gelu_approximate="tanh", lm_head_bias=True,
)
_add("phi-1_5", "microsoft", n_layer=24, n_embd=2048, n_head=32, **dict(PHI, rotary_percentage=0.5))
_add("phi-2", "microsoft", n_layer=32, n_embd=2560, n_head=32, **dict(PHI, rotary_percentage=0.4))

# Phi-3 / 3.5 mini: Llama-like. The 128k variants use "longrope" RoPE scaling, which the model does not
# implement: they are exact up to their original 4096-token context.
PHI3 = dict(
    LLAMA, vocab_size=32000, padded_vocab_size=32064, n_layer=32, n_embd=3072, n_head=32, n_query_groups=32,
    intermediate_size=8192, rope_base=10000,
)
_add("Phi-3-mini-4k-instruct", "microsoft", block_size=4096, sliding_window_size=2047, **PHI3)
_add("Phi-3-mini-128k-instruct", "microsoft", block_size=131072, **PHI3)
_add("Phi-3.5-mini-instruct", "microsoft", block_size=131072, **PHI3)
phi4 = _add(
    "phi-4", "microsoft", block_size=16384, vocab_size=100352, padded_vocab_size=100352, n_layer=40, n_embd=5120,
    n_head=40, n_query_groups=10, intermediate_size=17920, rope_base=250000, **LLAMA,
)
for name in ("Phi-4-reasoning", "Phi-4-reasoning-plus"):
    _variant(phi4, name, block_size=32768, rope_base=500000)
# Phi-4-mini: 200k vocabulary, RoPE on 3/4 of each head, tied embeddings; "longrope" scaling as for Phi-3 128k.
phi4_mini = _add(
    "Phi-4-mini-instruct", "microsoft", block_size=131072, vocab_size=200019, padded_vocab_size=200064, n_layer=32,
    n_embd=3072, n_head=24, n_query_groups=8, intermediate_size=8192, rope_base=10000, tie_embeddings=True,
    **dict(LLAMA, rotary_percentage=0.75),
)
_variant(phi4_mini, "Phi-4-mini-reasoning")

# --------------------------------------------------------------------------------------------------
# Alibaba Qwen2.5: Llama-like with a bias on the qkv projection; 151643 BPE tokens + specials.
QWEN2 = dict(LLAMA, norm_eps=1e-6, attn_bias=True, vocab_size=151643, rope_base=1000000)
QWEN25_SIZES = {  # n_layer, n_embd, n_head, n_query_groups, intermediate_size, tie_embeddings
    "0.5B": (24, 896, 14, 2, 4864, True),
    "1.5B": (28, 1536, 12, 2, 8960, True),
    "3B": (36, 2048, 16, 2, 11008, True),
    "7B": (28, 3584, 28, 4, 18944, False),
    "14B": (48, 5120, 40, 8, 13824, False),
    "32B": (64, 5120, 40, 8, 27648, False),
    "72B": (80, 8192, 64, 8, 29568, False),
}


def _qwen25_arch(size: str) -> dict:
    n_layer, n_embd, n_head, n_kv, inter, tied = QWEN25_SIZES[size]
    return dict(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter,
        tie_embeddings=tied, padded_vocab_size=151936 if tied else 152064, **QWEN2,
    )


for size in QWEN25_SIZES:
    base = _add(f"Qwen2.5-{size}", "Qwen", block_size=32768 if size in ("0.5B", "3B") else 131072,
                **_qwen25_arch(size))
    if size in ("14B", "32B", "72B"):
        base["norm_eps"] = 1e-5  # the larger base checkpoints were published with 1e-5
    _variant(base, f"Qwen2.5-{size}-Instruct", block_size=32768, norm_eps=1e-6)
    if size in ("7B", "14B"):  # million-token context: RoPE base 1e7
        _variant(base, f"Qwen2.5-{size}-Instruct-1M", block_size=1010000, rope_base=10000000, norm_eps=1e-5)
for size in ("0.5B", "1.5B", "3B", "7B", "14B", "32B"):
    coder = _add(f"Qwen2.5-Coder-{size}", "Qwen", block_size=32768, **_qwen25_arch(size))
    if size in ("14B", "32B"):
        coder["norm_eps"] = 1e-5
    _variant(coder, f"Qwen2.5-Coder-{size}-Instruct", norm_eps=1e-6)
for size in ("1.5B", "7B", "72B"):
    math_base = _add(f"Qwen2.5-Math-{size}", "Qwen", block_size=4096, **dict(_qwen25_arch(size), rope_base=10000))
    _variant(math_base, f"Qwen2.5-Math-{size}-Instruct")
_add("QwQ-32B", "Qwen", block_size=131072, **dict(_qwen25_arch("32B"), norm_eps=1e-5))
_add("QwQ-32B-Preview", "Qwen", block_size=32768, **dict(_qwen25_arch("32B"), norm_eps=1e-5))

# Qwen3: no qkv bias, per-head QK RMSNorm, head_size 128.
QWEN3 = dict(
    LLAMA, norm_eps=1e-6, norm_qk=True, head_size=128, vocab_size=151643, padded_vocab_size=151936,
    rope_base=1000000,
)
for size, n_layer, n_embd, n_head, inter, tied, has_base in [
    ("0.6B", 28, 1024, 16, 3072, True, True),
    ("1.7B", 28, 2048, 16, 6144, True, True),
    ("4B", 36, 2560, 32, 9728, True, True),
    ("8B", 36, 4096, 32, 12288, False, True),
    ("14B", 40, 5120, 40, 17408, False, True),
    ("32B", 64, 5120, 64, 25600, False, False),
]:
    qwen3 = _add(
        f"Qwen3-{size}", "Qwen", block_size=40960, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=8,
        intermediate_size=inter, tie_embeddings=tied, **QWEN3,
    )
    if has_base:
        _variant(qwen3, f"Qwen3-{size}-Base", block_size=32768)
    if size == "4B":  # the July 2025 updates: 256k context, RoPE base 5e6
        for kind in ("Instruct", "Thinking"):
            _variant(qwen3, f"Qwen3-4B-{kind}-2507", block_size=262144, rope_base=5000000)
# norm_topk_prob is left False as in LitGPT: the softmax router renormalises the top-k weights either way.
QWEN3_MOE = dict(QWEN3, mlp_class_name="LLaMAMoE", n_expert=128, n_expert_per_token=8)
qwen3 = _add(
    "Qwen3-30B-A3B", "Qwen", block_size=40960, n_layer=48, n_embd=2048, n_head=32, n_query_groups=4,
    intermediate_size=6144, moe_intermediate_size=768, **QWEN3_MOE,
)
_variant(qwen3, "Qwen3-30B-A3B-Base", block_size=32768)
for kind in ("Instruct", "Thinking"):
    _variant(qwen3, f"Qwen3-30B-A3B-{kind}-2507", block_size=262144, rope_base=10000000)
qwen3 = _add(
    "Qwen3-235B-A22B", "Qwen", block_size=40960, n_layer=94, n_embd=4096, n_head=64, n_query_groups=4,
    intermediate_size=12288, moe_intermediate_size=1536, **QWEN3_MOE,
)
for kind in ("Instruct", "Thinking"):
    _variant(qwen3, f"Qwen3-235B-A22B-{kind}-2507", block_size=262144, rope_base=5000000)

# --------------------------------------------------------------------------------------------------
# Allen AI OLMo: parameter-free LayerNorm, SwiGLU, no biases.
OLMO = dict(
    LLAMA, norm_class_name="LayerNorm", norm_affine=False, block_size=2048, vocab_size=50280,
    padded_vocab_size=50304, rope_base=10000,
)
_add("OLMo-1B-hf", "allenai", n_layer=16, n_embd=2048, n_head=16, intermediate_size=8192, tie_embeddings=True, **OLMO)
olmo = _add("OLMo-7B-hf", "allenai", n_layer=32, n_embd=4096, n_head=32, intermediate_size=11008, **OLMO)
_variant(olmo, "OLMo-7B-Instruct-hf")

# OLMo 2: norms only after attention and MLP (no pre-norms); QK RMSNorm over all heads together.
OLMO2 = dict(
    LLAMA, norm_eps=1e-6, block_size=4096, vocab_size=100278, padded_vocab_size=100352, rope_base=500000,
    norm_1=False, norm_2=False, post_attention_norm=True, post_mlp_norm=True, norm_qk=True, norm_qk_type="olmo2",
)
for size, n_layer, n_embd, n_head, inter in [("7B", 32, 4096, 32, 11008), ("13B", 40, 5120, 40, 13824)]:
    olmo2 = _add(f"OLMo-2-1124-{size}", "allenai", n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                 intermediate_size=inter, **OLMO2)
    for suffix in ("SFT", "DPO", "Instruct"):
        _variant(olmo2, f"OLMo-2-1124-{size}-{suffix}")

# --------------------------------------------------------------------------------------------------
# TII Falcon: parallel attention/MLP, multi-query (7b) or grouped (40b/180B) attention, tied embeddings.
FALCON = dict(
    NEOX, block_size=2048, vocab_size=65024, padded_vocab_size=65024, bias=False, rotary_percentage=1.0,
    tie_embeddings=True,
)
falcon = _add("falcon-7b", "tiiuae", n_layer=32, n_embd=4544, n_head=71, n_query_groups=1,
              shared_attention_norm=True, **FALCON)
_variant(falcon, "falcon-7b-instruct")
falcon = _add("falcon-40b", "tiiuae", n_layer=60, n_embd=8192, n_head=128, n_query_groups=8, **FALCON)
_variant(falcon, "falcon-40b-instruct")
falcon = _add("falcon-180B", "tiiuae", n_layer=80, n_embd=14848, n_head=232, n_query_groups=8, **FALCON)
_variant(falcon, "falcon-180B-chat")

# Falcon3: Llama-like with head_size 256 and an unusual RoPE base.
FALCON3 = dict(LLAMA, norm_eps=1e-6, vocab_size=131072, padded_vocab_size=131072, rope_base=1000042, head_size=256,
               n_head=12, n_query_groups=4, n_embd=3072)
for size, n_layer, inter, base_block, instruct_block, extra in [
    ("1B", 18, 8192, 4096, 8192, dict(n_embd=2048, n_head=8)),
    ("3B", 22, 9216, 8192, 32768, {}),
    ("7B", 28, 23040, 32768, 32768, {}),
    ("10B", 40, 23040, 32768, 32768, {}),
]:
    falcon3 = _add(f"Falcon3-{size}-Base", "tiiuae", block_size=base_block, n_layer=n_layer, intermediate_size=inter,
                   **dict(FALCON3, **extra))
    _variant(falcon3, f"Falcon3-{size}-Instruct", block_size=instruct_block)

# --------------------------------------------------------------------------------------------------
# Hugging Face SmolLM2 (tied embeddings).
for size, n_layer, n_embd, n_head, n_kv, inter, rope_base in [
    ("135M", 30, 576, 9, 3, 1536, 100000),
    ("360M", 32, 960, 15, 5, 2560, 100000),
    ("1.7B", 24, 2048, 32, 32, 8192, 130000),
]:
    smol = _add(
        f"SmolLM2-{size}", "HuggingFaceTB", block_size=8192, vocab_size=49152, padded_vocab_size=49152,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter,
        rope_base=rope_base, tie_embeddings=True, **LLAMA,
    )
    _variant(smol, f"SmolLM2-{size}-Instruct")

# --------------------------------------------------------------------------------------------------
# Small Llama-architecture models.
TINY_LLAMA = dict(
    LLAMA, block_size=2048, vocab_size=32000, padded_vocab_size=32000, rope_base=10000, padding_multiple=64,
)
tiny = _add("tiny-llama-1.1b", "TinyLlama", "TinyLlama-1.1B-intermediate-step-1431k-3T", n_layer=22, n_embd=2048,
            n_head=32, n_query_groups=4, intermediate_size=5632, **TINY_LLAMA)
_variant(tiny, "tiny-llama-1.1b-chat", "TinyLlama-1.1B-Chat-v1.0")
_add("micro-llama-300M", "keeeeenw", "MicroLlama", n_layer=12, n_embd=1024, n_head=16, n_query_groups=4,
     intermediate_size=5632, **TINY_LLAMA)

# OpenLM Research OpenLLaMA.
for size, n_layer, n_embd, n_head, inter in [
    ("3b", 26, 3200, 32, 8640),
    ("7b", 32, 4096, 32, 11008),
    ("13b", 40, 5120, 40, 13824),
]:
    _add(f"open_llama_{size}", "openlm-research", block_size=2048, vocab_size=32000, padded_vocab_size=32000,
         n_layer=n_layer, n_embd=n_embd, n_head=n_head, intermediate_size=inter, padding_multiple=64,
         **dict(LLAMA, norm_eps=1e-6))

# Barcelona Supercomputing Center Salamandra.
for size, n_layer, n_embd, n_head, n_kv, inter, eps in [
    ("2b", 24, 2048, 16, 16, 5440, 1e-5),
    ("7b", 32, 4096, 32, 8, 11008, 1e-6),
]:
    salamandra = _add(
        f"salamandra-{size}", "BSC-LT", block_size=8192, vocab_size=256000, padded_vocab_size=256000,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_query_groups=n_kv, intermediate_size=inter,
        rope_base=10000, **dict(LLAMA, norm_eps=eps),
    )
    _variant(salamandra, f"salamandra-{size}-instruct")

# --------------------------------------------------------------------------------------------------
# Stability AI. StableLM-Alpha and StableCode-Alpha are GPT-NeoX models.
for size, n_embd, n_head, padding in [("3b", 4096, 32, 512), ("7b", 6144, 48, 256)]:
    stablelm = _add(f"stablelm-base-alpha-{size}", "stabilityai", block_size=4096, vocab_size=50254,
                    padding_multiple=padding, n_layer=16, n_embd=n_embd, n_head=n_head, **NEOX)
    _variant(stablelm, f"stablelm-tuned-alpha-{size}")
STABLECODE_ALPHA = dict(NEOX, vocab_size=49152, padded_vocab_size=49152, n_layer=32, n_embd=2560, n_head=32)
_add("stablecode-completion-alpha-3b", "stabilityai", block_size=16384, **STABLECODE_ALPHA)
_add("stablecode-completion-alpha-3b-4k", "stabilityai", block_size=4096, **STABLECODE_ALPHA)
_add("stablecode-instruct-alpha-3b", "stabilityai", block_size=4096, **STABLECODE_ALPHA)
# StableLM 3B 4E1T family: sequential residual, LayerNorm, SwiGLU, RoPE on a quarter of each head.
STABLELM3B = dict(
    LLAMA, norm_class_name="LayerNorm", rotary_percentage=0.25, vocab_size=50254, padded_vocab_size=50304,
    n_layer=32, n_embd=2560, n_head=32, intermediate_size=6912,
)
stablelm = _add("stablelm-3b-4e1t", "stabilityai", block_size=4096, rope_base=10000, **STABLELM3B)
_variant(stablelm, "stablelm-zephyr-3b")
_add("stable-code-3b", "stabilityai", block_size=16384, rope_base=1000000, **STABLELM3B)


# Hugging Face repository ids that moved: the old or new id -> registry name (`Config.from_name` accepts them).
hf_aliases: dict[str, str] = {
    **{f"meta-llama/{c['name']}": c["name"] for c in configs if c["name"].startswith("Llama-3.1-")
       and c["hf_config"]["org"] == "meta-llama"},
    "mistral-community/Mistral-7B-v0.2": "Mistral-7B-v0.2",
}
