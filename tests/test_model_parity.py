"""Numerical parity with transformers, family by family, through the real converters.

For each family: a tiny random transformers model is saved with `save_pretrained`, converted with
`convert_hf_checkpoint` (its Config inferred from config.json), and our GPT must produce the same logits;
then `convert_lit_checkpoint` exports it again and `AutoModelForCausalLM.from_pretrained` must agree too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import transformers

from litgpt import GPT, Config  # noqa: E402
from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint  # noqa: E402
from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint  # noqa: E402
from litgpt.checkpoint import load_checkpoint  # noqa: E402

VOCAB = 97
SEQ = 20
WINDOW = 5  # smaller than SEQ, so sliding-window layers really drop keys

_SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# case -> (model_type, config overrides, architecture the export must choose)
CASES = {
    "gpt_neox": ("gpt_neox", dict(rotary_pct=0.25, use_parallel_residual=True), "GPTNeoXForCausalLM"),
    "gpt_neox_sequential": ("gpt_neox", dict(rotary_pct=0.5, use_parallel_residual=False, hidden_act="gelu_new"),
                            "GPTNeoXForCausalLM"),
    "gpt2": ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, n_positions=32, n_inner=80), "GPT2LMHeadModel"),
    "llama_llama3_rope": ("llama", dict(rope_theta=10000.0, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16)),
        "LlamaForCausalLM"),
    "llama_gqa_tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True, head_dim=24,
                                     rms_norm_eps=1e-5), "LlamaForCausalLM"),
    "mistral_sliding": ("mistral", dict(num_key_value_heads=2, sliding_window=WINDOW), "MistralForCausalLM"),
    "mixtral": ("mixtral", dict(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
                "MixtralForCausalLM"),
    "gemma": ("gemma", dict(head_dim=32, num_key_value_heads=1), "GemmaForCausalLM"),
    "gemma2": ("gemma2", dict(head_dim=16, num_key_value_heads=2, num_hidden_layers=3, sliding_window=WINDOW,
                              attn_logit_softcapping=1.5, final_logit_softcapping=2.0, query_pre_attn_scalar=24),
               "Gemma2ForCausalLM"),
    "gemma3": ("gemma3_text", dict(
        head_dim=16, num_key_value_heads=2, num_hidden_layers=4, sliding_window=WINDOW, query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters=dict(full_attention=dict(rope_type="linear", factor=8.0, rope_theta=1e6),
                             sliding_attention=dict(rope_type="default", rope_theta=1e4))), "Gemma3ForCausalLM"),
    "phi": ("phi", dict(partial_rotary_factor=0.5), "PhiForCausalLM"),
    "phi3": ("phi3", dict(num_key_value_heads=2, partial_rotary_factor=0.5, sliding_window=WINDOW), "Phi3ForCausalLM"),
    "qwen2_bias": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True), "Qwen2ForCausalLM"),
    # head_dim 64 puts the ends of YaRN's ramp between whole dimensions, so truncation matters
    "qwen2_yarn": ("qwen2", dict(num_key_value_heads=2, head_dim=64, rope_scaling=dict(
        rope_type="yarn", factor=4.0, original_max_position_embeddings=16, attention_factor=1.2)), "Qwen2ForCausalLM"),
    "qwen3_yarn_untruncated": ("qwen3", dict(num_key_value_heads=2, head_dim=64, rope_scaling=dict(
        rope_type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=16.0, truncate=False)),
        "Qwen3ForCausalLM"),
    "qwen3": ("qwen3", dict(num_key_value_heads=2, head_dim=32), "Qwen3ForCausalLM"),
    "qwen3_moe": ("qwen3_moe", dict(num_key_value_heads=2, head_dim=32, num_experts=4, num_experts_per_tok=2,
                                    moe_intermediate_size=32, norm_topk_prob=True), "Qwen3MoeForCausalLM"),
    "olmo": ("olmo", dict(), "OlmoForCausalLM"),
    "olmo2": ("olmo2", dict(num_key_value_heads=2), "Olmo2ForCausalLM"),
    "falcon_7b_layout": ("falcon", dict(multi_query=True, new_decoder_architecture=False, parallel_attn=True,
                                        ffn_hidden_size=80), "FalconForCausalLM"),
    "falcon_40b_layout": ("falcon", dict(new_decoder_architecture=True, num_kv_heads=2, bias=True),
                          "FalconForCausalLM"),
    "falcon_rw_layout": ("falcon", dict(multi_query=False, new_decoder_architecture=False, parallel_attn=False),
                         "FalconForCausalLM"),
    "stablelm": ("stablelm", dict(num_key_value_heads=2, use_qkv_bias=True, partial_rotary_factor=0.25),
                 "StableLmForCausalLM"),
}


def tiny_hf_model(model_type: str, **overrides):
    """A random-weight transformers model in float32 with eager attention. Every parameter (norms and
    biases included) gets noise, so a wrong mapping of any tensor changes the logits."""
    config = transformers.AutoConfig.for_model(model_type, **{**_SMALL, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def load_gpt(checkpoint_dir: Path) -> GPT:
    model = GPT(Config.from_file(checkpoint_dir / "model_config.yaml"))
    load_checkpoint(model, checkpoint_dir / "lit_model.pth")
    return model.eval()


def assert_logits_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    rel = (actual - expected).abs().max() / expected.abs().max()
    assert rel < 1e-5, f"max relative error {rel:.2e}"


@pytest.fixture(scope="module")
def token_ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(CASES))
def test_parity_both_directions(case: str, tmp_path: Path, token_ids: torch.Tensor) -> None:
    model_type, overrides, architecture = CASES[case]
    hf_model = tiny_hf_model(model_type, **overrides)
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(hf_dir)
    with torch.no_grad():
        expected = hf_model(token_ids).logits

    convert_hf_checkpoint(hf_dir)
    model = load_gpt(hf_dir)
    assert model.config.padded_vocab_size == VOCAB
    with torch.no_grad():
        assert_logits_close(model(token_ids), expected)

    out_dir = convert_lit_checkpoint(hf_dir, tmp_path / "exported")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    assert type(reloaded).__name__ == architecture
    with torch.no_grad():
        assert_logits_close(reloaded(token_ids).logits, expected)


@pytest.mark.parametrize("case", ["mistral_sliding", "gemma3"])
def test_kv_cache_decoding_matches_full_forward(case: str, tmp_path: Path, token_ids: torch.Tensor) -> None:
    model_type, overrides, _ = CASES[case]
    hf_dir = tmp_path / "hf"
    tiny_hf_model(model_type, **overrides).save_pretrained(hf_dir)
    convert_hf_checkpoint(hf_dir)
    model = load_gpt(hf_dir)
    model.max_seq_length = SEQ
    with torch.no_grad():
        full = model(token_ids)
        model.set_kv_cache(batch_size=token_ids.size(0))
        prefill = 7  # longer than the window: the cached keys of later steps must still be masked by age
        steps = [model(token_ids[:, :prefill], input_pos=torch.arange(prefill))]
        for t in range(prefill, SEQ):
            steps.append(model(token_ids[:, t : t + 1], input_pos=torch.tensor([t])))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
