"""Quantized inference: the portable int8 / int4 layers and kernels, bitsandbytes modes, quantize-while-loading,
saved quantized checkpoints and the `litgpt quantize` verb. Tiny models on the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from litgpt import GPT
from litgpt.generate.engine import generate
from litgpt.quantization import (
    MODES,
    Int4Embedding,
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    check_quantize_supported,
    load_model,
    parse_quantize,
    quantize_int4,
    quantize_int8,
    quantize_model,
    quantized_nbytes,
    read_quantization_file,
)
from litgpt.quantization import bnb as bnb_module
from litgpt.quantization.cli import quantize_checkpoint
from litgpt.quantization.portable import _cpu_int4_unpack, dequantize_int4, int4_kernel_ok, int8_kernel_ok
from tests._gen_helpers import make_checkpoint, tiny_config
from tests._tokenizers import training_text

BNB_MODES = [m for m in MODES if m.startswith("bnb.")]
PORTABLE_MODES = [m for m in MODES if not m.startswith("bnb.")]





def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------------------------
# fixtures: tiny checkpoints


@pytest.fixture(scope="module")
def tied_ckpt(tmp_path_factory) -> Path:
    """Llama-style, tied embeddings, dimensions the CPU kernels take (multiples of 64)."""
    config = tiny_config(n_embd=64, intermediate_size=128, tie_embeddings=True)
    return make_checkpoint(tmp_path_factory.mktemp("tied"), config)


@pytest.fixture(scope="module")
def odd_ckpt(tmp_path_factory) -> Path:
    """Untied, with biases and awkward dimensions: in_features not a multiple of 16 or of the group size, an
    output count not a multiple of the CPU kernel's 64-row blocks (padding and the plain path)."""
    config = tiny_config(
        n_embd=72, n_head=4, n_query_groups=4, intermediate_size=100, bias=True, vocab_size=250, padded_vocab_size=250,
    )
    return make_checkpoint(tmp_path_factory.mktemp("odd"), config, seed=1)


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory) -> Path:
    """A tiny byte-level model trained for a few seconds on English text, so that perplexity means something."""
    text = torch.tensor(list(training_text()[:12000].encode()), dtype=torch.long)
    train = text[: int(len(text) * 0.9)]
    config = tiny_config(n_embd=64, intermediate_size=192, vocab_size=256, block_size=128)
    torch.manual_seed(0)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small run fastest on one thread, and do not stall on a busy machine
    try:
        for _ in range(150):
            starts = torch.randint(0, len(train) - 65, (8,), generator=gen)
            x = torch.stack([train[i : i + 64] for i in starts])
            y = torch.stack([train[i + 1 : i + 65] for i in starts])
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("trained")
    torch.save(model.state_dict(), directory / "lit_model.pth")
    config.save(directory)
    return directory


def validation_bytes() -> torch.Tensor:
    text = torch.tensor(list(training_text()[:12000].encode()), dtype=torch.long)
    return text[int(len(text) * 0.9) :]


def perplexity(model: GPT, data: torch.Tensor, length: int = 64) -> float:
    n = (len(data) - 1) // length * length
    x, y = data[:n].view(-1, length), data[1 : n + 1].view(-1, length)
    with torch.no_grad():
        logits = model(x).float()
    return math.exp(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item())


PROMPT = torch.tensor([[3, 17, 42, 99, 7, 128, 5, 64]])


def logits_of(model: GPT, idx: torch.Tensor = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)


# ------------------------------------------------------------------------------------------------------------
# modes


def test_parse_quantize_names_and_errors():
    assert parse_quantize(None) is None
    assert parse_quantize("int4") == parse_quantize("int4-g64")
    assert parse_quantize("int4-g32").group_size == 32
    spec = parse_quantize("bnb.nf4-dq")
    assert (spec.method, spec.bnb_type, spec.double_quant) == ("bnb", "nf4", True)
    assert parse_quantize("bnb.int8").bnb_type == "int8"
    with pytest.raises(ValueError, match="unknown quantization mode 'int3'.*bnb.nf4.*int4-g128"):
        parse_quantize("int3")
    with pytest.raises(ValueError, match=r"group size must be one of \(32, 64, 128\)"):
        parse_quantize("int4-g48")


# ------------------------------------------------------------------------------------------------------------
# the portable formats and layers


def test_quantize_int8_and_int4_round_trip_error_is_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(96, 200)
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and scales.shape == (96,)
    assert ((q.float() * scales[:, None] - w).abs() <= scales[:, None] / 2 + 1e-6).all()
    for group in (32, 64, 128):
        packed, s, z = quantize_int4(w, group)
        kp = -(-200 // group) * group
        assert packed.shape == (96, kp // 2) and s.shape == (96, kp // group)
        deq = dequantize_int4(packed, s, z, group, torch.float32)[:, :200]
        step = s.repeat_interleave(group, dim=1)[:, :200]
        assert ((deq - w).abs() <= step / 2 + 1e-5).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(192, 128), (100, 72), (8, 64)])
def test_int8_kernel_and_plain_path_agree(shape, dtype):
    N, K = shape
    torch.manual_seed(0)
    w, b = torch.randn(N, K), torch.randn(N)
    q, s = quantize_int8(w)
    fused = Int8Linear(K, N, bias=True).set_quantized(q, s, b, dtype)
    plain = Int8Linear(K, N, bias=True).set_quantized(q, s, b, dtype, use_kernel=False)
    x = torch.randn(2, 5, K).to(dtype)
    # the CPU kernel is used wherever in_features is a multiple of 16 (other shapes read out of bounds in it)
    assert fused.use_kernel == (K % 16 == 0 and int8_kernel_ok("cpu", dtype)) and not plain.use_kernel
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert rel_err(fused(x), plain(x)) < tol
    assert rel_err(fused(x), F.linear(x.float(), q.float() * s[:, None], b)) < tol


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("shape", [(192, 128), (100, 72), (8, 64)])
def test_int4_kernel_and_plain_path_agree(shape, group, dtype):
    N, K = shape
    torch.manual_seed(0)
    w, b = torch.randn(N, K), torch.randn(N)
    packed, s, z = quantize_int4(w, group)
    fused = Int4Linear(K, N, bias=True, group_size=group).set_quantized(packed, s, z, b, dtype)
    plain = Int4Linear(K, N, bias=True, group_size=group).set_quantized(packed, s, z, b, dtype, use_kernel=False)
    assert fused.layout == ("cpu" if int4_kernel_ok("cpu", dtype) else "portable") and plain.layout == "portable"
    x = torch.randn(2, 5, K).to(dtype)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert rel_err(fused(x), plain(x)) < tol
    # both read back the same portable tensors, and rows (embedding lookups) match
    for layer in (fused, plain):
        wb, sb, zb = layer.portable()
        assert torch.equal(wb, packed)
        assert torch.equal(sb, s.to(dtype)) and torch.equal(zb, z.to(dtype))
    ids = torch.tensor([[0, N - 1, N // 2], [1, 2, 3]])
    assert torch.equal(fused.rows(ids), plain.rows(ids))
    assert torch.allclose(plain.rows(ids).float(), plain.dequantized(torch.float32)[ids], atol=1e-2, rtol=1e-2)


def test_int4_cpu_layout_is_read_back_exactly():
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (192, 96), dtype=torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, 2)
    back = _cpu_int4_unpack(packed, 192)
    expected = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8)
    assert torch.equal(back, expected)


def test_int4_state_dict_is_portable_and_loads_into_a_fresh_layer():
    torch.manual_seed(0)
    w = torch.randn(128, 64)
    packed, s, z = quantize_int4(w, 32)
    layer = Int4Linear(64, 128, group_size=32).set_quantized(packed, s, z, None, torch.bfloat16)
    state = layer.state_dict()
    assert set(state) == {"weight", "scales", "zeros"}
    assert state["weight"].dtype == torch.uint8 and state["weight"].shape == (128, 32)
    fresh = Int4Linear(64, 128, group_size=32)
    fresh.load_state_dict(state)
    x = torch.randn(3, 64).to(torch.bfloat16)
    assert fresh.layout == layer.layout and torch.equal(fresh(x), layer(x))


def test_module_to_dtype_keeps_working():
    torch.manual_seed(0)
    w = torch.randn(128, 64)
    layer = Int4Linear(64, 128, group_size=64).set_quantized(*quantize_int4(w, 64), None, torch.bfloat16)
    ref = layer(torch.ones(1, 64, dtype=torch.bfloat16)).float()
    layer.to(torch.float32)
    assert layer.scales_and_zeros.dtype == torch.float32
    assert rel_err(layer(torch.ones(1, 64)), ref) < 1e-2
    q8 = Int8Linear(64, 128).set_quantized(*quantize_int8(w), None, torch.bfloat16)
    q8.to(torch.float32)
    assert q8.scales.dtype == torch.float32 and q8(torch.ones(1, 64)).dtype == torch.float32


# ------------------------------------------------------------------------------------------------------------
# whole models: every mode generates; accuracy bounds


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_generates(tied_ckpt, mode):
    model = load_model(tied_ckpt, quantize=mode, dtype=torch.bfloat16, device="cpu")
    qkv, head, wte = model.transformer.h[0].attn.qkv, model.lm_head, model.transformer.wte
    if mode.startswith("bnb."):
        import bitsandbytes as bnb

        expected = bnb.nn.Linear8bitLt if mode == "bnb.int8" else bnb.nn.Linear4bit
        assert isinstance(qkv, expected) and isinstance(head, expected)
        assert isinstance(wte, torch.nn.Embedding) and wte.weight.dtype == torch.bfloat16
    else:
        linear, emb = (Int8Linear, Int8Embedding) if mode == "int8" else (Int4Linear, Int4Embedding)
        assert type(qkv) is linear and type(head) is linear and type(wte) is emb
        # tied: the embedding reads the head's quantized tensors, no second copy
        assert wte.weight.data_ptr() == head.weight.data_ptr()
    assert not any(p.requires_grad for p in model.parameters())
    model.set_kv_cache(batch_size=1, max_seq_length=24, dtype=torch.bfloat16)
    tokens = generate(model, [PROMPT[0]], max_new_tokens=6, temperature=0.0, fixed_cache_len=24)[0]
    assert tokens.shape == (6,)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < model.config.padded_vocab_size
    # the first greedy token (prefill through the KV cache) is the argmax of a plain forward pass
    assert int(tokens[0]) == int(logits_of(model)[0, -1].argmax())


@pytest.mark.parametrize("mode", ["bnb.nf4", "bnb.fp4-dq"])
def test_4bit_bitsandbytes_runs_layers_of_any_input_size_on_the_cpu(odd_ckpt, mode):
    # bitsandbytes' packed CPU inference kernel fails on rows that are not whole 64-element blocks (72 here)
    model = load_model(odd_ckpt, quantize=mode, dtype=torch.bfloat16, device="cpu").eval()
    model.set_kv_cache(batch_size=1, max_seq_length=24, dtype=torch.bfloat16)
    tokens = generate(model, [PROMPT[0]], max_new_tokens=4, temperature=0.0, fixed_cache_len=24)[0]
    assert tokens.shape == (4,)
    reference = logits_of(load_model(odd_ckpt, dtype=torch.float32))
    quantized = logits_of(model).float()
    assert float((quantized - reference).norm() / reference.norm()) < 0.3


def test_odd_shapes_take_padding_and_the_plain_path(odd_ckpt):
    ref = logits_of(load_model(odd_ckpt, dtype=torch.float32))
    for mode, bound in (("int8", 0.02), ("int4-g32", 0.2), ("int4-g128", 0.2)):
        model = load_model(odd_ckpt, quantize=mode, dtype=torch.float32)
        qkv = model.transformer.h[0].attn.qkv  # 72 inputs, 216 outputs
        if mode == "int8":
            assert not qkv.use_kernel  # 72 is not a multiple of 16
        else:
            assert qkv.padded_in % qkv.group_size == 0 and qkv.padded_in > 72
        assert qkv.bias is not None
        assert rel_err(logits_of(model), ref) < bound


def test_int8_logits_within_one_percent_of_bf16(trained_ckpt):
    data = validation_bytes()[None, :100]
    ref = logits_of(load_model(trained_ckpt, dtype=torch.bfloat16), data)
    for mode in ("int8", "bnb.int8"):
        q = logits_of(load_model(trained_ckpt, quantize=mode, dtype=torch.bfloat16), data)
        assert rel_err(q, ref) < 0.01, mode


def test_int4_perplexity_within_five_percent_of_bf16(trained_ckpt):
    data = validation_bytes()
    base = perplexity(load_model(trained_ckpt, dtype=torch.bfloat16), data)
    assert base < 20  # the model did learn the text (uniform would be 256)
    modes = ["int4-g32", "int4-g64", "int4-g128", "bnb.nf4"]
    for mode in modes:
        ppl = perplexity(load_model(trained_ckpt, quantize=mode, dtype=torch.bfloat16), data)
        assert ppl < base * 1.05, f"{mode}: perplexity {ppl:.3f} vs bf16 {base:.3f}"


def test_weight_memory_is_a_half_and_about_a_quarter_of_bf16(tmp_path):
    config = tiny_config(n_embd=256, n_head=4, n_query_groups=4, intermediate_size=512, vocab_size=512)
    ckpt = make_checkpoint(tmp_path, config)
    bf16 = quantized_nbytes(load_model(ckpt, dtype=torch.bfloat16))
    int8 = quantized_nbytes(load_model(ckpt, quantize="int8", dtype=torch.bfloat16))
    int4 = quantized_nbytes(load_model(ckpt, quantize="int4-g128", dtype=torch.bfloat16))
    assert 0.48 < int8 / bf16 < 0.53
    assert 0.25 < int4 / bf16 < 0.30  # 4 bits per weight plus a bf16 scale and zero per 128


def test_quantize_model_in_memory_matches_loading(tied_ckpt):
    for mode in ("int8", "int4-g64"):
        loaded = load_model(tied_ckpt, quantize=mode, dtype=torch.bfloat16)
        built = load_model(tied_ckpt, dtype=torch.float32)
        quantize_model(built, mode, dtype=torch.bfloat16)
        assert torch.equal(logits_of(built), logits_of(loaded))
        with pytest.raises(ValueError, match="already quantized"):
            quantize_model(built, mode)


def test_moe_router_stays_full_precision(tmp_path):
    config = tiny_config(mlp_class_name="LLaMAMoE", n_expert=4, n_expert_per_token=2, moe_intermediate_size=64)
    ckpt = make_checkpoint(tmp_path, config)
    model = load_model(ckpt, quantize="int4-g32", dtype=torch.float32)
    moe = model.transformer.h[0].mlp
    assert type(moe.gate) is torch.nn.Linear and moe.gate.weight.dtype == torch.float32
    assert type(moe.experts[0].fc_1) is Int4Linear
    ref = logits_of(load_model(ckpt, dtype=torch.float32))
    assert rel_err(logits_of(model), ref) < 0.25


# ------------------------------------------------------------------------------------------------------------
# saved quantized checkpoints and the `litgpt quantize` verb


@pytest.mark.parametrize(
    "mode,fixture",
    [("int8", "tied_ckpt"), ("int4-g32", "tied_ckpt"), ("int4-g128", "odd_ckpt"), ("int8", "odd_ckpt"),
     pytest.param("bnb.nf4-dq", "tied_ckpt"), pytest.param("bnb.int8", "odd_ckpt")],
)
def test_saved_checkpoint_reloads_with_identical_outputs(mode, fixture, request, tmp_path):
    ckpt = request.getfixturevalue(fixture)
    out = quantize_checkpoint(ckpt, mode=mode, out_dir=tmp_path / "q")
    names = {p.name for p in out.iterdir()}
    assert {"lit_model.pth", "model_config.yaml", "quantization.yaml", "tokenizer.json"} <= names
    assert read_quantization_file(out) == parse_quantize(mode)
    assert (out / "lit_model.pth").stat().st_size < (ckpt / "lit_model.pth").stat().st_size * 0.6
    direct = load_model(ckpt, quantize=mode, dtype=torch.bfloat16)
    saved = load_model(out, dtype=torch.bfloat16)  # the mode comes from quantization.yaml
    assert torch.equal(logits_of(saved), logits_of(direct))
    assert torch.equal(logits_of(load_model(out, quantize=mode, dtype=torch.bfloat16)), logits_of(direct))
    if not mode.startswith("bnb."):
        state = torch.load(out / "lit_model.pth", weights_only=True)
        assert state["transformer.h.0.attn.qkv.weight"].dtype == (torch.int8 if mode == "int8" else torch.uint8)
        assert "transformer.h.0.attn.qkv.scales" in state


def test_loading_a_saved_checkpoint_with_another_mode_fails(tied_ckpt, tmp_path):
    out = quantize_checkpoint(tied_ckpt, mode="int8", out_dir=tmp_path / "q")
    with pytest.raises(ValueError, match=r"holds a int8 checkpoint; load it with --quantize int8"):
        load_model(out, quantize="int4")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_checkpoint(out, mode="int4", out_dir=tmp_path / "again")


def test_quantize_verb_checks_its_arguments_first(tied_ckpt, tmp_path):
    with pytest.raises(ValueError, match="--mode is required"):
        quantize_checkpoint(tied_ckpt)
    with pytest.raises(ValueError, match="unknown quantization mode"):
        quantize_checkpoint(tied_ckpt, mode="int2")
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize_checkpoint(tied_ckpt, mode="int8", precision="bf16-mixed")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        quantize_checkpoint(tmp_path / "nowhere", mode="int8")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        quantize_checkpoint(tied_ckpt, mode="int8", out_dir=busy)
    with pytest.raises(ValueError, match="must differ"):
        quantize_checkpoint(tied_ckpt, mode="int8", out_dir=tied_ckpt)
    # default out_dir: beside the checkpoint, named after the mode
    out = quantize_checkpoint(tied_ckpt, mode="int4")
    try:
        assert out == tied_ckpt.parent / f"{tied_ckpt.name}-int4-g64"
        assert yaml.safe_load((out / "quantization.yaml").read_text())["group_size"] == 64
    finally:
        import shutil

        shutil.rmtree(out)


def test_quantize_verb_leaves_nothing_behind_on_failure(tied_ckpt, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        quantize_checkpoint(tied_ckpt, mode="int8", out_dir=tmp_path / "q")
    assert list(tmp_path.iterdir()) == []


def test_quantize_cli(tied_ckpt, tmp_path, capsys):
    from litgpt.__main__ import main

    assert main(["quantize", str(tied_ckpt), "--mode", "int8", "--out_dir", str(tmp_path / "q")]) == 0
    assert "Saved the int8 checkpoint" in capsys.readouterr().err
    assert main(["quantize", str(tied_ckpt), "--mode", "fp3", "--out_dir", str(tmp_path / "r")]) == 1
    assert "unknown quantization mode 'fp3'" in capsys.readouterr().err


def test_integer_weights_without_quantization_yaml_are_an_error(tied_ckpt, tmp_path):
    out = quantize_checkpoint(tied_ckpt, mode="int8", out_dir=tmp_path / "q")
    (out / "quantization.yaml").unlink()
    with pytest.raises(ValueError, match="does not match the model config"):
        load_model(out)


# ------------------------------------------------------------------------------------------------------------
# modes a device cannot run


def test_unknown_mode_and_unavailable_device_errors(tied_ckpt):
    with pytest.raises(ValueError, match="unknown quantization mode"):
        load_model(tied_ckpt, quantize="int4-fast")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model(tied_ckpt, quantize="int8", device="cuda")
    with pytest.raises(ValueError, match="meta device"):
        check_quantize_supported("int8", "meta")


def test_missing_bitsandbytes_is_a_one_line_import_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes" or name.startswith("bitsandbytes."):
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ImportError, match=r"--quantize bnb.nf4 needs bitsandbytes.*pip install bitsandbytes") as err:
        check_quantize_supported("bnb.nf4", "cpu")
    assert "\n" not in str(err.value)
    assert check_quantize_supported("int4", "cpu").mode == "int4-g64"  # portable modes need nothing


def test_bnb_mode_the_device_cannot_run_is_a_clear_error(monkeypatch, tied_ckpt):
    import bitsandbytes as bnb

    def unsupported(self, x):
        raise NotImplementedError("no fp4 kernel for this device\nlong traceback text")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", unsupported)
    bnb_module.bnb_runs_on.cache_clear()
    try:
        with pytest.raises(ValueError) as err:
            load_model(tied_ckpt, quantize="bnb.fp4", dtype=torch.bfloat16)
        message = str(err.value)
        assert "--quantize bnb.fp4 cannot run on cpu" in message and "no fp4 kernel for this device" in message
        assert "\n" not in message and "int8 or int4" in message
    finally:
        bnb_module.bnb_runs_on.cache_clear()


@pytest.mark.parametrize("mode", BNB_MODES)
def test_every_bnb_mode_runs_on_this_cpu(mode):
    assert bnb_module.bnb_runs_on(mode, "cpu", torch.bfloat16) is None


def test_llm_and_generate_cli_quantize_while_loading(tmp_path, capsys):
    """--quantize reaches the model through LLM.distribute (generate/chat use it) and a saved quantized
    folder loads directly."""
    from litgpt import LLM
    from litgpt.__main__ import main
    from tests._gen_helpers import make_checkpoint, tiny_config

    ckpt = make_checkpoint(tmp_path / "ckpt", tiny_config())
    plain = LLM.load(str(ckpt), distribute=None).distribute(precision="32-true")
    assert isinstance(plain.generate("Hello", max_new_tokens=8, temperature=0), str)
    llm = LLM.load(str(ckpt), distribute=None).distribute(precision="32-true", quantize="int8")
    assert llm.quantize == "int8"
    assert llm.model.transformer.h[0].attn.qkv.weight.dtype == torch.int8
    out = llm.generate("Hello", max_new_tokens=8, temperature=0)
    assert isinstance(out, str)
    args = ["generate", str(ckpt), "--prompt", "Hello", "--max_new_tokens", "8", "--temperature", "0",
            "--precision", "32-true"]
    assert main(args + ["--quantize", "int4"]) == 0
    assert "tokens/sec" in capsys.readouterr().err
    assert main(["quantize", str(ckpt), "--mode", "int8", "--out_dir", str(tmp_path / "q8")]) == 0
    saved = LLM.load(str(tmp_path / "q8"), distribute=None).distribute(precision="32-true")
    assert saved.quantize == "int8"
    assert saved.generate("Hello", max_new_tokens=8, temperature=0) == out
