"""The generation engine: sampling rules, stop sequences and strings, batched generation equal to one-by-one,
text streaming, the KV cache and the compiled decode step."""

import time
import warnings

import pytest
import torch

from litgpt import GPT, Config
from litgpt.generate.engine import (
    Generation,
    StopStringFilter,
    TextRow,
    check_sampling_args,
    compile_decode_step,
    fit_to_context,
    generate,
    kv_cache_shape,
    generate_stream,
    prepare_cache,
    sample,
    top_p_filter,
)
from litgpt.tokenizer import Tokenizer
from tests._gen_helpers import FAMILIES, shrunk
from tests._tokenizers import make_hf_tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = Config(name="tiny", n_layer=2, n_embd=32, n_head=4, n_query_groups=2, vocab_size=64,
                    padded_vocab_size=64, block_size=64, rotary_percentage=1.0, parallel_residual=False,
                    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48,
                    sliding_window_size=5, sliding_window_indices=[1, 0])
    return GPT(config).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer(make_hf_tokenizer(tmp_path_factory.mktemp("tok")))


def _alone_and_batched(model, prompts, n):
    alone = []
    for p in prompts:
        model.clear_kv_cache()
        alone.append(generate(model, p, n, temperature=0)[0])
    model.clear_kv_cache()
    return alone, generate(model, prompts, n, temperature=0)


def test_batched_greedy_equals_each_prompt_alone(model):
    prompts = [torch.randint(0, 64, (n,)) for n in (3, 9, 5, 1)]
    alone, batched = _alone_and_batched(model, prompts, 10)
    for a, b in zip(alone, batched):
        assert torch.equal(a, b)


def test_batched_equals_alone_with_learned_absolute_positions():
    # GPT-2 style: a prompt's positions must start at 0 in a batch too (right padding, per-row positions)
    torch.manual_seed(1)
    config = Config(name="gpt2-tiny", n_layer=2, n_embd=32, n_head=4, vocab_size=64, padded_vocab_size=64,
                    block_size=32, rotary_percentage=0.0, learned_pos_embedding=True, parallel_residual=False)
    model = GPT(config).eval()
    prompts = [torch.randint(0, 64, (n,)) for n in (2, 7, 4)]
    alone, batched = _alone_and_batched(model, prompts, 8)
    for a, b in zip(alone, batched):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_generates_batched_like_alone(name):
    torch.manual_seed(0)
    model = GPT(shrunk(name)).eval()
    prompts = [torch.randint(0, 96, (n,)) for n in (5, 2, 8)]
    alone, batched = _alone_and_batched(model, prompts, 6)
    for a, b in zip(alone, batched):
        assert torch.equal(a, b), name


def test_each_row_stops_on_its_own_stop_sequence(model):
    prompts = [torch.randint(0, 64, (n,)) for n in (4, 6)]
    model.clear_kv_cache()
    full = generate(model, prompts, 10, temperature=0)
    seq = full[0].tolist()
    # a two-token stop sequence that row 0 produces for the first time after at least one other token
    i = next(i for i in range(1, len(seq) - 1) if all(seq[j:j + 2] != seq[i:i + 2] for j in range(i)))
    stop = seq[i:i + 2]
    out = generate(model, prompts, 10, temperature=0, stop_tokens=[stop])
    assert out[0].tolist() == seq[:i + 2]
    assert out[1].tolist() == full[1][: len(out[1])].tolist()
    trimmed = generate(model, prompts, 10, temperature=0, stop_tokens=[stop], include_stop=False)
    assert trimmed[0].tolist() == seq[:i]


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


def test_top_k_1_is_an_argmax_whatever_the_temperature():
    logits = torch.randn(3, 50)
    for temperature in (0.5, 1.0, 7.0):
        assert torch.equal(sample(logits, temperature=temperature, top_k=1), logits.argmax(-1))


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


def test_new_tokens_beyond_the_context_are_clipped_with_one_warning(model):
    model.clear_kv_cache()
    with pytest.warns(UserWarning, match="generating at most 4 tokens") as record:
        out = generate(model, torch.zeros(60, dtype=torch.long), 10, temperature=0)
    assert len(record) == 1
    assert len(out[0]) == 4
    with pytest.raises(ValueError, match="prompt is 64 tokens but the model's context holds 64"):
        generate(model, torch.zeros(64, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="prompts must not be empty"):
        generate(model, [], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_to_context(10, 5, 64) == 5  # fits: no warning


def test_kv_cache_is_reused_resized_fixed_or_bucketed(model):
    model.clear_kv_cache()
    prepare_cache(model, 2, 20)
    assert kv_cache_shape(model) == (2, 20)
    prepare_cache(model, 1, 15)  # smaller request: reuse
    assert kv_cache_shape(model) == (2, 20)
    prepare_cache(model, 1, 8)  # far smaller: a cheaper cache
    assert kv_cache_shape(model) == (1, 8)
    prepare_cache(model, 1, 10, fixed_len=40)
    assert kv_cache_shape(model) == (1, 40)
    prepare_cache(model, 1, 3, bucket=True)
    assert kv_cache_shape(model) == (1, 64)  # next power of two, at least 64, at most the context
    with pytest.raises(ValueError, match="exceed the model's context of 40"):
        prepare_cache(model, 1, 41, fixed_len=40)


def test_stop_string_filter_holds_back_possible_starts_and_cuts_across_pieces():
    f = StopStringFilter(["STOP", "\n\n"])
    assert f.push("hello S") == "hello "  # "S" may begin "STOP"
    assert f.push("T") == ""
    assert f.push("ar") == "STar"  # not a stop string after all
    assert f.push(" ST") == " "
    assert f.push("OP and more") == ""
    assert f.stopped and f.flush() == ""
    g = StopStringFilter(["\n\n"])
    assert g.push("a\n") == "a"
    assert g.flush() == "\n"  # end of text: what was held comes out


def test_top_p_filter_keeps_the_smallest_nucleus_reaching_top_p():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0]])  # row 0: probabilities .09 .23 .64 .05
    out = top_p_filter(logits, 0.7)
    assert out[0].isinf().tolist() == [True, False, False, True]
    assert out[1].isinf().sum() == 1  # 3 of 4 equal tokens reach 0.7
    assert top_p_filter(logits, 0.0).isinf().sum(-1).tolist() == [3, 3]  # the most likely token always stays


def test_generate_stream_takes_a_sampler_per_batch(model):
    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])]
    model.set_kv_cache(2, 16)
    seen = []

    def lowest_id(logits):
        seen.append(tuple(logits.shape))
        return torch.zeros(logits.size(0), dtype=torch.long)

    steps = list(generate_stream(model, prompts, 4, sample_fn=lowest_id))
    assert steps == [[0, 0]] * 4 and seen == [(2, 64)] * 4


def test_text_row_with_include_stop_keeps_the_stop_sequence_and_holds_nothing_back():
    row = TextRow(stop_tokens=[[7, 8]], decode=False, include_stop=True)
    assert row.add(3) is False and row.add(7) is False
    assert row.take() == [3, 7]  # nothing held back
    assert row.add(8) is True
    row.finish()
    assert row.take() == [8] and row.token_ids() == [3, 7, 8] and row.finish_reason == "stop"

def test_text_row_drops_a_multi_token_stop_sequence_and_releases_a_broken_one(tokenizer):
    a, b, c = tokenizer.encode("cat", bos=False)[0].item(), tokenizer.encode("dog", bos=False)[0].item(), 60
    row = TextRow(tokenizer, stop_tokens=[[a, b]])
    assert row.add(c) is False
    assert row.add(a) is False  # may begin the stop sequence: held back
    held_text = row.take()
    assert held_text == tokenizer.decode([c])
    assert row.add(c) is False  # the sequence broke: `a` and `c` come out
    assert row.take() == tokenizer.decode([a, c])
    assert row.add(a) is False and row.add(b) is True  # complete: the row ends
    row.finish()
    assert row.text == tokenizer.decode([c, a, c]) and row.finish_reason == "stop"
    assert row.token_ids() == [c, a, c]


def test_stream_text_pieces_join_to_the_text_and_stop_strings_cut_across_tokens(model, tokenizer):
    # a model whose vocabulary is the tokenizer's
    torch.manual_seed(0)
    config = Config(name="tiny", n_layer=2, n_embd=32, n_head=4, vocab_size=256, padded_vocab_size=256,
                    block_size=96, rotary_percentage=1.0, parallel_residual=False, norm_class_name="RMSNorm",
                    mlp_class_name="LLaMAMLP", intermediate_size=48)
    lm = GPT(config).eval()
    prompts = [tokenizer.encode("The quick brown fox"), tokenizer.encode("Once")]
    rows = [TextRow(tokenizer) for _ in prompts]
    pieces = {0: [], 1: []}
    for i, piece in Generation(lm, prompts, rows, 30, temperature=0):
        pieces[i].append(piece)
    full = [tokenizer.decode(generate(lm, p, 30, temperature=0)[0]) for p in prompts]
    for i in (0, 1):
        assert "".join(pieces[i]) == rows[i].text == full[i]
    # a stop string spanning two or more tokens: the text ends right before it
    ids = generate(lm, prompts[0], 30, temperature=0)[0].tolist()
    start = len(tokenizer.decode(ids[:5]))
    stop = full[0][start - 1 : start + 2]
    assert len(stop) == 3
    row = TextRow(tokenizer, stop_strings=[stop])
    gen = Generation(lm, prompts[:1], [row], 30, temperature=0)
    streamed = "".join(piece for _, piece in gen)
    assert streamed == row.text == full[0][: full[0].index(stop)]
    assert row.finish_reason == "stop" and len(row.tokens) < 30
    assert tokenizer.decode(row.token_ids()) == full[0][: len(tokenizer.decode(row.token_ids()))]
    assert len(tokenizer.decode(row.token_ids())) <= len(row.text)
    assert gen.tokens_generated == len(row.tokens) and gen.seconds > 0 and gen.first_token_seconds <= gen.seconds


def test_generation_checks_its_arguments_before_any_work(model):
    with pytest.raises(ValueError, match="prompt 1 holds no tokens"):
        Generation(model, [torch.tensor([1]), torch.tensor([], dtype=torch.long)], [TextRow(decode=False)] * 2, 3)
    with pytest.raises(ValueError, match="one TextRow per prompt"):
        Generation(model, [torch.tensor([1])], [], 3)
    with pytest.raises(ValueError, match="stop strings need text output"):
        TextRow(decode=False, stop_strings=["x"])


def test_compiled_decode_step_matches_eager(model):
    prompts = [torch.randint(0, 64, (n,)) for n in (4, 7)]
    model.clear_kv_cache()
    eager = generate(model, prompts, 8, temperature=0)
    model.clear_kv_cache()
    # aot_eager captures the whole step as one graph (fullgraph=True) without C++ codegen, in about a second
    step = compile_decode_step(backend="aot_eager")
    compiled = generate(model, prompts, 8, temperature=0, step_fn=step, bucket_cache=True)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_inductor_compiled_decode_step_matches_eager(model):
    prompts = [torch.randint(0, 64, (n,)) for n in (4, 7)]
    model.clear_kv_cache()
    eager = generate(model, prompts, 8, temperature=0)
    step = compile_decode_step()
    start = time.perf_counter()
    compiled = generate(model, prompts, 8, temperature=0, step_fn=step, fixed_cache_len=32)
    assert time.perf_counter() - start < 300
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
