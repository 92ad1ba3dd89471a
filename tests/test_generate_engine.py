"""The generation engine: sampling rules, stop sequences, batched generation equal to one-by-one."""

import pytest
import torch

from litgpt import GPT, Config
from litgpt.generate.base import check_sampling_args, generate, sample


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = Config(name="tiny", n_layer=2, n_embd=32, n_head=4, n_query_groups=2, vocab_size=64,
                    padded_vocab_size=64, block_size=64, rotary_percentage=1.0, parallel_residual=False,
                    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48,
                    sliding_window_size=5, sliding_window_indices=[1, 0])
    return GPT(config).eval()


def test_batched_greedy_equals_each_prompt_alone(model):
    prompts = [torch.randint(0, 64, (n,)) for n in (3, 9, 5, 1)]
    alone = []
    for p in prompts:
        model.clear_kv_cache()
        alone.append(generate(model, p, 10, temperature=0)[0])
    model.clear_kv_cache()
    batched = generate(model, prompts, 10, temperature=0)
    for a, b in zip(alone, batched):
        assert torch.equal(a, b)


def test_each_row_stops_on_its_own_stop_sequence(model):
    prompts = [torch.randint(0, 64, (n,)) for n in (4, 6)]
    model.clear_kv_cache()
    full = generate(model, prompts, 10, temperature=0)
    stop = full[0][2:4].tolist()  # a two-token stop sequence that row 0 produces
    out = generate(model, prompts, 10, temperature=0, stop_tokens=[stop])
    assert out[0].tolist() == full[0][:4].tolist()
    assert out[1].tolist() == full[1][: len(out[1])].tolist()
    trimmed = generate(model, prompts, 10, temperature=0, stop_tokens=[stop], include_stop=False)
    assert trimmed[0].tolist() == full[0][:2].tolist()


def test_sampling_rules():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]])
    assert sample(logits, temperature=0).item() == 1
    g = torch.Generator().manual_seed(0)
    assert {sample(logits, temperature=1.0, top_k=1, generator=g).item() for _ in range(20)} == {1}
    assert {sample(logits, temperature=1.0, top_p=0.01, generator=g).item() for _ in range(20)} == {1}
    picks = {sample(logits, temperature=1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert picks == {1, 2}
    a = [sample(logits, 1.0, generator=torch.Generator().manual_seed(3)).item() for _ in range(5)]
    b = [sample(logits, 1.0, generator=torch.Generator().manual_seed(3)).item() for _ in range(5)]
    assert a == b


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    ],
)
def test_bad_sampling_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_sampling_args(**kwargs)


def test_prompt_plus_new_tokens_beyond_context_is_an_error(model):
    model.clear_kv_cache()
    with pytest.raises(ValueError, match="exceed the model's context"):
        generate(model, torch.zeros(60, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="prompts must not be empty"):
        generate(model, [], 3)
