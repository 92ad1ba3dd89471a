"""LitGPT's generation names (`litgpt.generate.base`, `litgpt.chat.base`), called with LitGPT's arguments.

Each is a thin wrapper over the one engine (`litgpt.generate.engine`): the tests check LitGPT's signatures and
return shapes, and that the tokens are the engine's.
"""

from __future__ import annotations

import inspect
import io
import sys

import pytest
import torch

import litgpt.chat.base as chat
import litgpt.generate.base as base
from litgpt import GPT, LLM
from litgpt.generate import engine
from litgpt.prompts import PromptStyle
from tests._gen_helpers import make_checkpoint, tiny_config

# LitGPT 0.5.13's parameters (name, kind, default) as `inspect.signature` reports them; "-" : no default
P, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
LITGPT_SIGNATURES = {
    (base, "generate"): [("model", P, "-"), ("prompt", P, "-"), ("max_returned_tokens", P, "-"),
                         ("temperature", K, 1.0), ("top_k", K, None), ("top_p", K, 1.0), ("eos_id", K, None),
                         ("include_prompt", K, True)],
    (base, "generate_fn"): [("model", P, "-"), ("prompt", P, "-"), ("max_returned_tokens", P, "-"),
                            ("temperature", K, 1.0), ("top_k", K, None), ("top_p", K, 1.0), ("stop_tokens", K, ()),
                            ("include_prompt", K, "-"), ("include_eos", K, "-")],
    (base, "batched_generate_fn"): [("model", P, "-"), ("prompts", P, "-"), ("max_returned_tokens", P, "-"),
                                    ("sample_args", K, "-"), ("stop_tokens", K, ()), ("include_prompt", K, "-"),
                                    ("include_eos", K, "-")],
    (base, "next_token"): [("model", P, "-"), ("input_pos", P, "-"), ("x", P, "-"), ("input_pos_maxp1", P, None),
                           ("sample_kwargs", inspect.Parameter.VAR_KEYWORD, "-")],
    (base, "batched_next_token"): [("model", P, "-"), ("input_pos", P, "-"), ("x", P, "-"), ("kwargs", P, "-")],
    (base, "sample_top_p"): [("logits", P, "-"), ("top_p", P, "-")],
    (base, "batched_sample"): [("logits", P, "-"), ("kwargs", P, "-")],
    (base, "multinomial_num_samples_1"): [("probs", P, "-")],
    (base, "main"): [("checkpoint_dir", P, "-"), ("prompt", P, "What food do llamas eat?"), ("sys_prompt", K, None),
                     ("num_samples", K, 1), ("max_new_tokens", K, 50), ("top_k", K, 50), ("top_p", K, 1.0),
                     ("temperature", K, 0.8), ("quantize", K, None), ("precision", K, None), ("compile", K, False)],
    (chat, "generate"): [("model", P, "-"), ("prompt", P, "-"), ("max_returned_tokens", P, "-"),
                         ("temperature", K, 1.0), ("top_k", K, None), ("top_p", K, 1.0), ("stop_tokens", K, ())],
    (chat, "process_prompt"): [(n, P, "-") for n in ("prompt", "model", "tokenizer", "prompt_style", "fabric",
                                                      "temperature", "max_new_tokens", "top_k", "top_p", "stop_tokens")],
}


@pytest.mark.parametrize("module, name", list(LITGPT_SIGNATURES), ids=lambda x: getattr(x, "__name__", x))
def test_signatures_are_litgpts(module, name):
    params = inspect.signature(getattr(module, name)).parameters.values()
    got = [(p.name, p.kind, "-" if p.default is p.empty else p.default) for p in params]
    assert got == LITGPT_SIGNATURES[(module, name)]


def test_sample_takes_litgpts_shape_and_the_engines():
    sig = list(inspect.signature(base.sample).parameters)
    assert sig[:4] == ["logits", "temperature", "top_k", "top_p"]
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 16)
    out = base.sample(logits, temperature=0.0)
    assert out.shape == (1,) and out.dtype == torch.long and int(out) == int(logits[0, -1].argmax())
    rows = torch.randn(3, 16)
    assert base.sample(rows, top_k=1).tolist() == rows.argmax(-1).tolist()  # (B, V): one id per row
    assert base.sample(rows, temperature=1.0, top_p=0.0).tolist() == rows.argmax(-1).tolist()  # LitGPT: top_p=0 greedy
    drawn = base.sample(rows, temperature=1.0, top_k=3)
    assert drawn.shape == (3,) and all(int(t) in rows[i].topk(3).indices.tolist() for i, t in enumerate(drawn))
    with pytest.raises(ValueError, match="top_p"):
        base.sample(rows, top_p=2.0)
    assert base.batched_sample([rows[:1], rows[1:2]], [dict(temperature=0.0), dict(top_k=1)]).tolist() == rows[
        :2
    ].argmax(-1).tolist()


def test_sample_top_p_and_multinomial():
    out = base.sample_top_p(torch.tensor([1.0, 2.0, 3.0, 0.5]), 0.7)  # probabilities .09 .23 .64 .05
    assert out.tolist() == [float("-inf"), 2.0, 3.0, float("-inf")]
    assert base.sample_top_p(torch.tensor([1.0, 2.0, 3.0, 0.5]), 0.0).isinf().sum() == 3  # only the top one stays
    assert base.multinomial_num_samples_1(torch.tensor([[0.0, 1.0, 0.0]])).tolist() == [[1]]
    assert base.multinomial_num_samples_1(torch.tensor([0.0, 0.0, 1.0])).tolist() == [2]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(tiny_config(block_size=64)).eval()


def _greedy(model, prompt, n):
    return engine.generate(model, [prompt], n, temperature=0)[0].tolist()


def test_generate_returns_prompt_and_new_tokens_up_to_max_returned_tokens(model):
    prompt = torch.tensor([5, 6, 7, 8])
    expected = _greedy(model, prompt, 12)
    out = base.generate(model, prompt, 16, temperature=0.0)  # no set_kv_cache needed here
    assert out.dtype == torch.long and out.tolist() == prompt.tolist() + expected
    assert base.generate(model, prompt, 16, temperature=0.0, include_prompt=False).tolist() == expected
    eos = expected[3]
    stop = expected.index(eos) + 1
    assert base.generate(model, prompt, 16, temperature=0.0, eos_id=eos).tolist() == prompt.tolist() + expected[:stop]
    model.set_kv_cache(1)  # LitGPT's usage: the caller's cache works too
    assert base.generate(model, prompt, 16, top_k=1).tolist() == prompt.tolist() + expected
    with pytest.raises(NotImplementedError, match="max_seq_length"):
        base.generate(model, prompt, 65, temperature=0.0)
    with pytest.raises(ValueError, match="no room"):
        base.generate(model, prompt, 4, temperature=0.0)


def test_generate_fn_streams_and_holds_back_stop_sequences(model):
    prompt = torch.tensor([9, 10, 11])
    expected = _greedy(model, prompt, 10)
    steps = list(base.generate_fn(model, prompt, 13, temperature=0.0, include_prompt=True, include_eos=True))
    assert steps[0].tolist() == prompt.tolist() and all(t.shape == (1,) for t in steps[1:])
    assert [int(t) for t in steps[1:]] == expected
    stop = ([expected[4], expected[5]],)  # a two-token stop sequence
    without = base.generate_fn(model, prompt, 13, temperature=0.0, stop_tokens=stop, include_prompt=False, include_eos=False)
    assert [int(t) for t in without] == expected[:4]
    with_eos = base.generate_fn(model, prompt, 13, temperature=0.0, stop_tokens=stop, include_prompt=False, include_eos=True)
    assert [int(t) for t in with_eos] == expected[:6]
    never = ([expected[4], 255 if expected[5] != 255 else 254],)  # begins like the output, never completes
    held = base.generate_fn(model, prompt, 13, temperature=0.0, stop_tokens=never, include_prompt=False, include_eos=False)
    assert [int(t) for t in held] == expected


def test_batched_generate_fn_yields_a_list_per_step(model):
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    expected = [_greedy(model, p, 5) for p in prompts]
    steps = list(base.batched_generate_fn(model, prompts, 8, sample_args=dict(temperature=0.0), include_prompt=True,
                                          include_eos=True))
    assert len(steps) == 3 + 5 and all(len(s) == 2 for s in steps)
    assert [[int(s[i]) for s in steps] for i in range(2)] == [prompts[i].tolist() + expected[i] for i in range(2)]
    eos = expected[0][1]
    steps = list(base.batched_generate_fn(model, prompts, 8, sample_args=[dict(temperature=0.0), dict(top_k=1)],
                                          stop_tokens=([eos],), include_prompt=False, include_eos=False))
    rows = [[int(t) for s in steps if (t := s[i]) is not None] for i in range(2)]
    for i in range(2):
        cut = expected[i].index(eos) if eos in expected[i] else 5
        assert rows[i] == expected[i][:cut]
    assert steps[0][0] is not None and steps[1][0] is None  # row 0 ended at its second token


def test_next_token_and_batched_next_token_use_the_callers_cache(model):
    x = torch.tensor([[3, 4, 5, 6]])
    model.set_kv_cache(2, 16)
    with torch.no_grad():
        full = model(x)[0, -1]
        token = base.next_token(model, torch.arange(4), x, temperature=0.0)
        assert token.shape == (1,) and int(token) == int(full.argmax())
        assert int(base.next_token(model, torch.arange(4), x, input_pos_maxp1=4, top_k=1)) == int(full.argmax())
        x2 = torch.cat([x, torch.tensor([[7, 8, 9, 10]])])
        both = base.batched_next_token(model, torch.arange(4), x2, [dict(temperature=0.0), dict(top_k=1)])
        assert both.shape == (2, 1) and both.tolist() == [[int(r[-1].argmax())] for r in model(x2)]
        assert base.batched_next_token(model, torch.arange(4), x2, dict(temperature=0.0)).tolist() == both.tolist()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("compat") / "ckpt")


def test_main_with_litgpts_arguments(ckpt, capsys):
    base.main(ckpt, "Hello", num_samples=1, max_new_tokens=5, top_k=1, top_p=1.0, temperature=0.0,
              precision="32-true", compile=False)
    out, err = capsys.readouterr()
    assert "Time for inference" in err
    llm = LLM.load(str(ckpt), distribute=None)
    llm.distribute(accelerator="cpu", precision="32-true")
    assert out.rstrip("\n") == llm.generate("Hello", max_new_tokens=5, temperature=0)  # the engine's text


def test_chat_generate_and_process_prompt(ckpt, capsys):
    llm = LLM.load(str(ckpt), distribute=None)
    llm.distribute(accelerator="cpu", precision="32-true")
    prompt = torch.tensor([40, 41, 42])
    expected = _greedy(llm.model, prompt, 6)
    stop = ([expected[2]],)
    assert [int(t) for t in chat.generate(llm.model, prompt, 9, temperature=0.0)] == expected
    assert [int(t) for t in chat.generate(llm.model, prompt, 9, temperature=0.0, stop_tokens=stop)] == expected[: expected.index(expected[2])]

    class Fabric:  # what process_prompt uses of a Lightning Fabric
        device = torch.device("cpu")

        def print(self, *args, **kwargs):
            print(*args, **kwargs)

    style = PromptStyle()
    ids = llm.tokenizer.encode(style.apply("Hello"))
    text = engine.Generation(llm.model, [ids], [engine.TextRow(llm.tokenizer)], 5, temperature=0).run().texts[0]
    for fabric in (Fabric(), None):
        result = chat.process_prompt("Hello", llm.model, llm.tokenizer, style, fabric, 0.0, 5, None, 1.0, ())
        out, err = capsys.readouterr()
        assert result is None
        assert out == ">> Reply: " + text + "\n"  # the timing line (on stderr) begins with its own newline
        assert "Time for inference" in err and "tokens/sec" in err


def test_chat_main_with_litgpts_arguments(ckpt, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n/quit\n"))
    chat.main(ckpt, max_new_tokens=5, top_k=1, top_p=1.0, temperature=0.0, quantize=None, precision="32-true",
              compile=False, multiline=False)
    out, err = capsys.readouterr()
    assert ">> Assistant: " in out and "Time for inference" in err
