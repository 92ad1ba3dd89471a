"""`litgpt evaluate`: the lm-eval model class on our GPT (loglikelihoods equal transformers' on our HF export,
batching changes nothing, generation equals plain greedy decoding), local lm-eval tasks end to end through the
CLI, perplexity over text files, --quantize, task listing and one-line errors."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

import litgpt.__main__ as cli
from litgpt.eval.evaluate import evaluate, load_for_evaluation
from litgpt.eval.lm_eval_model import LitGPTLM
from litgpt.eval.perplexity import ScoreRow, rolling_windows, score_rows
from litgpt.quantization import load_model
from litgpt.tokenizer import Tokenizer
from tests._gen_helpers import make_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "eval_tasks"
TEXTS = (
    "The quick brown fox jumps over the lazy dog, twice.",
    "Perplexity is the exponential of the mean negative log-likelihood per token.",
)


class Request:
    """What the LM methods read of an lm-eval `Instance`: its `args`."""

    def __init__(self, *args):
        self.args = args


@pytest.fixture(autouse=True)
def offline_single_thread(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def model_and_tokenizer(ckpt):
    return load_model(ckpt, dtype=torch.float32, device="cpu"), Tokenizer(ckpt)


def direct_logprob(model, ids: list[int], n: int) -> tuple[float, bool]:
    """Sum of log p of the last n ids (and whether each is the argmax) from one plain forward pass."""
    with torch.no_grad():
        logprobs = model(torch.tensor([ids[:-1]])).float().log_softmax(-1)[0, -n:]
    targets = torch.tensor(ids[-n:])
    return logprobs.gather(-1, targets[:, None]).sum().item(), bool((logprobs.argmax(-1) == targets).all())


def greedy_text(model, tokenizer, prompt: str, max_new: int, until: list[str]) -> str:
    """Greedy decoding with full forward passes (no KV cache, no batching), cut at the first stop string."""
    ids = tokenizer.encode(prompt).tolist()
    new = []
    with torch.no_grad():
        for _ in range(max_new):
            token = int(model(torch.tensor([ids + new]))[0, -1].argmax())
            if token in tokenizer.stop_tokens:
                break
            new.append(token)
    text = tokenizer.decode(new)
    cuts = [text.index(s) for s in until if s in text]
    return text[: min(cuts)] if cuts else text


# ------------------------------------------------------------------------------------------------------------
# the scoring core


def test_rolling_windows_follow_the_lm_eval_scheme():
    # the example of lm_eval.api.model.LM.loglikelihood_rolling: tokens 0..9, prefix B, context of 4
    rows = rolling_windows(list(range(10)), max_length=4, prefix_id=-1)
    assert rows == [ScoreRow((-1, 0, 1, 2, 3), 4), ScoreRow((3, 4, 5, 6, 7), 4), ScoreRow((5, 6, 7, 8, 9), 2)]


@pytest.mark.parametrize("n,max_length,stride,prefix", [(1, 4, None, 7), (37, 8, None, 7), (37, 8, 3, None),
                                                         (16, 16, None, 7), (17, 16, 5, 7)])
def test_rolling_windows_score_every_token_once_with_the_tokens_before_it(n, max_length, stride, prefix):
    doc = list(range(100, 100 + n))
    full = ([prefix] if prefix is not None else []) + doc
    scored = []
    for row in rolling_windows(doc, max_length, prefix, stride):
        assert len(row.tokens) - 1 <= max_length and row.n_scored >= 1
        start = next(i for i in range(len(full)) if tuple(full[i : i + len(row.tokens)]) == row.tokens)
        scored += list(range(start + len(row.tokens) - row.n_scored, start + len(row.tokens)))
        if start + len(row.tokens) > max_length:  # past the first window: a full window of context
            assert len(row.tokens) - 1 == max_length
    assert scored == list(range(1, len(full)))  # every token but the first, once, in order


def test_score_rows_equal_plain_forwards_whatever_the_batching(model_and_tokenizer):
    model, _ = model_and_tokenizer
    gen = torch.Generator().manual_seed(0)
    rows = []
    for length, n in [(5, 2), (40, 7), (12, 12), (128, 3), (2, 1), (40, 7)]:
        rows.append(ScoreRow(tuple(torch.randint(0, 256, (length + 1,), generator=gen).tolist()), n))
    rows.append(ScoreRow((1, 2, 3), 0))
    expected = [direct_logprob(model, list(r.tokens), r.n_scored) if r.n_scored else (0.0, True) for r in rows]
    for batch_size in (1, 3, 8):
        got = score_rows(model, rows, batch_size)
        assert [g for _, g in got] == [g for _, g in expected]
        torch.testing.assert_close([lp for lp, _ in got], [lp for lp, _ in expected], atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# the lm-eval model class


def test_loglikelihoods_equal_those_of_transformers_on_our_export(ckpt, model_and_tokenizer, tmp_path):
    import transformers
    from tokenizers import Tokenizer as HFTokenizer

    from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint

    model, tokenizer = model_and_tokenizer
    hf_dir = convert_lit_checkpoint(ckpt, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    hf_tok = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    bos = tokenizer.bos_id
    long_context = " ".join(["the quick brown fox jumps over the lazy dog"] * 4)
    pairs = [
        ("The capital of France is", " Paris"),
        ("Question: what is 2 + 2?\nAnswer: ", "4"),  # the trailing space moves to the continuation
        ("", "An empty context is conditioned on bos."),
        ("def add(a, b):", "\n    return a + b"),
        (long_context, " and runs away"),  # longer than max_length: cut from the left
    ]
    max_length = 48
    lm = LitGPTLM(model, tokenizer, batch_size=2, max_length=max_length, progress=False)
    ours = lm.loglikelihood([Request(c, x) for c, x in pairs])

    def hf_score(context: str, continuation: str) -> tuple[float, bool]:
        stripped = context.rstrip()
        if stripped and stripped != context:
            context, continuation = stripped, context[len(stripped):] + continuation
        whole = [bos] + hf_tok.encode(context + continuation, add_special_tokens=False).ids
        n_context = 1 + len(hf_tok.encode(context, add_special_tokens=False).ids)
        n = len(whole) - n_context
        window = whole[-(max_length + 1):]
        with torch.no_grad():
            logprobs = hf_model(torch.tensor([window[:-1]])).logits.float().log_softmax(-1)[0, -n:]
        targets = torch.tensor(window[-n:])
        return logprobs.gather(-1, targets[:, None]).sum().item(), bool((logprobs.argmax(-1) == targets).all())

    expected = [hf_score(c, x) for c, x in pairs]
    torch.testing.assert_close([lp for lp, _ in ours], [lp for lp, _ in expected], atol=1e-4, rtol=0)
    assert [g for _, g in ours] == [g for _, g in expected]

    # a whole document, conditioned on bos, in one window and in several
    text = TEXTS[1]
    whole = [bos] + hf_tok.encode(text, add_special_tokens=False).ids
    with torch.no_grad():
        hf_logprobs = hf_model(torch.tensor([whole[:-1]])).logits.log_softmax(-1)[0]
    hf_total = hf_logprobs.gather(-1, torch.tensor(whole[1:])[:, None]).sum().item()
    one_window = LitGPTLM(model, tokenizer, progress=False).loglikelihood_rolling([Request(text)])
    assert one_window[0] == pytest.approx(hf_total, abs=1e-4)
    windowed = LitGPTLM(model, tokenizer, max_length=8, batch_size=4, progress=False).loglikelihood_rolling(
        [Request(text), Request(TEXTS[0])]
    )
    assert len(whole) - 1 > 8 and windowed[0] != pytest.approx(hf_total, abs=1e-3)  # less context, other value
    assert math.isfinite(windowed[1])


def test_generate_until_equals_plain_greedy_decoding(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = ["Q: What is 1 + 1?\nA:", "Hi", "The quick brown fox jumps over", "def f(x):\n    return"]
    lm = LitGPTLM(model, tokenizer, batch_size=3, progress=False)
    settings = [{"until": ["\n"], "max_gen_toks": 6}, {"until": "o", "max_gen_toks": 9, "do_sample": False},
                {"until": [], "max_gen_toks": 5, "temperature": 0.0}, {"until": ["\n"], "max_gen_toks": 6}]
    got = lm.generate_until([Request(p, s) for p, s in zip(prompts, settings)])
    for prompt, setting, text in zip(prompts, settings, got):
        until = [setting["until"]] if isinstance(setting["until"], str) else setting["until"]
        assert text == greedy_text(model, tokenizer, prompt, setting["max_gen_toks"], until)
    assert model.transformer.h[0].attn.kv_cache is None  # the cache is given back afterwards


# ------------------------------------------------------------------------------------------------------------
# the verb, end to end


def write_answer_task(folder: Path, model, tokenizer) -> Path:
    """A multiple-choice and a generation task (the documented `dataset_path: json` route, absolute paths) whose
    right answers are what the model itself prefers: a correct harness run scores 1.0 on both."""
    choice_rows = []
    for question, choices in [("The sky is", ["blue", "green", "red"]), ("Two plus two is", ["four", "five"]),
                              ("A cat says", ["meow", "moo", "woof", "quack"])]:
        scores = []
        for choice in choices:
            whole = tokenizer.encode(question + " " + choice).tolist()
            n = len(whole) - len(tokenizer.encode(question))
            scores.append(direct_logprob(model, whole, n)[0])
        choice_rows.append({"question": question, "choices": choices, "label": scores.index(max(scores))})
    gen_rows = [{"question": q, "answer": greedy_text(model, tokenizer, f"Q: {q}\nA:", 8, ["\n", "Q:"])}
                for q in ("What is 1 + 1?", "Name a colour.", "Say hello.")]
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("choice", choice_rows), ("gen", gen_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cache = folder / "hf_cache"
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / '{name}.jsonl'}\n" \
             f"  cache_dir: {cache}\ntest_split: test\n"
    (folder / "answers_choice.yaml").write_text(
        "task: answers_choice\n" + common.format(name="choice") + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n", encoding="utf-8")
    (folder / "answers_gen.yaml").write_text(
        "task: answers_gen\n" + common.format(name="gen") + "output_type: generate_until\n"
        'doc_to_text: "Q: {{question}}\\nA:"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n", "Q:"]\n  max_gen_toks: 8\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n", encoding="utf-8")
    return folder


def test_cli_runs_local_tasks_and_writes_the_results(ckpt, model_and_tokenizer, tmp_path, capsys):
    model, tokenizer = model_and_tokenizer
    tasks_dir = write_answer_task(tmp_path / "tasks", model, tokenizer)
    out_dir = tmp_path / "out"
    args = ["evaluate", str(ckpt), "--tasks", "answers_choice,answers_gen", "--include_path", str(tasks_dir),
            "--dtype", "float32", "--device", "cpu", "--batch_size", "2", "--out_dir", str(out_dir), "--seed", "7"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((out_dir / "results.json").read_text())
    values = {(r["task"], r["metric"]): r for r in results["results"]}
    assert values[("answers_choice", "acc")]["value"] == 1.0
    assert values[("answers_choice", "acc")]["samples"] == 3 and values[("answers_choice", "acc")]["stderr"] == 0.0
    assert values[("answers_gen", "exact_match")]["value"] == 1.0
    assert results["model"]["checkpoint_dir"] == str(ckpt.resolve()) and results["model"]["name"] == "tiny"
    settings = results["settings"]
    assert settings["tasks"] == ["answers_choice", "answers_gen"] and settings["seed"] == 7
    assert (settings["batch_size"], settings["dtype"], settings["quantize"], settings["device"]) == (2, "float32",
                                                                                                     None, "cpu")
    assert results["lm_eval"]["n-samples"]["answers_gen"]["effective"] == 3
    assert "| answers_choice | acc ↑" in printed and "| answers_gen    | exact_match ↑" in printed
    assert f"Results saved to {out_dir / 'results.json'}" in printed
    assert sorted(p.name for p in out_dir.iterdir()) == ["results.json"]  # no temporary file left


def test_shipped_fixture_tasks_run_from_any_directory(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save = tmp_path / "elsewhere" / "fixture.json"
    evaluate(ckpt, tasks="tiny_choice,tiny_gen,tiny_rolling", include_path=FIXTURES, limit=3, batch_size=4,
             dtype="float32", device="cpu", save_filepath=save, num_fewshot=1)
    results = json.loads(save.read_text())
    metrics = {(r["task"], r["metric"]): r for r in results["results"]}
    assert set(metrics) == {("tiny_choice", "acc"), ("tiny_choice", "acc_norm"), ("tiny_gen", "exact_match"),
                            ("tiny_rolling", "word_perplexity"), ("tiny_rolling", "byte_perplexity"),
                            ("tiny_rolling", "bits_per_byte")}
    assert all(r["samples"] == 3 for r in metrics.values())
    assert metrics[("tiny_choice", "acc")]["num_fewshot"] == 1
    assert 1.0 < metrics[("tiny_rolling", "byte_perplexity")]["value"] < 300  # a random model over 256 tokens
    assert results["settings"]["limit"] == 3
    assert not (ckpt / "evaluate").exists()  # save_filepath was given
    # a glob pattern over --include_path, and a task YAML named by its path
    by_pattern = evaluate(ckpt, tasks="tiny_c*", include_path=FIXTURES, limit=2, dtype="float32", device="cpu")
    by_path = evaluate(ckpt, tasks=str(FIXTURES / "tiny_choice.yaml"), limit=2, dtype="float32", device="cpu")
    for results in (by_pattern, by_path):
        assert {(r["task"], r["metric"]) for r in results["results"]} == {("tiny_choice", "acc"),
                                                                          ("tiny_choice", "acc_norm")}
    # results go beside the checkpoint, never into it; a second run gets a fresh folder
    first, second = ckpt.with_name(f"{ckpt.name}-evaluate"), ckpt.with_name(f"{ckpt.name}-evaluate-2")
    assert json.loads((first / "results.json").read_text())["results"] == by_pattern["results"]
    assert json.loads((second / "results.json").read_text())["results"] == by_path["results"]
    assert not (ckpt / "evaluate").exists()
    shutil.rmtree(first)
    shutil.rmtree(second)


# ------------------------------------------------------------------------------------------------------------
# perplexity and quantization


@pytest.fixture
def text_dir(tmp_path) -> Path:
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXTS[0], encoding="utf-8")
    (folder / "sub" / "b.txt").write_text(TEXTS[1], encoding="utf-8")
    (folder / "ignored.md").write_text("not a text file", encoding="utf-8")
    return folder


def test_perplexity_equals_exp_of_the_mean_nll_of_direct_forwards(ckpt, model_and_tokenizer, text_dir, tmp_path):
    model, tokenizer = model_and_tokenizer
    total, count = 0.0, 0
    for text in TEXTS:
        ids = tokenizer.encode(text, bos=True).tolist()
        total -= direct_logprob(model, ids, len(ids) - 1)[0]
        count += len(ids) - 1
    results = evaluate(ckpt, tasks="perplexity", data_dir=text_dir, batch_size=2, dtype="float32", device="cpu",
                       out_dir=tmp_path / "out")
    values = {r["metric"]: r["value"] for r in results["results"]}
    assert values["tokens"] == count
    assert values["nll"] == pytest.approx(total / count, abs=1e-5)
    assert values["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"] == results["results"]
    # short windows: the same tokens are scored, each with less context
    windowed = evaluate(ckpt, tasks="perplexity", data_dir=text_dir, max_length=8, dtype="float32", device="cpu",
                        out_dir=tmp_path / "out8")
    windowed_values = {r["metric"]: r["value"] for r in windowed["results"]}
    assert windowed_values["tokens"] == count and windowed_values["perplexity"] != values["perplexity"]


def test_quantize_int8_loads_quantized_layers_and_scores_close(ckpt, text_dir, tmp_path):
    from litgpt.quantization import Int8Linear

    model, _, mode = load_for_evaluation(ckpt, torch.device("cpu"), torch.float32, "int8")
    assert mode == "int8"
    assert isinstance(model.lm_head, Int8Linear) and isinstance(model.transformer.h[0].attn.qkv, Int8Linear)
    full = evaluate(ckpt, tasks="perplexity", data_dir=text_dir, dtype="float32", device="cpu", out_dir=tmp_path / "a")
    int8 = evaluate(ckpt, tasks="perplexity", data_dir=text_dir, dtype="float32", device="cpu", quantize="int8",
                    out_dir=tmp_path / "b")
    assert int8["settings"]["quantize"] == "int8" and full["settings"]["quantize"] is None
    ppl = [next(r["value"] for r in res["results"] if r["metric"] == "perplexity") for res in (full, int8)]
    assert ppl[1] != ppl[0] and ppl[1] == pytest.approx(ppl[0], rel=0.02)


# ------------------------------------------------------------------------------------------------------------
# listing and bad input


def test_tasks_list_prints_the_available_tasks(ckpt, capsys):
    assert evaluate(ckpt, tasks="list", include_path=FIXTURES) is None
    names = capsys.readouterr().out.splitlines()
    assert {"tiny_choice", "tiny_gen", "hellaswag", "arc_easy"} <= set(names)
    assert "perplexity" not in names  # our own task name clashes with none of lm-eval's
    assert cli.main(["evaluate", str(ckpt)]) == 0  # no --tasks: the list too
    assert "hellaswag" in capsys.readouterr().out.splitlines()
    assert cli.main(["evaluate", str(ckpt), "--tasks", "--include_path", str(FIXTURES)]) == 0  # a bare --tasks
    assert "tiny_choice" in capsys.readouterr().out.splitlines()
    assert not (ckpt / "evaluate").exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--tasks", "tiny_choise", "--include_path", str(FIXTURES)],
         "unknown task 'tiny_choise' (did you mean: tiny_choice"),
        (["--tasks", "hellaswag,arc_esay"], "unknown task 'arc_esay' (did you mean: arc_easy"),
        (["--tasks", "perplexity"], "--tasks perplexity needs --data_dir"),
        (["--tasks", "hellaswag", "--data_dir", "."], "--data_dir is read by the perplexity task only"),
        (["--tasks", "perplexity", "--data_dir", "no/such/dir"], "--data_dir no/such/dir is not a directory"),
        (["--tasks", "hellaswag", "--batch_size", "0"], "batch_size must be an integer >= 1"),
        (["--tasks", "hellaswag", "--limit", "0"], "limit must be a number > 0"),
        (["--tasks", "hellaswag", "--max_length", "4096"], "max_length=4096 exceeds the model's context of 128"),
        (["--tasks", "hellaswag", "--include_path", "no/such/dir"], "--include_path no/such/dir is not a directory"),
        (["--tasks", "hellaswag", "--quantize", "int3"], "unknown quantization mode 'int3'"),
        (["--tasks", "hellaswag", "--dtype", "float8"], "unknown dtype 'float8'"),
        (["--tasks", "hellaswag", "--device", "tpu"], "device must be one of auto, cpu, cuda, gpu, mps or cuda:N"),
        (["--tasks", "hellaswag", "--device", "cuda:7"], "device cuda:7 is not available"),
        (["--tasks", "tiny_gen", "--include_path", str(FIXTURES), "--save_filepath", str(FIXTURES)],
         "is a directory; pass a file name with --save_filepath"),
    ],
)
def test_bad_input_is_a_one_line_error_before_loading(ckpt, capsys, monkeypatch, flags, message):
    import litgpt.eval.evaluate as module

    monkeypatch.setattr(module, "load_for_evaluation", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli.main(["evaluate", str(ckpt), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("litgpt evaluate: error: ")
    assert message in err, err
    assert not (ckpt / "evaluate").exists()


def test_checkpoint_without_tokenizer_is_a_one_line_error(tmp_path, capsys):
    folder = make_checkpoint(tmp_path / "ckpt")
    os.remove(folder / "tokenizer.json")
    assert cli.main(["evaluate", str(folder), "--tasks", "hellaswag"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no tokenizer (tokenizer.json or tokenizer.model)" in err, err
    assert cli.main(["evaluate", str(tmp_path / "missing"), "--tasks", "hellaswag"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_run_prints_no_git_error_and_leaves_the_checkpoint_alone(ckpt, tmp_path):
    import subprocess
    import sys

    before = sorted(p.name for p in ckpt.iterdir())
    proc = subprocess.run([sys.executable, "-m", "litgpt", "evaluate", str(ckpt), "--tasks", "tiny_choice",
                           "--include_path", str(FIXTURES), "--limit", "2", "--dtype", "float32", "--device", "cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fatal" not in proc.stderr and "not a git repository" not in proc.stderr
    assert sorted(p.name for p in ckpt.iterdir()) == before
    out = ckpt.with_name(f"{ckpt.name}-evaluate")
    assert (out / "results.json").is_file() and f"Results saved to {out / 'results.json'}" in proc.stdout
