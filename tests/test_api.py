"""`litgpt.LLM`: load, distribute, generate (batched, streamed, stop strings), benchmark, save and reload."""

import dataclasses
import warnings

import pytest
import torch
import yaml

import litgpt
from litgpt import GPT, LLM
from litgpt.precision import default_inference_precision as default_precision
from litgpt.generate.engine import kv_cache_shape
from litgpt.prompts import load_prompt_style
from tests._gen_helpers import make_checkpoint, tiny_config
from tests._tokenizers import make_hf_tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def llm(ckpt):
    return LLM.load(str(ckpt), distribute=None).distribute(accelerator="cpu", precision="32-true")


def test_public_name_and_load_places_the_model(ckpt):
    assert litgpt.LLM is LLM
    loaded = LLM.load(ckpt)
    assert loaded.device == torch.device("cpu") and loaded.precision == default_precision(torch.device("cpu"))
    assert next(loaded.model.parameters()).dtype == {"bf16-true": torch.bfloat16, "32-true": torch.float32}[
        loaded.precision
    ]
    assert type(loaded.prompt_style).__name__ == "Default"  # "tiny" is no registry name: plain prompts


def test_greedy_generation_is_deterministic_and_batched_equals_alone(llm):
    prompts = ["The quick brown fox", "Once", "A somewhat longer prompt than the others, for padding"]
    alone = [llm.generate(p, max_new_tokens=12, temperature=0) for p in prompts]
    assert alone[0] == llm.generate(prompts[0], max_new_tokens=12, top_k=1)  # top_k=1 is greedy too
    assert llm.generate(prompts, max_new_tokens=12, temperature=0) == alone
    ids = llm.generate(prompts[0], max_new_tokens=12, temperature=0, return_as_token_ids=True)
    assert isinstance(ids, torch.Tensor) and ids.dim() == 1 and 1 <= len(ids) <= 12
    assert llm.tokenizer.decode(ids) == alone[0]
    batch_ids = llm.generate(prompts, max_new_tokens=5, temperature=0, return_as_token_ids=True)
    assert isinstance(batch_ids, list) and all(isinstance(t, torch.Tensor) for t in batch_ids)


def test_sampling_follows_the_global_seed(llm):
    torch.manual_seed(3)
    a = llm.generate("Hello", max_new_tokens=10, temperature=1.0, top_p=0.9)
    torch.manual_seed(3)
    b = llm.generate("Hello", max_new_tokens=10, temperature=1.0, top_p=0.9)
    assert a == b


def test_stream_joins_to_the_full_text(llm):
    full = llm.generate("The quick brown fox", max_new_tokens=20, temperature=0)
    stream = llm.generate("The quick brown fox", max_new_tokens=20, temperature=0, stream=True)
    pieces = list(stream)
    assert all(isinstance(p, str) for p in pieces) and len(pieces) > 1
    assert "".join(pieces) == full
    ids = list(llm.generate("The quick brown fox", max_new_tokens=20, temperature=0, stream=True,
                            return_as_token_ids=True))
    assert ids == llm.generate("The quick brown fox", max_new_tokens=20, temperature=0,
                               return_as_token_ids=True).tolist()
    with pytest.raises(ValueError, match="stream=True takes a single prompt"):
        llm.generate(["a", "b"], stream=True)


def test_stop_strings_cut_the_text(llm):
    full = llm.generate("The quick brown fox", max_new_tokens=30, temperature=0)
    stop = full[8:11]
    first = full.index(stop)
    assert llm.generate("The quick brown fox", max_new_tokens=30, temperature=0, stop=stop) == full[:first]
    assert llm.generate("The quick brown fox", max_new_tokens=30, temperature=0, stop=[stop, "zzz"]) == full[:first]
    streamed = "".join(llm.generate("The quick brown fox", max_new_tokens=30, temperature=0, stop=stop, stream=True))
    assert streamed == full[:first]
    with pytest.raises(ValueError, match="stop strings need text output"):
        llm.generate("x", stop="y", return_as_token_ids=True)
    with pytest.raises(ValueError, match="stop must be a string or a list of strings"):
        llm.generate("x", stop=[1])


def test_stop_tokens_of_the_tokenizer_end_generation(tmp_path):
    # eos = the token greedy decoding produces third: generation ends there, without it
    ckpt = make_checkpoint(tmp_path / "a")
    llm = LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", precision="32-true")
    ids = llm.generate("Hello", max_new_tokens=10, temperature=0, return_as_token_ids=True).tolist()
    stop_id = ids[2]
    cut = ids.index(stop_id)
    (ckpt / "generation_config.json").write_text(f'{{"eos_token_id": [1, {stop_id}]}}')
    llm = LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", precision="32-true")
    assert llm.generate("Hello", max_new_tokens=10, temperature=0, return_as_token_ids=True).tolist() == ids[:cut]
    _, stats = llm.benchmark(prompt="Hello", max_new_tokens=10, temperature=0)
    assert stats["Tokens generated"] == [cut + 1]  # the stop token was sampled too, counted once


def test_benchmark_counts_each_token_once(llm):
    out, stats = llm.benchmark(num_iterations=2, prompt="Hello", max_new_tokens=9, temperature=0)
    assert out == llm.generate("Hello", max_new_tokens=9, temperature=0)
    assert set(stats) >= {"Seconds total", "Seconds to first token", "Tokens generated", "Inference speed in tokens/sec"}
    assert all(len(v) == 2 for v in stats.values())
    n = len(llm.generate("Hello", max_new_tokens=9, temperature=0, return_as_token_ids=True))
    assert stats["Tokens generated"] == [n, n]
    for t, tokens, speed, first in zip(stats["Seconds total"], stats["Tokens generated"],
                                       stats["Inference speed in tokens/sec"], stats["Seconds to first token"]):
        assert speed == pytest.approx(tokens / t) and 0 < first <= t
    out, stats = llm.benchmark(prompt=["a", "bb"], max_new_tokens=4, temperature=0)
    assert stats["Tokens generated"] == [sum(len(x) for x in llm.generate(["a", "bb"], max_new_tokens=4,
                                                                        temperature=0, return_as_token_ids=True))]
    out, _ = llm.benchmark(prompt="Hello", max_new_tokens=9, temperature=0, stream=True)
    assert out == llm.generate("Hello", max_new_tokens=9, temperature=0)
    with pytest.raises(ValueError, match="num_iterations must be >= 1"):
        llm.benchmark(num_iterations=0, prompt="x")


def test_save_and_reload_gives_the_same_outputs(llm, tmp_path):
    out = llm.save(tmp_path / "saved")
    for name in ("lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json", "prompt_style.yaml"):
        assert (out / name).is_file(), name
    assert type(load_prompt_style(out)).__name__ == "Default"
    again = LLM.load(out, distribute=None).distribute(accelerator="cpu", precision="32-true")
    prompts = ["Hello", "The quick brown fox"]
    assert again.generate(prompts, max_new_tokens=10, temperature=0) == llm.generate(prompts, max_new_tokens=10,
                                                                                      temperature=0)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_random_init_from_a_registry_name_and_save(tmp_path):
    tok_dir = make_hf_tokenizer(tmp_path / "tok")
    with pytest.raises(ValueError, match="init='random' with a model name needs tokenizer_dir"):
        LLM.load("pythia-14m", init="random")
    torch.manual_seed(0)
    llm = LLM.load("pythia-14m", init="random", tokenizer_dir=tok_dir, distribute=None)
    assert llm.checkpoint_dir is None and llm.config.name == "pythia-14m"
    llm.distribute(accelerator="cpu", precision="32-true")
    text = llm.generate("Hello", max_new_tokens=5, temperature=0)
    saved = llm.save(tmp_path / "out")
    assert LLM.load(saved, distribute=None).distribute(accelerator="cpu", precision="32-true").generate(
        "Hello", max_new_tokens=5, temperature=0) == text


@pytest.mark.parametrize("precision, dtype", [("32-true", torch.float32), ("bf16-true", torch.bfloat16),
                                              ("16-true", torch.float16)])
def test_each_precision_generates_on_cpu(ckpt, precision, dtype):
    llm = LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", precision=precision)
    assert llm.precision == precision and next(llm.model.parameters()).dtype == dtype
    assert llm.model.transformer.h[0].attn.kv_cache is None
    text = llm.generate(["Hello", "The quick brown fox"], max_new_tokens=6, temperature=0)
    assert len(text) == 2 and all(isinstance(t, str) for t in text)
    assert llm.model.transformer.h[0].attn.kv_cache.k.dtype == dtype


def test_default_precision_follows_native_bf16(monkeypatch):
    import litgpt.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert default_precision(torch.device("cpu")) == "bf16-true"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert default_precision(torch.device("cpu")) == "32-true"


def test_fixed_kv_cache_size_and_compile(ckpt):
    llm = LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", precision="32-true", fixed_kv_cache_size=48)
    eager = llm.generate(["Hello", "Hi there"], max_new_tokens=5, temperature=0)
    assert kv_cache_shape(llm.model) == (2, 48)
    with pytest.warns(UserWarning, match="generating at most"):
        llm.generate("Hello", max_new_tokens=100, temperature=0)  # clipped to the fixed cache
    assert kv_cache_shape(llm.model)[1] == 48
    llm.distribute(accelerator="cpu", precision="32-true", compile=True)
    import litgpt.generate.engine as base

    llm.step_fn = base.compile_decode_step(backend="aot_eager")  # fast capture; inductor is the default
    assert llm.generate(["Hello", "Hi there"], max_new_tokens=5, temperature=0) == eager
    assert kv_cache_shape(llm.model)[1] == 64  # a power-of-two bucket for the compiled step


def test_bench_script_checkpoint_layout(tmp_path):
    # what ../shared/bench/bench.py writes: dataclasses.asdict(config) as YAML, tokenizer.json + configs
    config = tiny_config(name="SmolLM2-135M", n_layer=2)
    torch.save(GPT(config).state_dict(), tmp_path / "lit_model.pth")
    (tmp_path / "model_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))
    make_hf_tokenizer(tmp_path)
    llm = LLM.load(str(tmp_path))
    assert type(llm.prompt_style).__name__ == "Default"  # a base model: the prompt as it is
    kwargs = dict(max_new_tokens=16, temperature=1.0, top_k=1)
    assert isinstance(llm.generate("the quick brown fox", **kwargs), str)
    out = llm.generate("the quick brown fox", return_as_token_ids=True, **kwargs)
    assert 1 <= len(out) <= 16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(temperature=-1.0), ValueError, "temperature must be >= 0"),
        (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.01), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(top_k=0), ValueError, "top_k must be >= 1"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be >= 1"),
        (dict(prompt=[]), ValueError, "prompt must not be an empty list"),
        (dict(prompt=["ok", 3]), ValueError, r"prompt\[1\] must be a str"),
        (dict(prompt="word " * 200), ValueError, "the prompt is .* tokens but the model's context holds 128"),
    ],
)
def test_bad_generate_arguments(llm, kwargs, error, match):
    kwargs = {"prompt": "Hello", **kwargs}
    with pytest.raises(error, match=match):
        llm.generate(**kwargs)
    with pytest.raises(error, match=match):
        llm.generate(**kwargs, stream=True) if isinstance(kwargs["prompt"], str) else llm.generate(**kwargs)


def test_an_empty_prompt_needs_a_bos_token(llm, monkeypatch):
    assert isinstance(llm.generate("", max_new_tokens=3, temperature=0), str)  # just bos: unconditional
    monkeypatch.setattr(llm.tokenizer, "use_bos", False)
    with pytest.raises(ValueError, match="prompt 1 is empty: it encodes to no tokens"):
        llm.generate(["a", ""], max_new_tokens=3)


def test_max_new_tokens_beyond_the_context_is_clipped_once(llm):
    prompt = "the " * 30
    n_prompt = len(llm.tokenizer.encode(prompt))
    assert n_prompt < 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = llm.generate(prompt, max_new_tokens=1000, temperature=0, return_as_token_ids=True)
    assert len([w for w in caught if "does not fit in the context" in str(w.message)]) == 1
    assert len(out) <= 128 - n_prompt


def test_bad_load_and_distribute_arguments(ckpt, tmp_path, llm):
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a known model name"):
        LLM.load("no-such-model-xyz")
    with pytest.raises(FileNotFoundError, match="missing lit_model.pth"):
        LLM.load(make_hf_tokenizer(tmp_path / "only_tok"))
    with pytest.raises(ValueError, match="init must be 'pretrained' or 'random'"):
        LLM.load(ckpt, init="zeros")
    with pytest.raises(ValueError, match="distribute must be 'auto' or None"):
        LLM.load(ckpt, distribute="cuda")
    fresh = LLM.load(ckpt, distribute=None)
    with pytest.raises(RuntimeError, match="call llm.distribute"):
        fresh.generate("x")
    with pytest.raises(NotImplementedError, match="devices=2: generation runs on a single device"):
        fresh.distribute(devices=2)
    with pytest.raises(ValueError, match="unknown quantization mode 'int3'"):
        fresh.distribute(quantize="int3")
    with pytest.raises(ValueError, match="precision must be one of 32-true, bf16-true, 16-true, got 'bf16-mixed'"):
        fresh.distribute(precision="bf16-mixed")
    with pytest.raises(ValueError, match="fixed_kv_cache_size=1000 exceeds the model's context of 128"):
        fresh.distribute(fixed_kv_cache_size=1000)
    with pytest.raises(ValueError, match="accelerator must be one of"):
        fresh.distribute(accelerator="tpu")
    assert fresh.device is None  # nothing changed by the failed calls


def test_a_registry_name_is_downloaded_once_into_checkpoints(tmp_path, monkeypatch):
    import litgpt.scripts.download as download

    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_download(repo_id, access_token=None, checkpoint_dir=None, **kwargs):
        calls.append((repo_id, access_token, checkpoint_dir))
        make_checkpoint(checkpoint_dir / repo_id, tiny_config(name="SmolLM2-135M-Instruct"))
        return checkpoint_dir / repo_id

    monkeypatch.setattr(download, "download_from_hub", fake_download)
    llm = LLM.load("SmolLM2-135M-Instruct", access_token="hf_x", distribute=None)
    assert calls == [("HuggingFaceTB/SmolLM2-135M-Instruct", "hf_x", tmp_path.joinpath("checkpoints").relative_to(tmp_path))]
    assert llm.checkpoint_dir == tmp_path.joinpath("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct").relative_to(tmp_path)
    assert type(llm.prompt_style).__name__ == "SmolLM2"
    LLM.load("HuggingFaceTB/SmolLM2-135M-Instruct", distribute=None)  # already there: no second download
    assert len(calls) == 1
