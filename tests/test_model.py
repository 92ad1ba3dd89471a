"""Behaviour of the single model file beyond HF parity: KV cache, masks, positions, dtypes."""

import pytest
import torch

from litgpt import GPT, Config

TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=64, padded_vocab_size=64, block_size=32)


def llama_like(**overrides):
    base = dict(TINY, name="tiny-llama-like", rotary_percentage=1.0, parallel_residual=False, bias=False,
                norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48, n_query_groups=2)
    base.update(overrides)
    return Config(**base)


CONFIGS = {
    "neox": Config(**TINY, name="tiny-neox"),
    "llama-gqa": llama_like(),
    "sliding": llama_like(sliding_window_size=3, sliding_window_indices=[1, 0]),
    "softcap": llama_like(attention_logit_softcapping=5.0, final_logit_softcapping=10.0,
                          rmsnorm_add_unit_offset=True, scale_embeddings=True),
    "local-rope": llama_like(sliding_window_size=4, rope_local_base_freq=10.0, rope_base=1000),
    "moe": llama_like(mlp_class_name="LLaMAMoE", n_expert=4, n_expert_per_token=2, moe_intermediate_size=16),
    "learned-pos": Config(**TINY, name="tiny-gpt2-like", rotary_percentage=0.0, learned_pos_embedding=True,
                          parallel_residual=False, gelu_approximate="tanh"),
}


def _model(config):
    torch.manual_seed(0)
    return GPT(config).eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_kv_cache_prefill_then_steps_equals_full_forward(name):
    model = _model(CONFIGS[name])
    idx = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(idx)
        model.set_kv_cache(batch_size=2, max_seq_length=16)
        pieces = [model(idx[:, :5], input_pos=torch.arange(5))]
        for t in range(5, 12):
            pieces.append(model(idx[:, t : t + 1], input_pos=torch.tensor([t])))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["llama-gqa", "sliding", "local-rope"])
def test_left_padded_batch_with_key_padding_mask_matches_each_row_alone(name):
    """Prompts of different lengths, left-padded into one batch: masking the padding slots gives each
    row's own logits (RoPE depends only on relative positions, so the shared slot positions are fine)."""
    model = _model(CONFIGS[name])
    a, b, pad = torch.randint(0, 64, (1, 7)), torch.randint(0, 64, (1, 4)), 3
    batch = torch.cat([a, torch.cat([torch.zeros(1, pad, dtype=torch.long), b], dim=1)])
    key_padding_mask = torch.ones(2, 16, dtype=torch.bool)
    key_padding_mask[1, :pad] = False
    with torch.no_grad():
        ref_a, ref_b = model(a), model(b)
        model.set_kv_cache(batch_size=2, max_seq_length=16)
        out = model(batch, input_pos=torch.arange(7), key_padding_mask=key_padding_mask)
    torch.testing.assert_close(out[0], ref_a[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[1, pad:], ref_b[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama-gqa", "sliding", "neox"])
def test_per_row_positions_decode_rows_at_different_lengths(name):
    """Right-padded prefill, then decode steps with (B, 1) positions: each row equals decoding it alone."""
    model = _model(CONFIGS[name])
    a, b = torch.randint(0, 64, (1, 10)), torch.randint(0, 64, (1, 10))
    len_a, len_b = 7, 4
    with torch.no_grad():
        ref_a, ref_b = model(a), model(b)
        model.set_kv_cache(batch_size=2, max_seq_length=16)
        batch = torch.cat([a[:, :len_a], torch.cat([b[:, :len_b], torch.zeros(1, 3, dtype=torch.long)], 1)])
        model(batch, input_pos=torch.arange(len_a))  # row b's slots 4..6 hold padding, overwritten below
        outs_a, outs_b = [], []
        for step in range(3):
            pos = torch.tensor([[len_a + step], [len_b + step]])
            tokens = torch.stack([a[:, len_a + step], b[:, len_b + step]])
            logits = model(tokens, input_pos=pos)
            outs_a.append(logits[0, 0])
            outs_b.append(logits[1, 0])
    torch.testing.assert_close(torch.stack(outs_a), ref_a[0, len_a : len_a + 3], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(outs_b), ref_b[0, len_b : len_b + 3], rtol=1e-4, atol=1e-5)


def test_lm_head_chunks_equal_full_logits():
    model = _model(CONFIGS["llama-gqa"])
    idx = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        chunks = model(idx, lm_head_chunk_size=4)
        full = model(idx)
    assert [c.shape[1] for c in chunks] == [4, 4, 2]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full)


def test_sequence_longer_than_max_seq_length_is_an_error():
    model = _model(CONFIGS["neox"])
    with pytest.raises(ValueError, match="max_seq_length"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size"):
        model.max_seq_length = 64


def test_rope_cache_stays_float32_in_bfloat16_model():
    model = _model(CONFIGS["llama-gqa"]).to(torch.bfloat16)
    assert model.cos.dtype == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16
    out = model(torch.randint(0, 64, (1, 5)))
    assert out.dtype == torch.bfloat16


def test_meta_device_build_and_tied_embeddings():
    with torch.device("meta"):
        model = GPT(llama_like(tie_embeddings=True))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "lm_head.weight" in model.state_dict()  # LitGPT layout keeps both keys


def test_moe_routes_to_top_k_experts_only():
    config = CONFIGS["moe"]
    model = _model(config)
    moe = model.transformer.h[0].mlp
    x = torch.randn(1, 3, config.n_embd)
    with torch.no_grad():
        probs = moe.gate(x).softmax(-1)
        top = probs.topk(2, dim=-1)
        expected = torch.zeros_like(x)
        for t in range(3):
            w = top.values[0, t] / top.values[0, t].sum()
            for k in range(2):
                expected[0, t] += w[k] * moe.experts[int(top.indices[0, t, k])](x[0, t])
        torch.testing.assert_close(moe(x), expected, rtol=1e-5, atol=1e-6)
