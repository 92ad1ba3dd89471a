"""Speculative decoding: greedy output equals the target alone; acceptance counted right."""

import pytest
import torch

from litgpt import GPT, Config
from litgpt.generate.speculative import speculative_generate


def tiny(seed, n_layer=2, **kw):
    torch.manual_seed(seed)
    config = Config(name=f"tiny-{seed}", n_layer=n_layer, n_embd=32, n_head=4, n_query_groups=2, vocab_size=48,
                    padded_vocab_size=48, block_size=128, rotary_percentage=1.0, parallel_residual=False,
                    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48, bias=False, **kw)
    return GPT(config).eval()


def greedy_alone(model, prompt, n):
    ids = prompt.tolist()
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_equals_target_alone_with_a_different_draft(k):
    target, draft = tiny(0, n_layer=3), tiny(1)
    prompt = torch.randint(0, 48, (7,))
    out, stats = speculative_generate(target, draft, prompt, 20, speculative_k=k, temperature=0)
    assert out.tolist() == greedy_alone(target, prompt, 20)
    assert 0 <= stats.accepted <= stats.proposed
    assert stats.target_calls < 1 + 20 or stats.acceptance_rate == 0  # never more calls than plain decoding


def test_draft_equal_to_target_accepts_everything_and_saves_target_calls():
    target = tiny(0, n_layer=3)
    prompt = torch.randint(0, 48, (5,))
    out, stats = speculative_generate(target, target, prompt, 21, speculative_k=4, temperature=0)
    assert out.tolist() == greedy_alone(target, prompt, 21)
    assert stats.acceptance_rate == 1.0
    assert stats.target_calls == 1 + 4  # prefill + 4 rounds of 5 tokens


def test_sampling_with_identical_draft_accepts_every_proposal():
    target = tiny(0)
    g = torch.Generator().manual_seed(0)
    out, stats = speculative_generate(target, target, torch.randint(0, 48, (4,)), 16, speculative_k=3,
                                      temperature=1.0, top_p=0.9, generator=g)
    assert len(out) == 16 and stats.acceptance_rate == 1.0


def test_stops_on_a_stop_sequence_and_checks_inputs():
    target, draft = tiny(0), tiny(1)
    prompt = torch.randint(0, 48, (6,))
    full = greedy_alone(target, prompt, 12)
    out, _ = speculative_generate(target, draft, prompt, 12, speculative_k=4, temperature=0, stop_tokens=[[full[5]]])
    assert out.tolist() == full[: full.index(full[5]) + 1]
    with pytest.raises(ValueError, match="speculative_k must be >= 1"):
        speculative_generate(target, draft, prompt, 4, speculative_k=0)
    torch.manual_seed(2)
    other = GPT(Config(name="o", n_layer=1, n_embd=32, n_head=4, vocab_size=64, padded_vocab_size=64, block_size=64))
    with pytest.raises(ValueError, match="same tokenizer"):
        speculative_generate(target, other, prompt, 4)


def bf16_tiny(seed, n_layer=2):
    torch.manual_seed(seed)
    config = Config(name=f"b{seed}", n_layer=n_layer, n_embd=64, n_head=4, n_query_groups=2, vocab_size=96,
                    padded_vocab_size=96, block_size=256, rotary_percentage=1.0, parallel_residual=False,
                    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=128, bias=False)
    return GPT(config).eval().to(torch.bfloat16)


@pytest.mark.parametrize("k", [1, 4])
def test_bfloat16_greedy_equals_generate_on_the_same_engine(k):
    """bf16 on the CPU: both models run on `generate`'s engine (the native kernels where the CPU has them), and
    greedy output is the target's own `generate` output."""
    from litgpt.generate.cpu import native_decode_problem
    from litgpt.generate.engine import generate, prepare_cache

    target, draft = bf16_tiny(0, n_layer=3), bf16_tiny(1)
    prompt = torch.randint(0, 96, (9,))
    prepare_cache(target, 1, 9 + 30)
    native = native_decode_problem(target) is None
    alone = generate(target, [prompt], 30, temperature=0)[0].tolist()
    for d in (draft, target):
        out, stats = speculative_generate(target, d, prompt, 30, speculative_k=k, temperature=0)
        assert out.tolist() == alone
        assert stats.native == (native, native)
    assert stats.acceptance_rate == 1.0 and stats.target_calls <= 1 + -(-29 // (k + 1))


def test_native_extend_scores_every_token_as_decode_steps_do():
    """The target's check of k draft tokens is one multi-row pass; its logits are those of k single steps."""
    from litgpt.generate.cpu import native_decode_step

    model = bf16_tiny(2)
    model.set_kv_cache(batch_size=1, max_seq_length=32)
    native = native_decode_step(model)
    if native is None:  # no AVX512-BF16 or no C compiler: the PyTorch path is covered by the tests above
        return
    tokens = torch.randint(0, 96, (12,))
    native.prefill(model, [tokens[:6]])
    steps = torch.cat([native(model, tokens[i].view(1, 1), torch.tensor([i])) for i in range(6, 12)])
    native.prefill(model, [tokens[:6]])
    together = native.extend(model, tokens[6:], 6)
    assert together.shape == (6, 96)
    torch.testing.assert_close(together, steps, atol=0.05, rtol=0.02)
    assert together.argmax(-1).tolist() == steps.argmax(-1).tolist()
    with pytest.raises(ValueError, match="outside the KV cache"):
        native.extend(model, tokens, 30)


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_generate_speculatively_verb_matches_generate(tmp_path, capsys, precision):
    from litgpt.__main__ import main
    from tests._gen_helpers import make_checkpoint, tiny_config

    target_dir = make_checkpoint(tmp_path / "target", tiny_config(n_layer=3), seed=0)
    draft_dir = make_checkpoint(tmp_path / "draft", tiny_config(), seed=1)
    args = ["--prompt", "Hello there", "--max_new_tokens", "12", "--precision", precision, "--temperature", "0"]
    assert main(["generate", str(target_dir), *args]) == 0
    plain = capsys.readouterr().out
    # LitGPT's order: the draft first, then the target
    assert main(["generate_speculatively", str(draft_dir), str(target_dir), *args, "--speculative_k", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain
    assert "acceptance rate" in captured.err and "tokens/sec" in captured.err and precision in captured.err
