"""The continuous-batching scheduler of `litgpt serve`, without HTTP: exact greedy results in any batch,
admission while others run, per-request sampling, stop strings, limits, cancellation."""

import threading
import time

import pytest
import torch

from litgpt import GPT
from litgpt.deploy.scheduler import GenerationRequest, Scheduler
from litgpt.generate.engine import generate
from litgpt.tokenizer import Tokenizer
from tests._gen_helpers import tiny_config
from tests._tokenizers import make_hf_tokenizer

CONFIGS = {
    "llama": tiny_config(block_size=96),
    "sliding": tiny_config(block_size=96, sliding_window_size=6, sliding_window_indices=[1, 0]),
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer(make_hf_tokenizer(tmp_path_factory.mktemp("tok")))


def _model(config):
    torch.manual_seed(0)
    return GPT(config).eval()


def _alone(model, prompt, max_new_tokens, **kwargs):
    model.clear_kv_cache()
    return generate(model, prompt, max_new_tokens, temperature=0, **kwargs)[0].tolist()


def _concurrently(scheduler, calls):
    """Runs `scheduler.generate(**kwargs)` for every kwargs at once, from threads; returns the completions."""
    results = [None] * len(calls)

    def run(i):
        results[i] = scheduler.generate(**calls[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_results_equal_each_request_alone(name, tokenizer):
    model = _model(CONFIGS[name])
    torch.manual_seed(1)
    lengths, budgets = (3, 17, 5, 1, 30, 8, 12, 2), (12, 7, 20, 15, 3, 24, 1, 9)
    prompts = [torch.randint(3, 256, (n,)) for n in lengths]
    expected = [_alone(model, p, n) for p, n in zip(prompts, budgets)]
    # 4 slots for 8 requests: requests queue, rows retire at different steps and the last row moves into the hole
    with Scheduler(model, tokenizer, max_batch_size=4) as scheduler:
        results = _concurrently(scheduler, [dict(prompt=p, max_new_tokens=n, temperature=0)
                                            for p, n in zip(prompts, budgets)])
        stats = scheduler.stats
    for got, want, n in zip(results, expected, budgets):
        assert list(got.token_ids) == want
        assert got.finish_reason == "length" and len(got.token_ids) == n
        assert got.text == tokenizer.decode(want)
    assert stats.max_running == 4 and stats.admitted == 8 and stats.running == stats.waiting == 0


def test_new_requests_join_a_running_batch(tokenizer):
    model = _model(CONFIGS["llama"])
    long_prompt, short_prompt = torch.arange(5, 25), torch.arange(40, 44)
    started, go = threading.Event(), threading.Event()
    long_events, short_events = [], []

    def long_sink(event):
        long_events.append(event)
        if not started.is_set():
            started.set()
            go.wait(10)  # hold the engine after the long request's first token until the short one is queued

    with Scheduler(model, tokenizer, max_batch_size=8) as scheduler:
        scheduler.submit(GenerationRequest(long_prompt, long_sink, max_new_tokens=40, temperature=0))
        assert started.wait(10)
        # each short event records how far the long request was at that moment
        scheduler.submit(GenerationRequest(
            short_prompt, lambda e: short_events.append((e, long_events[-1].completion_tokens)), max_new_tokens=6,
            temperature=0,
        ))
        go.set()
        deadline = time.monotonic() + 30
        while not (long_events[-1].done and short_events and short_events[-1][0].done) and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = scheduler.stats
    assert stats.max_running == 2 and stats.prefills == 2
    # the short request came and went while the long one was decoding
    short_done, long_progress = short_events[-1]
    assert short_done.done and long_progress < 30
    long_ids, short_ids = long_events[-1].token_ids, short_done.token_ids
    assert list(long_ids) == _alone(model, long_prompt, 40)
    assert list(short_ids) == _alone(model, short_prompt, 6)
    assert "".join(e.text for e in long_events) == tokenizer.decode(list(long_ids))


def test_sampling_settings_and_seeds_are_per_request(tokenizer):
    model = _model(CONFIGS["llama"])
    prompt = torch.arange(10, 20)
    sampled = dict(prompt=prompt, max_new_tokens=20, temperature=1.5, top_k=40, top_p=0.9)
    with Scheduler(model, tokenizer, max_batch_size=8) as scheduler:
        alone = scheduler.generate(**sampled, seed=7)
        batch = _concurrently(scheduler, [
            dict(sampled, seed=7), dict(sampled, seed=8), dict(prompt=prompt, max_new_tokens=20, temperature=0),
            dict(sampled, seed=7, temperature=0.7),
        ])
    assert batch[0].token_ids == alone.token_ids  # same seed, same sample, whatever runs beside it
    assert batch[1].token_ids != alone.token_ids
    assert list(batch[2].token_ids) == _alone(model, prompt, 20)  # a greedy row next to sampled rows
    assert batch[3].token_ids != alone.token_ids  # the row's own temperature was used


def test_stop_strings_and_stop_tokens(tokenizer):
    model = _model(CONFIGS["llama"])
    prompt = torch.arange(60, 70)
    greedy = _alone(model, prompt, 30)
    with Scheduler(model, tokenizer) as scheduler:
        full = scheduler.generate(prompt, max_new_tokens=30, temperature=0).text
        stop = next(c for c in full[2:] if c.isprintable() and c != "\ufffd")
        cut = scheduler.generate(prompt, max_new_tokens=30, temperature=0, stop_strings=[stop])
        by_token = scheduler.generate(prompt, max_new_tokens=30, temperature=0, stop_tokens=[greedy[4]])
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    first = greedy.index(greedy[4])
    assert list(by_token.token_ids) == greedy[: first + 1] and by_token.finish_reason == "stop"
    assert by_token.text == tokenizer.decode(greedy[:first])


def test_context_limits(tokenizer):
    model = _model(CONFIGS["llama"])
    with Scheduler(model, tokenizer, max_seq_length=64) as scheduler:
        clipped = scheduler.generate(torch.arange(3, 60), max_new_tokens=50, temperature=0)
        assert len(clipped.token_ids) == 7 and clipped.finish_reason == "length"  # 57 + 7 = the 64 positions
        with pytest.raises(ValueError, match="the prompt is 64 tokens but the context holds 64"):
            scheduler.submit(GenerationRequest(torch.arange(64), print))
        with pytest.raises(ValueError, match="token id 300 is outside the model's vocabulary"):
            scheduler.submit(GenerationRequest([1, 300], print))
    # 2 layers x (k, v) x 2 groups x 8 head size x 4 bytes = 256 bytes per position, 64 positions per row
    with pytest.warns(UserWarning, match="decoding at most 3 requests together"):
        small = Scheduler(model, tokenizer, max_batch_size=16, max_seq_length=64, memory_budget=3 * 64 * 256 + 100)
    small.close()
    assert small.max_batch_size == 3 and small.bytes_per_row == 64 * 256
    with pytest.raises(ValueError, match=r"max_seq_length must be an integer in \[2, 96\]"):
        Scheduler(model, tokenizer, max_seq_length=97)
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        Scheduler(model, tokenizer, max_batch_size=0)
    with pytest.raises(ValueError, match="top_p must be in"):
        GenerationRequest([1], print, top_p=0)


def test_cancel_and_broken_receivers_free_their_slot(tokenizer):
    model = _model(CONFIGS["llama"])

    def broken(event):
        raise ConnectionError("client gone")

    with Scheduler(model, tokenizer, max_batch_size=2) as scheduler:
        events = scheduler.stream(torch.arange(5, 10), max_new_tokens=80, temperature=0)
        next(events)
        events.close()  # leaving the stream cancels the request
        scheduler.submit(GenerationRequest(torch.arange(5, 10), broken, max_new_tokens=80, temperature=0))
        ok = scheduler.generate(torch.arange(7, 12), max_new_tokens=10, temperature=0)
        deadline = time.monotonic() + 10
        while scheduler.stats.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.stats.running == 0 and scheduler.stats.tokens < 80
    assert list(ok.token_ids) == _alone(model, torch.arange(7, 12), 10)


def test_bf16_scheduler_takes_the_native_step_of_generate(tokenizer):
    # a bfloat16 model: where the native CPU step can run, prompts and batched steps go through it, so the
    # greedy tokens equal those of `generate` (which takes the same step), alone or batched
    from litgpt.generate.cpu import native_decode_problem

    model = _model(CONFIGS["sliding"]).to(torch.bfloat16)
    torch.manual_seed(2)
    prompts = [torch.randint(3, 256, (n,)) for n in (4, 19, 7, 1, 11)]
    expected = [_alone(model, p, 16) for p in prompts]
    model.set_kv_cache(batch_size=1, max_seq_length=8)
    eligible = native_decode_problem(model) is None
    with Scheduler(model, tokenizer, max_batch_size=4) as scheduler:
        results = _concurrently(scheduler, [dict(prompt=p, max_new_tokens=16, temperature=0) for p in prompts])
        assert (scheduler.native_problem is None) == eligible  # still native after binding its own cache views
    assert [list(r.token_ids) for r in results] == expected
