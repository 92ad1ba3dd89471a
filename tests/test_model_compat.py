"""`litgpt.model` as LitGPT 0.5.x users call it: its public names with LitGPT's argument names, checkpoints
LitGPT writes for families that tie their embeddings here, and multi-head latent attention against transformers.

The expected signatures were observed on LitGPT 0.5.13 with `inspect.signature`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import pytest
import torch
import yaml

import litgpt.model as lm
from litgpt import GPT, Config
from litgpt.model import (
    Block,
    CausalSelfAttention,
    GemmaMLP,
    GptNeoxMLP,
    KVCache,
    LLaMAMLP,
    LLaMAMoE,
    MultiheadLatentAttention,
    apply_rope,
    batched_index_copy_,
    batched_index_select,
    build_mask_cache,
    build_rope_cache,
    do_softcapping,
)

E = inspect.Parameter.empty
# name -> LitGPT 0.5.13's leading parameters (name, default); ours may add keyword-only ones after them
LITGPT_SIGNATURES = {
    "GPT": [("config", E)],
    "GPT.forward": [("idx", E), ("input_pos", None), ("input_pos_maxp1", None), ("lm_head_chunk_size", 0)],
    "GPT.set_kv_cache": [("batch_size", E), ("max_seq_length", None), ("rope_cache_length", None),
                         ("device", None), ("dtype", None)],
    "GPT.clear_kv_cache": [],
    "GPT.reset_parameters": [],
    "GPT.rope_cache": [("device", None)],
    "GPT.rope_cache_length": [],
    "GPT._init_weights": [("module", E)],
    "Block": [("config", E), ("block_idx", E)],
    "Block.forward": [("x", E), ("cos", E), ("sin", E), ("mask", None), ("input_pos", None), ("input_pos_maxp1", None)],
    "CausalSelfAttention": [("config", E), ("block_idx", E)],
    "CausalSelfAttention.forward": [("x", E), ("cos", E), ("sin", E), ("mask", None), ("input_pos", None),
                                    ("input_pos_maxp1", None)],
    "CausalSelfAttention.scaled_dot_product_attention": [("q", E), ("k", E), ("v", E), ("mask", None)],
    "CausalSelfAttention.build_kv_cache": [("batch_size", E), ("max_seq_length", E), ("rope_cache_length", None),
                                           ("device", None), ("dtype", None)],
    "MultiheadLatentAttention": [("config", E), ("block_idx", E)],
    "MultiheadLatentAttention.forward": [("x", E), ("cos", E), ("sin", E), ("mask", None), ("input_pos", None),
                                         ("input_pos_maxp1", None)],
    "MultiheadLatentAttention.build_kv_cache": [("batch_size", E), ("max_seq_length", E), ("rope_cache_length", None),
                                                ("device", None), ("dtype", None)],
    "GptNeoxMLP": [("config", E), ("intermediate_size", None)],
    "LLaMAMLP": [("config", E), ("intermediate_size", None)],
    "GemmaMLP": [("config", E), ("intermediate_size", None)],
    "LLaMAMoE": [("config", E)],
    "RMSNorm": [("size", E), ("dim", -1), ("eps", 1e-6), ("add_unit_offset", False)],
    "KVCache": [("k_shape", E), ("v_shape", E), ("device", None), ("dtype", None), ("is_sliding_window", False),
                ("sliding_window_size", None)],
    "KVCache.forward": [("input_pos", E), ("k", E), ("v", E)],
    "KVCache.reset_parameters": [],
    "build_rope_cache": [("seq_len", E), ("n_elem", E), ("device", None), ("base", 10000), ("condense_ratio", 1),
                         ("extra_config", None), ("rope_local_base_freq", None)],
    "build_mask_cache": [("max_seq_length", E), ("device", None)],
    "batched_index_select": [("t", E), ("dim", E), ("idx", E)],
    "batched_index_copy_": [("t", E), ("dim", E), ("idx", E), ("val", E)],
    "do_softcapping": [("x", E), ("thresh", E)],
    "apply_rope": [("x", E), ("cos", E), ("sin", E)],
}


@pytest.mark.parametrize("name", sorted(LITGPT_SIGNATURES))
def test_signature_starts_like_litgpts(name):
    obj = lm
    for part in name.split("."):
        obj = getattr(obj, part)
    params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
    positional = [(p.name, p.default) for p in params if p.kind != p.KEYWORD_ONLY]
    assert positional == LITGPT_SIGNATURES[name], name


# --------------------------------------------------------------------------------------------------
# Tied embeddings: checkpoints LitGPT writes (always untied) load exactly
TINY = dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=2, head_size=8, intermediate_size=48, vocab_size=64,
            padded_vocab_size=64, block_size=32)
TIED_FAMILIES = ["SmolLM2-135M", "Qwen2.5-0.5B", "Gemma-2-2b"]
OUR_EXTRA_FIELDS = {"rmsnorm_add_unit_offset", "norm_affine", "learned_pos_embedding", "tie_embeddings"}


def write_litgpt_checkpoint(folder: Path, name: str, same_matrices: bool = False) -> torch.Tensor:
    """Writes `model_config.yaml` and `lit_model.pth` the way LitGPT does (its Config's fields only, two
    separate matrices for the head and the embedding) and returns the logits of the model written."""
    config = dataclasses.replace(Config.from_name(name, **TINY), tie_embeddings=False)
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.randn_like(model.lm_head.weight) * 0.1)
        if same_matrices:
            model.lm_head.weight.copy_(model.transformer.wte.weight)
    litgpt_fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in OUR_EXTRA_FIELDS}
    (folder / "model_config.yaml").write_text(yaml.safe_dump(litgpt_fields))
    torch.save(model.state_dict(), folder / "lit_model.pth")
    with torch.no_grad():
        return model(IDS)


IDS = torch.tensor([[5, 9, 1, 33, 63, 2, 17]])


def _logits(model: GPT) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS)


@pytest.mark.parametrize("name", TIED_FAMILIES)
def test_plain_load_state_dict_unties_a_litgpt_checkpoint(name, tmp_path):
    expected = write_litgpt_checkpoint(tmp_path, name)
    config = Config.from_file(tmp_path / "model_config.yaml")
    assert config.tie_embeddings  # the family ties by default here
    model = GPT(config)
    model.load_state_dict(torch.load(tmp_path / "lit_model.pth"))
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.config.tie_embeddings is False and config.tie_embeddings  # the caller's config is not mutated
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", TIED_FAMILIES)
def test_meta_device_assign_load_unties_too(name, tmp_path):
    expected = write_litgpt_checkpoint(tmp_path, name)
    with torch.device("meta"):
        model = GPT(Config.from_file(tmp_path / "model_config.yaml"))
    model.load_state_dict(torch.load(tmp_path / "lit_model.pth"), assign=True)
    model.reset_parameters()  # RoPE tables off the meta device
    assert model.lm_head.weight is not model.transformer.wte.weight
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)


@pytest.mark.parametrize("assign", [False, True])
def test_equal_matrices_keep_the_model_tied(assign, tmp_path):
    expected = write_litgpt_checkpoint(tmp_path, "SmolLM2-135M", same_matrices=True)
    model = GPT(Config.from_file(tmp_path / "model_config.yaml"))
    model.load_state_dict(torch.load(tmp_path / "lit_model.pth"), assign=assign)
    assert model.lm_head.weight is model.transformer.wte.weight and model.config.tie_embeddings
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)


@pytest.mark.parametrize("kept", ["transformer.wte.weight", "lm_head.weight"])
def test_one_matrix_is_enough_for_a_tied_model(kept, tmp_path):
    expected = write_litgpt_checkpoint(tmp_path, "Qwen2.5-0.5B", same_matrices=True)
    state = torch.load(tmp_path / "lit_model.pth")
    del state[({"transformer.wte.weight", "lm_head.weight"} - {kept}).pop()]
    model = GPT(Config.from_file(tmp_path / "model_config.yaml"))
    result = model.load_state_dict(state)  # strict: the other key is not reported missing
    assert not result.missing_keys and not result.unexpected_keys
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)


def test_untied_config_loads_untied_checkpoint_unchanged(tmp_path):
    expected = write_litgpt_checkpoint(tmp_path, "Gemma-2-2b")
    config = dataclasses.replace(Config.from_file(tmp_path / "model_config.yaml"), tie_embeddings=False)
    model = GPT(config)
    model.load_state_dict(torch.load(tmp_path / "lit_model.pth"))
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# GPT methods with LitGPT's arguments
def llama_config(**overrides) -> Config:
    fields = dict(name="tiny", n_layer=2, n_embd=32, n_head=4, n_query_groups=2, vocab_size=64, padded_vocab_size=64,
                  block_size=32, rotary_percentage=1.0, parallel_residual=False, bias=False,
                  norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48)
    fields.update(overrides)
    return Config(**fields)


@pytest.mark.parametrize("overrides", [{}, {"sliding_window_size": 3}], ids=["global", "sliding"])
def test_set_kv_cache_then_forward_without_input_pos_is_a_plain_forward(overrides):
    """LitGPT: a forward without input_pos neither reads nor writes a cache that is set."""
    torch.manual_seed(0)
    model = GPT(llama_config(**overrides)).eval()
    idx = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        expected = model(idx)
        model.set_kv_cache(batch_size=2)
        torch.testing.assert_close(model(idx), expected)
    assert all(b.attn.kv_cache.k.abs().sum() == 0 for b in model.transformer.h)


def test_gpt_methods_with_litgpts_arguments():
    torch.manual_seed(0)
    model = GPT(config=llama_config()).eval()
    idx = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        full = model(idx=idx)
        model.max_seq_length = 16
        assert model.max_seq_length == 16 and model.cos.shape == (16, 8)
        cos, sin = model.rope_cache(device=torch.device("cpu"))
        assert cos.shape == sin.shape == (16, 8) and model.rope_cache_length() == 8
        model.set_kv_cache(batch_size=2, max_seq_length=12, rope_cache_length=model.cos.size(-1), device=None,
                           dtype=torch.float32)
        assert model.transformer.h[0].attn.kv_cache.k.shape == (2, 2, 12, 8)
        prefill = model(idx=idx[:, :5], input_pos=torch.arange(5), input_pos_maxp1=5, lm_head_chunk_size=0)
        steps = [prefill] + [model(idx[:, t : t + 1], input_pos=torch.tensor([t]), input_pos_maxp1=t + 1)
                             for t in range(5, 9)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
        chunks = model(idx, lm_head_chunk_size=4)
        assert [c.shape[1] for c in chunks] == [4, 4, 1]
        model.clear_kv_cache()
        assert model.transformer.h[0].attn.kv_cache is None
        model.cos.zero_()
        model.reset_parameters()  # LitGPT's: rebuilds the RoPE tables, keeps the weights
        torch.testing.assert_close(model(idx), full)
    linear = torch.nn.Linear(64, 64)
    model._init_weights(module=linear)
    assert linear.bias.abs().sum() == 0 and 0.015 < linear.weight.std() < 0.025


def test_block_and_attention_constructors_and_forward_with_litgpts_arguments():
    config = llama_config()
    torch.manual_seed(0)
    block = Block(config=config, block_idx=0)
    attn = CausalSelfAttention(config=config, block_idx=1)
    x = torch.randn(1, 5, 32)
    cos, sin = build_rope_cache(seq_len=5, n_elem=8)
    y = block(x=x, cos=cos, sin=sin, mask=None, input_pos=None, input_pos_maxp1=None)
    assert y.shape == x.shape
    # LitGPT's scaled_dot_product_attention: (B, nh, T, hs) heads in, (B, T, nh, hs) out, causal when mask=None
    q, k, v = (torch.randn(1, 4, 5, 8) for _ in range(3))
    out = attn.scaled_dot_product_attention(q=q, k=k, v=v, mask=None)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, ref)
    cache = attn.build_kv_cache(batch_size=3, max_seq_length=7, rope_cache_length=None, device=None,
                                dtype=torch.bfloat16)
    assert isinstance(cache, KVCache) and cache.k.shape == (3, 2, 7, 8) and cache.k.dtype == torch.bfloat16


# --------------------------------------------------------------------------------------------------
# Module functions and small classes
def test_build_rope_cache_with_litgpts_arguments():
    cos, sin = build_rope_cache(seq_len=6, n_elem=4, device=None, base=100, condense_ratio=2, extra_config=None)
    inv_freq = 1.0 / 100 ** (torch.arange(0, 4, 2) / 4)
    angles = torch.outer(torch.arange(6) / 2, inv_freq).repeat(1, 2)
    torch.testing.assert_close(cos, angles.cos())
    torch.testing.assert_close(sin, angles.sin())
    linear, _ = build_rope_cache(seq_len=6, n_elem=4, base=100, extra_config={"factor": 2.0})
    torch.testing.assert_close(linear, torch.outer(torch.arange(6.0), inv_freq / 2).repeat(1, 2).cos())
    both, _ = build_rope_cache(seq_len=6, n_elem=4, base=100, extra_config={"factor": 2.0}, rope_local_base_freq=10.0)
    assert both.shape == (6, 4, 2)
    torch.testing.assert_close(both[..., 0], linear)
    torch.testing.assert_close(both[..., 1], build_rope_cache(6, 4, base=10)[0])  # local layers: no scaling
    llama3, _ = build_rope_cache(6, 4, extra_config=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                           original_max_seq_len=4))
    assert llama3.shape == (6, 4)
    meta, _ = build_rope_cache(4, 4, device=torch.device("meta"))
    assert meta.is_meta


def test_build_mask_cache():
    mask = build_mask_cache(max_seq_length=4, device=torch.device("cpu"))
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == torch.bool
    assert torch.equal(mask[0, 0], torch.ones(4, 4, dtype=torch.bool).tril())


def test_do_softcapping():
    x = torch.tensor([-100.0, 0.5, 100.0], dtype=torch.bfloat16)
    y = do_softcapping(x=x, thresh=5.0)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), 5.0 * torch.tanh(x.float() / 5.0), rtol=1e-2, atol=1e-2)


def test_apply_rope_with_per_sequence_tables():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8)
    cos, sin = build_rope_cache(5, 8)
    shared = apply_rope(x=x, cos=cos, sin=sin)
    batched = apply_rope(x=x, cos=cos.expand(2, 5, 8), sin=sin.expand(2, 5, 8))  # LitGPT's (B, T, n) tables
    torch.testing.assert_close(batched, shared)
    rotated = torch.cat((-x[..., 4:], x[..., :4]), dim=-1)
    torch.testing.assert_close(shared, x * cos + rotated * sin)
    assert apply_rope(x.bfloat16(), cos, sin).dtype == torch.bfloat16


def test_batched_index_select():
    t = torch.arange(2 * 5 * 3.0).view(2, 5, 3)
    torch.testing.assert_close(batched_index_select(t=t, dim=1, idx=torch.tensor([4, 0])), t[:, [4, 0]])
    idx = torch.tensor([[4, 1], [0, 2], [3, 3]])  # one row of indices per leading entry
    out = batched_index_select(t=t, dim=1, idx=idx)
    assert out.shape == (3, 2, 2, 3)
    for i in range(3):
        torch.testing.assert_close(out[i], t.index_select(1, idx[i]))
    cos = torch.randn(10, 4)
    pos = torch.tensor([[0, 1, 2], [5, 6, 7]])
    torch.testing.assert_close(batched_index_select(cos, 0, pos), cos[pos])  # (B, T, n)


def test_batched_index_copy_():
    t = torch.zeros(2, 3, 4, 2)
    val = torch.randn(2, 3, 2, 2)
    idx = torch.tensor([[3, 1], [0, 2]])
    out = batched_index_copy_(t=t, dim=2, idx=idx, val=val)
    assert out is t
    for b in range(2):
        torch.testing.assert_close(t[b, :, idx[b]], val[b])
    shared = torch.zeros(2, 3, 4)
    batched_index_copy_(shared, 1, torch.tensor([2]), torch.ones(2, 1, 4))
    assert shared[:, 2].sum() == 8 and shared.sum() == 8
    with pytest.raises(ValueError, match="batched"):
        batched_index_copy_(torch.zeros(2, 3, 4), 1, torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1, 4))


def test_kv_cache_with_litgpts_arguments():
    cache = KVCache(k_shape=(2, 2, 6, 4), v_shape=(2, 2, 6, 3), device=torch.device("cpu"), dtype=torch.float32,
                    is_sliding_window=False, sliding_window_size=None)
    k, v = torch.randn(2, 2, 2, 4), torch.randn(2, 2, 2, 3)
    k_all, v_all = cache(input_pos=torch.tensor([1, 3]), k=k, v=v)
    assert k_all.shape == (2, 2, 6, 4) and v_all.shape == (2, 2, 6, 3)
    torch.testing.assert_close(k_all[:, :, [1, 3]], k)
    k_rows, _ = cache(torch.tensor([[0], [5]]), torch.ones(2, 2, 1, 4), torch.ones(2, 2, 1, 3))  # per-row positions
    assert k_rows[0, :, 0].eq(1).all() and k_rows[1, :, 5].eq(1).all() and k_rows[1, :, 0].ne(1).all()
    assert cache(torch.tensor([2]), k[:1, :, :1], v[:1, :, :1])[0].shape == (1, 2, 6, 4)  # a smaller batch
    cache.reset_parameters()
    assert cache.k.abs().sum() == 0 and cache.v.abs().sum() == 0
    assert not cache.state_dict()  # not saved with the model


@pytest.mark.parametrize("mlp_class", [GptNeoxMLP, LLaMAMLP, GemmaMLP])
def test_mlps_with_litgpts_arguments(mlp_class):
    config = llama_config(mlp_class_name=mlp_class.__name__)
    mlp = mlp_class(config=config, intermediate_size=20)
    first = mlp.fc if mlp_class is GptNeoxMLP else mlp.fc_1
    assert first.out_features == 20 and mlp.proj.in_features == 20
    assert mlp(torch.randn(2, 3, 32)).shape == (2, 3, 32)
    assert mlp_class(config).proj.in_features == 48  # default: config.intermediate_size


def test_llama_moe_with_litgpts_arguments():
    config = llama_config(mlp_class_name="LLaMAMoE", n_expert=4, n_expert_per_token=2, moe_intermediate_size=16)
    moe = LLaMAMoE(config=config)
    assert len(moe.experts) == 4 and moe.experts[0].fc_1.out_features == 16
    assert moe(torch.randn(2, 3, 32)).shape == (2, 3, 32)


# --------------------------------------------------------------------------------------------------
# Multi-head latent attention
LATENT = {"q_lora_rank": 16, "kv_lora_rank": 12, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 12}


def mla_config(latent=LATENT, **overrides) -> Config:
    fields = dict(name="tiny-mla", n_layer=2, n_embd=64, n_head=4, vocab_size=97, padded_vocab_size=97,
                  block_size=64, parallel_residual=False, bias=False, norm_class_name="RMSNorm", norm_eps=1e-6,
                  mlp_class_name="LLaMAMLP", intermediate_size=96, latent_attention=dict(latent))
    fields.update(overrides)
    return Config(**fields)


def test_multihead_latent_attention_layout_is_litgpts():
    config = mla_config()
    assert config.rope_n_elem == 8  # RoPE covers qk_rope_head_dim
    model = GPT(config)
    attn = model.transformer.h[0].attn
    assert isinstance(attn, MultiheadLatentAttention) and not isinstance(attn, CausalSelfAttention)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if ".h.0.attn." in k}
    assert shapes == {  # LitGPT 0.5.13's names and shapes for this config
        "transformer.h.0.attn.q_a_proj.weight": (16, 64),
        "transformer.h.0.attn.q_a_norm.weight": (16,),
        "transformer.h.0.attn.q_b_proj.weight": (96, 16),
        "transformer.h.0.attn.kv_a_proj_with_mqa.weight": (20, 64),
        "transformer.h.0.attn.kv_a_norm.weight": (12,),
        "transformer.h.0.attn.kv_b_proj.weight": (112, 12),
        "transformer.h.0.attn.proj.weight": (64, 48),
    }
    model.set_kv_cache(batch_size=2)
    assert attn.kv_cache.k.shape == (2, 4, 64, 24) and attn.kv_cache.v.shape == (2, 4, 64, 12)
    direct = MultiheadLatentAttention(config=mla_config(latent={**LATENT, "q_lora_rank": None}), block_idx=0)
    assert direct.q_proj.weight.shape == (96, 64)


def test_latent_attention_config_errors():
    with pytest.raises(ValueError, match="kv_lora_rank"):
        mla_config(latent={"q_lora_rank": 16})
    with pytest.raises(ValueError, match="latent_attention"):
        llama_config(rope_interleave=True)


def _hf_deepseek(q_lora_rank, rope_interleave):
    import transformers
    hf_config = transformers.DeepseekV3Config(
        hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=q_lora_rank, kv_lora_rank=12, qk_rope_head_dim=8, qk_nope_head_dim=16,
        v_head_dim=12, first_k_dense_replace=2, n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_interleave=rope_interleave, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():  # noise everywhere, norms included, so any wrong mapping shows
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


_HF_TO_OURS = {  # DeepSeek's names (dense layers) -> ours; the converter is not part of this test
    "input_layernorm": "norm_1", "post_attention_layernorm": "norm_2", "self_attn.o_proj": "attn.proj",
    "self_attn.q_a_layernorm": "attn.q_a_norm", "self_attn.kv_a_layernorm": "attn.kv_a_norm", "self_attn.": "attn.",
    "mlp.gate_proj": "mlp.fc_1", "mlp.up_proj": "mlp.fc_2", "mlp.down_proj": "mlp.proj",
}


def _our_state(hf_state: dict) -> dict:
    out = {}
    for key, value in hf_state.items():
        if key == "model.embed_tokens.weight":
            key = "transformer.wte.weight"
        elif key == "model.norm.weight":
            key = "transformer.ln_f.weight"
        elif key.startswith("model.layers."):
            key = key.replace("model.layers.", "transformer.h.")
            for hf_name, name in _HF_TO_OURS.items():
                if hf_name in key:
                    key = key.replace(hf_name, name)
                    break
        out[key] = value
    return out


@pytest.mark.parametrize("q_lora_rank", [16, None], ids=["q_lora", "q_full"])
@pytest.mark.parametrize("rope_interleave", [True, False], ids=["interleaved", "halves"])
def test_multihead_latent_attention_matches_transformers_deepseek_v3(q_lora_rank, rope_interleave):
    hf_model = _hf_deepseek(q_lora_rank, rope_interleave)
    ids = torch.randint(3, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    config = mla_config(latent={**LATENT, "q_lora_rank": q_lora_rank}, rope_interleave=rope_interleave)
    model = GPT(config)
    model.load_state_dict(_our_state(hf_model.state_dict()))
    with torch.no_grad():
        expected = hf_model(ids).logits
        actual = model.eval()(ids)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
        assert (actual - expected).abs().max() / expected.abs().max() < 1e-5
        model.set_kv_cache(batch_size=2)  # and decoding through the cache gives the same logits
        steps = [model(ids[:, :7], input_pos=torch.arange(7))]
        steps += [model(ids[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=1e-5, atol=1e-5)


def test_attention_scale_of_latent_attention_is_qk_head_dim():
    attn = MultiheadLatentAttention(mla_config(), block_idx=0)
    q, k = torch.randn(1, 4, 3, 24), torch.randn(1, 4, 3, 24)
    v = torch.randn(1, 4, 3, 12)
    out = attn.scaled_dot_product_attention(q, k, v)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(24)
    scores = scores.masked_fill(~torch.ones(3, 3, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(out, (scores.softmax(-1) @ v).transpose(1, 2))


def test_kv_cache_longer_than_max_seq_length_extends_the_rope_tables():
    """LitGPT accepts a cache longer than `max_seq_length`; here the RoPE tables grow with it (up to block_size)."""
    model = GPT(llama_config())
    model.max_seq_length = 8
    model.set_kv_cache(batch_size=1, max_seq_length=12)
    assert model.transformer.h[0].attn.kv_cache.k.size(2) == 12 and model.max_seq_length == 12
    with torch.no_grad():
        assert model(torch.zeros(1, 12, dtype=torch.long), input_pos=torch.arange(12)).shape == (1, 12, 64)
    with pytest.raises(ValueError, match="block_size"):
        model.set_kv_cache(batch_size=1, max_seq_length=33)
