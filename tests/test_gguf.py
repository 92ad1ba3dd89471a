"""GGUF export (`litgpt convert_to_gguf`) and import (`litgpt convert_to_litgpt FILE.gguf`).

Tiny random models of each supported family go to GGUF and back: the `gguf` package's reader sees every tensor
with our values (bit-exact for f16 / bf16, within the quantisation error for q8_0), the tokenizer in the file
encodes text to our ids, and an imported file re-exports bit-exactly. With `llama-cpp-python` installed (not a
declared dependency: it compiles llama.cpp), llama.cpp itself gives our logits and greedy tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from litgpt import GPT, Config, Tokenizer
from litgpt.scripts import gguf_families
from litgpt.scripts.convert_to_gguf import convert_to_gguf
from litgpt.scripts.gguf_families import PRE_TOKENIZERS, gguf_tensor_plan
from litgpt.scripts.hf_families import architecture_signature
from tests._gen_helpers import add_special_tokens
from tests._tokenizers import make_hf_tokenizer, make_sentencepiece_tokenizer

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café déjà vu",
    "Grüße aus München, Straße",
    "東京タワー 日本語のテキスト",
    "京都 大阪",
    "emoji 😀🎉 and 👍🏽",
    "def f(x):\n    return x * 2  # double",
    "for i in range(10):\n\tprint(i)",
    "   leading spaces",
    "trailing spaces   ",
    "many     inner      spaces",
    "\n\n\nnewlines\n\n",
    "tabs\t\tand\r\nCRLF",
    "numbers 1234567 3.14159 -42",
    "MiXeD CaSe WoRdS",
    "punctuation!!! ??? ... ,,, ;;;",
    "x = {'a': [1, 2, 3], \"b\": None}",
    "don't won't it's I'm we'll they'd",
    "",
]

# family -> (registry config it shrinks, tokenizer: byte-level pre-tokenizer name, "spm" or "metaspace")
FAMILIES = {
    "llama3": ("Llama-3.2-1B", "llama-bpe"),
    "llama2": ("Llama-2-7b-hf", "spm"),
    "mistral": ("Mistral-7B-v0.1", "metaspace"),
    "qwen2": ("Qwen2.5-0.5B", "qwen2"),
    "qwen3": ("Qwen3-0.6B", "qwen2"),
    "smollm2": ("SmolLM2-135M", "smollm"),
    "gemma2": ("Gemma-2-2b", "spm"),
    "phi3": ("Phi-3-mini-4k-instruct", "metaspace+endoftext"),
}
EXPECTED_ARCH = {"llama3": "llama", "llama2": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                 "smollm2": "llama", "gemma2": "gemma2", "phi3": "phi3"}


def _comparable(family: str) -> list[str]:
    """The texts whose ids GGUF can reproduce. A tokenizer.json whose Metaspace pre-tokenizer prepends '▁' only
    when the text does not start with a space (prepend_scheme "first") has no GGUF equivalent: SentencePiece
    and llama.cpp always prepend it, so text starting with whitespace gets one more '▁' there."""
    if FAMILIES[family][1].startswith("metaspace"):
        return [t for t in TEXTS if not t[:1].isspace()]
    return TEXTS


def _tokenizer(folder: Path, kind: str) -> int:
    """Writes the tokenizer files; returns the vocabulary size."""
    if kind == "spm":
        make_sentencepiece_tokenizer(folder, 400)
        return 400
    if kind.startswith("metaspace"):
        make_hf_tokenizer(folder, 400, kind="metaspace")
        if kind.endswith("+endoftext"):  # llama.cpp's phi3 loader looks this token up
            add_special_tokens(folder, ("<|endoftext|>",))
            return 401
        return 400
    make_hf_tokenizer(folder, 256)
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = PRE_TOKENIZERS[kind]
    data["model"]["ignore_merges"] = kind == "llama-bpe"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return 256


def tiny(family: str, folder: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Config, dict]:
    """A 2-layer random checkpoint of a family in `folder` (weights, config, tokenizer, chat template)."""
    name, kind = FAMILIES[family]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(folder, kind)
    full = Config.from_name(name)
    overrides = dict(n_layer=2, n_embd=64, n_head=4, head_size=16, n_query_groups=2, intermediate_size=96,
                     vocab_size=vocab, padded_vocab_size=vocab, block_size=64)
    if full.sliding_window_size is not None:  # llama.cpp slides only Gemma 2's window (its phi3 has SWA off)
        overrides["sliding_window_size"] = 6 if family == "gemma2" else 64
    if family == "phi3":  # partial RoPE (Phi-4-mini's): a config only llama.cpp's phi3 architecture expresses
        overrides["rotary_percentage"] = 0.5
    if full.attention_scores_scalar is not None:
        overrides["attention_scores_scalar"] = 16
    if full.rope_adjustments:  # Llama 3.1 scaling at a tiny size: low and high frequencies both present
        overrides["rope_adjustments"] = dict(full.rope_adjustments, original_max_seq_len=16)
    config = Config.from_name(name, **overrides)
    config = dataclasses.replace(config, name=f"tiny-{family}")
    torch.manual_seed(seed)
    model = GPT(config)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    torch.save(state, folder / "lit_model.pth")
    config.save(folder)
    cfg_path = folder / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text(encoding="utf-8"))
    tc["chat_template"] = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    cfg_path.write_text(json.dumps(tc), encoding="utf-8")
    return config, state


def _gguf_array(tensor) -> np.ndarray:
    return gguf_families._dequantize(tensor).astype(np.float32)


def _expected(config: Config, state: dict) -> dict[str, torch.Tensor]:
    """Our tensors in llama.cpp's names and layouts (float32)."""
    _, _, plans = gguf_tensor_plan(config)
    out = {}
    for plan in plans:
        hf = plan.rule.to_hf([state[k] for k in plan.rule.lit])[plan.position]
        out[plan.name] = plan.to_gguf(hf).float()
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "litgpt", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


# --------------------------------------------------------------------------------------------------
# export
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_tensor_reads_back_bit_exact_in_f16(tmp_path, family):
    config, state = tiny(family, tmp_path / "ckpt", dtype=torch.float16)
    out = convert_to_gguf(tmp_path / "ckpt", out=tmp_path / "m.gguf", dtype="f16")
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == EXPECTED_ARCH[family]
    expected = _expected(config, state)
    got = {t.name: t for t in reader.tensors}
    assert set(expected) <= set(got)
    for name, want in expected.items():
        tensor = got[name]
        kind = gguf.GGMLQuantizationType.F16 if want.dim() == 2 else gguf.GGMLQuantizationType.F32
        assert tensor.tensor_type == kind, name
        value = _gguf_array(tensor)
        assert value.shape == tuple(want.shape), name
        assert np.array_equal(value, want.to(torch.float16 if want.dim() == 2 else torch.float32).float().numpy()), name
    if config.tie_embeddings:
        assert "output.weight" not in got
    if family == "llama3":
        assert "rope_freqs.weight" in got


def test_dtypes_round_trip_within_their_error(tmp_path):
    config, state = tiny("qwen2", tmp_path / "ckpt", dtype=torch.bfloat16)
    expected = _expected(config, state)
    for dtype, kind in (("bf16", "BF16"), ("f32", "F32"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0")):
        reader = gguf.GGUFReader(str(convert_to_gguf(tmp_path / "ckpt", out=tmp_path / f"{dtype}.gguf", dtype=dtype)))
        got = {t.name: t for t in reader.tensors}
        for name, want in expected.items():
            value = _gguf_array(got[name])
            if want.dim() == 1 or dtype in ("bf16", "f32"):
                assert np.array_equal(value, want.float().numpy()), (dtype, name)
                continue
            assert got[name].tensor_type.name == kind
            # a block of 32 shares one scale: max|w| / 127 for q8_0, max|w| / 8 for q4_0, halved by rounding
            blocks = want.reshape(-1, 32).abs().amax(dim=1, keepdim=True)
            step = blocks / (127 if dtype == "q8_0" else 8)
            err = (torch.from_numpy(value).reshape(-1, 32) - want.reshape(-1, 32)).abs()
            assert bool((err <= step * (0.5 if dtype == "q8_0" else 1.0) + 1e-3).all()), (dtype, name)


def test_metadata_llama_cpp_reads(tmp_path):
    config, _ = tiny("gemma2", tmp_path / "ckpt")
    reader = gguf.GGUFReader(str(convert_to_gguf(tmp_path / "ckpt", out=tmp_path / "g.gguf")))

    def field(key):
        return reader.fields[key].contents()

    assert field("gemma2.context_length") == 64
    assert field("gemma2.embedding_length") == 64
    assert field("gemma2.block_count") == 2
    assert field("gemma2.attention.head_count") == 4
    assert field("gemma2.attention.head_count_kv") == 2
    assert field("gemma2.attention.key_length") == 16
    assert field("gemma2.attention.sliding_window") == 6
    assert field("gemma2.attn_logit_softcapping") == pytest.approx(config.attention_logit_softcapping)
    assert field("gemma2.final_logit_softcapping") == pytest.approx(config.final_logit_softcapping)
    assert field("gemma2.rope.freq_base") == pytest.approx(config.rope_base)
    assert field("gemma2.attention.layer_norm_rms_epsilon") == pytest.approx(config.norm_eps)
    assert field("tokenizer.ggml.model") == "llama"
    assert "{% for m in messages %}" in field("tokenizer.chat_template")
    assert field("tokenizer.ggml.bos_token_id") == 1 and field("tokenizer.ggml.eos_token_id") == 2
    assert len(field("tokenizer.ggml.tokens")) == config.padded_vocab_size


def test_unsupported_family_fails_in_one_line(tmp_path):
    folder = tmp_path / "pythia"
    make_hf_tokenizer(folder, 256)
    config = Config.from_name("pythia-14m", n_layer=1, n_embd=32, n_head=4, vocab_size=256, padded_vocab_size=256)
    torch.save(GPT(config).state_dict(), folder / "lit_model.pth")
    config.save(folder)
    result = _cli("convert_to_gguf", str(folder), "--out", str(tmp_path / "x.gguf"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "gpt_neox" in lines[0] and "Gemma 2" in lines[0] and "Qwen3" in lines[0] and "Phi-3" in lines[0]
    assert not (tmp_path / "x.gguf").exists()


def test_bad_dtype_is_a_one_line_error(tmp_path):
    tiny("llama2", tmp_path / "ckpt")
    with pytest.raises(ValueError, match="q4_0"):
        convert_to_gguf(tmp_path / "ckpt", dtype="q2_k")


def test_lora_step_folder_is_merged_first(tmp_path, monkeypatch):
    tiny("llama3", tmp_path / "base")
    step = tmp_path / "run" / "step-000001"
    step.mkdir(parents=True)
    (step / "lit_model.pth.lora").write_bytes(b"")
    calls = []

    def fake_merge(checkpoint_dir, pretrained_checkpoint_dir=None):
        calls.append((Path(checkpoint_dir), pretrained_checkpoint_dir))
        for name in ("lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json"):
            (step / name).write_bytes((tmp_path / "base" / name).read_bytes())

    import litgpt.scripts.merge_lora as merge_module

    monkeypatch.setattr(merge_module, "merge_lora", fake_merge)
    out = convert_to_gguf(step, out=tmp_path / "merged.gguf", pretrained_checkpoint_dir=tmp_path / "base")
    assert calls == [(step, tmp_path / "base")]
    assert out.is_file()


# --------------------------------------------------------------------------------------------------
# tokenizer
@pytest.mark.parametrize("family", ["llama3", "qwen2", "smollm2", "llama2", "mistral"])
def test_tokenizer_in_the_file_encodes_like_ours(tmp_path, family):
    tiny(family, tmp_path / "ckpt")
    out = convert_to_gguf(tmp_path / "ckpt", out=tmp_path / "m.gguf")
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    gguf_families.tokenizer_from_gguf(gguf.GGUFReader(str(out)), rebuilt)
    ours, theirs = Tokenizer(tmp_path / "ckpt"), Tokenizer(rebuilt)
    assert (theirs.bos_id, theirs.eos_id, theirs.use_bos) == (ours.bos_id, ours.eos_id, ours.use_bos)
    for text in _comparable(family):
        assert theirs.encode(text).tolist() == ours.encode(text).tolist(), text
        assert theirs.decode(ours.encode(text)) == ours.decode(ours.encode(text)), text


# --------------------------------------------------------------------------------------------------
# import
def test_cli_round_trip_gguf_litgpt_gguf_is_bit_exact(tmp_path):
    config, state = tiny("qwen3", tmp_path / "ckpt", dtype=torch.float16)
    first = tmp_path / "export" / "tiny.gguf"
    result = _cli("convert_to_gguf", str(tmp_path / "ckpt"), "--out", str(first), "--dtype", "f16")
    assert result.returncode == 0, result.stderr
    result = _cli("convert_to_litgpt", str(first))
    assert result.returncode == 0, result.stderr
    imported = tmp_path / "export" / "tiny"
    assert architecture_signature(Config.from_file(imported / "model_config.yaml")) == architecture_signature(config)
    back = torch.load(imported / "lit_model.pth")
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].dtype == torch.float16
        assert torch.equal(back[key], value), key
    second = convert_to_gguf(imported, out=tmp_path / "again.gguf", dtype="f16")
    a = {t.name: t for t in gguf.GGUFReader(str(first)).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(second)).tensors}
    assert set(a) == set(b)
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type
        assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), name
    ours, theirs = Tokenizer(tmp_path / "ckpt"), Tokenizer(imported)
    for text in TEXTS:
        assert theirs.encode(text).tolist() == ours.encode(text).tolist(), text


@pytest.mark.parametrize("family", ["llama3", "gemma2", "phi3", "qwen2"])
def test_import_infers_the_config_from_llama_cpp_keys(tmp_path, family, monkeypatch):
    """A GGUF file written elsewhere has no litgpt key: the config comes from llama.cpp's keys alone."""
    config, state = tiny(family, tmp_path / "ckpt")
    monkeypatch.setattr(gguf_families, "CONFIG_KEY", "other.tool.config")
    out = convert_to_gguf(tmp_path / "ckpt", out=tmp_path / "m.gguf", dtype="f32")
    monkeypatch.undo()
    pth = gguf_families.convert_gguf_file(out, tmp_path / "imported")
    got = Config.from_file(tmp_path / "imported" / "model_config.yaml")
    assert architecture_signature(got) == architecture_signature(config)
    back = torch.load(pth)
    for key, value in state.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=1e-6 if "norm" in key else 0, msg=key)


def test_q8_0_import_is_dequantized(tmp_path):
    config, state = tiny("llama2", tmp_path / "ckpt")
    out = convert_to_gguf(tmp_path / "ckpt", out=tmp_path / "q.gguf", dtype="q8_0")
    back = torch.load(gguf_families.convert_gguf_file(out))
    assert back["transformer.h.0.attn.proj.weight"].dtype == torch.float32
    scale = state["transformer.h.0.attn.proj.weight"].abs().max() / 127
    torch.testing.assert_close(back["transformer.h.0.attn.proj.weight"], state["transformer.h.0.attn.proj.weight"],
                               rtol=0, atol=float(scale))


def test_import_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError):
        gguf_families.convert_gguf_file(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    result = _cli("convert_to_litgpt", str(bad))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------------------------------
# llama.cpp itself
def _llama_cpp():
    """llama-cpp-python, a test dependency (`make test` builds it): missing means failing, never skipping."""
    import llama_cpp

    return llama_cpp


def _our_logits(model: GPT, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].float()


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_llama_cpp_gives_our_logits_and_greedy_tokens(tmp_path, family):
    llama_cpp = _llama_cpp()
    config, state = tiny(family, tmp_path / "ckpt", dtype=torch.float16)
    out = convert_to_gguf(tmp_path / "ckpt", out=tmp_path / "m.gguf", dtype="f16")
    model = GPT(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, logits_all=True, verbose=False, n_threads=1, seed=0)
    tokenizer = Tokenizer(tmp_path / "ckpt")

    for text in _comparable(family):
        want = tokenizer.encode(text).tolist()
        got = llm.tokenize(text.encode("utf-8"), add_bos=tokenizer.use_bos, special=False)
        assert got == want, text

    prompt = tokenizer.encode("def f(x):\n    return x * 2").tolist()
    llm.reset()
    llm.eval(prompt)
    theirs = torch.tensor(np.array(llm.scores[: len(prompt)]), dtype=torch.float32)
    torch.testing.assert_close(theirs, _our_logits(model, prompt), rtol=0, atol=1e-2)

    ids, ours = list(prompt), []
    for _ in range(16):
        ours.append(int(_our_logits(model, ids)[-1].argmax()))
        ids.append(ours[-1])
    llm.reset()
    theirs_tokens = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        theirs_tokens.append(int(token))
        if len(theirs_tokens) == 16:
            break
    assert theirs_tokens == ours
    if family in ("llama3", "qwen3"):  # the same tokens are what `litgpt generate` prints
        stop = next((i for i, t in enumerate(ours) if t in tokenizer.stop_tokens), len(ours))
        result = _cli("generate", str(tmp_path / "ckpt"), "--prompt", "def f(x):\n    return x * 2",
                      "--max_new_tokens", "16", "--top_k", "1", "--precision", "32-true")
        assert result.returncode == 0, result.stderr
        assert tokenizer.decode(torch.tensor(ours[:stop])) in result.stdout
