"""The CPU decode path: single-token linears through torch.mv, same parameters and results."""

import copy

import pytest
import torch
import torch.nn as nn

from litgpt import GPT, LLM
from litgpt.api import _cpu_state_dict
from litgpt.generate import cpu
from litgpt.generate.engine import decode_one_token, generate, prefill
from litgpt.generate.cpu import MatVecLinear, restore_linears, use_matvec_linears
from tests._gen_helpers import FAMILIES, make_checkpoint, shrunk, tiny_config


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_matvec_linear_equals_linear_for_one_vector_and_leaves_other_shapes_to_it(dtype, bias):
    torch.manual_seed(0)
    plain = nn.Linear(72, 50, bias=bias).to(dtype)
    fast = nn.Linear(72, 50, bias=bias).to(dtype)
    fast.load_state_dict(plain.state_dict())
    fast.__class__ = MatVecLinear
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for shape in [(72,), (1, 1, 72), (3, 1, 72), (1, 4, 72)]:
        x = torch.randn(shape, dtype=dtype)
        out = fast(x)
        assert out.shape == shape[:-1] + (50,) and out.dtype == dtype
        torch.testing.assert_close(out, plain(x), **tol)


def test_the_swap_keeps_parameters_state_dict_and_greedy_tokens():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    keys = list(model.state_dict())
    model.set_kv_cache(2, 48)
    prompts = [torch.randint(0, 64, (5,)), torch.randint(0, 64, (8,))]
    expected = [generate(model, [p], 12, temperature=0)[0].tolist() for p in prompts]
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert use_matvec_linears(model) == n_linear > 0
    assert list(model.state_dict()) == keys
    assert [generate(model, [p], 12, temperature=0)[0].tolist() for p in prompts] == expected  # batch 1: mv
    assert [t.tolist() for t in generate(model, prompts, 12, temperature=0)] == expected
    restore_linears(model)
    assert not any(isinstance(m, MatVecLinear) for m in model.modules())


def test_llm_on_the_cpu_decodes_with_matrix_vector_products(tmp_path):
    llm = LLM.load(str(make_checkpoint(tmp_path / "ckpt")), distribute=None)
    llm.distribute(accelerator="cpu", precision="32-true")
    assert type(llm.model.lm_head) is MatVecLinear
    assert type(llm.model.transformer.h[0].attn.qkv) is MatVecLinear
    llm.distribute(accelerator="cpu", precision="32-true", quantize="int8")
    assert not any(type(m) is MatVecLinear for m in llm.model.modules())  # quantized layers keep their kernels


# ------------------------------------------------------------------------------------------------------------
# the native decode step (cpu_kernels.c)

HAS_AVX512_BF16 = set(cpu._CPU_FEATURES) <= cpu._cpu_flags()
# a hardware condition, like "no GPU": on a CPU with AVX512-BF16 the kernels must build and load (next test)
needs_kernels = pytest.mark.skipif(not HAS_AVX512_BF16, reason="this CPU has no AVX512-BF16 (hardware)")


def test_kernels_build_on_a_cpu_that_has_the_instructions():
    if HAS_AVX512_BF16:
        assert cpu.load_kernels() is not None, cpu.kernels_problem()
    else:
        assert cpu.load_kernels() is None and "AVX512" in cpu.kernels_problem()


@needs_kernels
@pytest.mark.parametrize("rows", [1, 3, 9, 20])
@pytest.mark.parametrize("k", [576, 577, 100, 31, 64])
def test_native_linear_matches_a_float32_matmul(rows, k):
    torch.manual_seed(0)
    w = torch.randn(37, k, dtype=torch.bfloat16)
    x = torch.randn(rows, k + 3, dtype=torch.bfloat16)[:, :k]  # rows with a leading dimension
    bias = torch.randn(37)
    y = torch.full((rows, 40), 7.0)
    pack = torch.zeros(-(-rows // 16) * 16 * k, dtype=torch.bfloat16)  # AMX (where present) packs rows here
    cpu.load_kernels().lg_linear(
        x.data_ptr(), rows, k + 3, w.data_ptr(), 37, k, bias.data_ptr(), y.data_ptr(), 40, 1, pack.data_ptr()
    )
    expected = x.float() @ w.float().T + bias + 7.0
    torch.testing.assert_close(y[:, :37], expected, rtol=1e-5, atol=1e-4)
    assert (y[:, 37:] == 7.0).all()  # nothing written past the output columns


def _bf16_model_and_float32_twin(config):
    torch.manual_seed(0)
    model = GPT(config).to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norms and biases away from 1 / 0, so that a misused one shows
                p.add_(torch.randn_like(p) * 0.2)
    twin = copy.deepcopy(model).float()  # the same (bf16-representable) weights in float32
    return model, twin


def _errors_of_one_step(model, twin, per_row: bool, B: int):
    """Relative max errors against the float32 twin of (native step, eager bf16 step) after a 7-token prefill."""
    T = 7
    for m in (model, twin):
        m.set_kv_cache(B, 16)
    vocab = model.config.vocab_size
    idx = torch.randint(0, vocab, (B, T))
    token = torch.randint(0, vocab, (B, 1))
    pos = torch.tensor([[T - r % 3] for r in range(B)]) if per_row else torch.tensor([T])
    with torch.no_grad():
        prefill(twin, idx)
        prefill(model, idx)
        for a, b in zip(model.transformer.h, twin.transformer.h):  # the same (rounded) cache for both
            a.attn.kv_cache.k.copy_(b.attn.kv_cache.k)
            a.attn.kv_cache.v.copy_(b.attn.kv_cache.v)
        cache = [(b.attn.kv_cache.k.clone(), b.attn.kv_cache.v.clone()) for b in model.transformer.h]
        reference = decode_one_token(twin, token, pos).float()
        eager = decode_one_token(model, token, pos).float()
        for b, (k, v) in zip(model.transformer.h, cache):
            b.attn.kv_cache.k.copy_(k)
            b.attn.kv_cache.v.copy_(v)
        step = cpu.native_decode_step(model)
        assert step is not None, cpu.native_decode_problem(model)
        native = step(model, token, pos)
    scale = reference.abs().max()
    return ((native - reference).abs().max() / scale).item(), ((eager - reference).abs().max() / scale).item()


NATIVE_FAMILIES = [name for name in FAMILIES if not shrunk(name).norm_qk and not shrunk(name).n_expert]


@needs_kernels
@pytest.mark.parametrize("name", NATIVE_FAMILIES)
def test_native_step_is_closer_to_float32_than_the_eager_bf16_step(name):
    """Every family the native step runs (GQA / MQA, partial rotary, parallel residuals, post norms, soft-caps,
    sliding windows of 4 over 7+ positions, learned positions, biases): its logits are at least as close to
    the float32 computation with the same weights as the eager bfloat16 step's are (it keeps the residual
    stream in float32), and within bfloat16 rounding of it."""
    model, twin = _bf16_model_and_float32_twin(shrunk(name))
    for per_row, rows in [(False, 1), (True, 3), (True, 5)]:  # 5 rows: the AMX path where the CPU has one
        native, eager = _errors_of_one_step(model, twin, per_row, rows)
        assert native < 1e-2 and native <= 1.25 * eager + 1e-3, (per_row, rows, native, eager)


def test_models_the_native_step_does_not_run_say_why():
    model = GPT(tiny_config()).eval()
    model.set_kv_cache(1, 16)
    assert "bfloat16" in cpu.native_decode_problem(model)  # float32
    assert cpu.native_decode_step(model) is None
    model = GPT(shrunk("Qwen3-0.6B")).to(torch.bfloat16).eval()
    model.set_kv_cache(1, 16)
    assert "qk-norms" in cpu.native_decode_problem(model)


@needs_kernels
def test_generate_takes_the_native_step_for_bf16_models_and_batches_rows(monkeypatch):
    model = GPT(tiny_config()).to(torch.bfloat16).eval()
    calls = []
    original = cpu.NativeDecoder.__call__
    monkeypatch.setattr(cpu.NativeDecoder, "__call__", lambda self, *a: calls.append(a[1].size(0)) or original(self, *a))
    prompts = [torch.randint(0, 256, (n,)) for n in (5, 9, 3)]
    model.set_kv_cache(3, 32)
    out = generate(model, prompts, 6, temperature=0)
    assert [len(t) for t in out] == [6, 6, 6] and calls == [3] * 5  # per-row positions, one step per token
    decoder = cpu._decoders[model]
    model.set_kv_cache(1, 32)  # a new cache: a new decoder
    generate(model, prompts[:1], 3, temperature=0)
    assert cpu._decoders[model] is not decoder


@needs_kernels
def test_native_step_rejects_positions_outside_the_cache():
    model = GPT(tiny_config()).to(torch.bfloat16).eval()
    model.set_kv_cache(1, 8)
    step = cpu.native_decode_step(model)
    with pytest.raises(ValueError, match="outside the KV cache"):
        step(model, torch.zeros(1, 1, dtype=torch.long), torch.tensor([8]))
    with pytest.raises(ValueError, match="outside the KV cache"):
        step(model, torch.zeros(2, 1, dtype=torch.long), torch.tensor([1]))
    with pytest.raises(ValueError, match="outside the KV cache"):
        step.prefill(model, [torch.zeros(9, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 256\)"):
        step.prefill(model, [torch.tensor([3, 256])])


def test_kernels_off_or_unbuildable_leave_the_pytorch_path(monkeypatch, tmp_path):
    for env, message in [({"LITGPT_CPU_KERNELS": "0"}, "LITGPT_CPU_KERNELS=0"), ({"CC": "false"}, "failed")]:
        monkeypatch.setattr(cpu, "_kernels", None)
        monkeypatch.setattr(cpu, "_kernels_problem", None)
        monkeypatch.setenv("LITGPT_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(cpu, "_cpu_flags", lambda: set(cpu._CPU_FEATURES))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert cpu.load_kernels() is None and message in cpu.kernels_problem()
        model = GPT(tiny_config()).to(torch.bfloat16).eval()
        model.set_kv_cache(1, 16)
        assert "unavailable" in cpu.native_decode_problem(model)
        assert len(generate(model, [torch.tensor([1, 2, 3])], 4, temperature=0)[0]) == 4
        monkeypatch.delenv("LITGPT_CPU_KERNELS", raising=False)
    assert not list((tmp_path / "cpu_kernels").glob("*"))  # a failed build leaves no file behind


def test_packing_in_huge_pages_keeps_parameters_and_values_and_saves_compactly(tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny_config(tie_embeddings=True)).to(torch.bfloat16).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    assert cpu.pack_weights_in_huge_pages(model)
    assert list(model.parameters()) == params  # same Parameter objects
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == 1  # one buffer
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    state = _cpu_state_dict(model)  # what LLM.save writes: each tensor alone, not the whole buffer
    assert all(t.untyped_storage().nbytes() == t.nbytes for t in state.values())
    assert state["lm_head.weight"] is state["transformer.wte.weight"]


@needs_kernels
@pytest.mark.parametrize("name", ["SmolLM2-135M", "Gemma-2-2b", "gpt2", "phi-2"])
def test_native_prefill_of_prompts_of_different_lengths_matches_float32(name, monkeypatch):
    """All prompts' tokens in one pass (chunks of 5 rows here, so chunks split prompts): each prompt's last
    logits and its keys / values in the cache match the float32 computation within bfloat16 rounding."""
    monkeypatch.setattr(cpu.NativeDecoder, "prefill_rows", 5)
    model, twin = _bf16_model_and_float32_twin(shrunk(name))
    prompts = [torch.randint(0, model.config.vocab_size, (n,)) for n in (7, 2, 11)]
    for m in (model, twin):
        m.set_kv_cache(3, 16)
    with torch.no_grad():
        logits = cpu.native_decode_step(model).prefill(model, prompts)
        for i, p in enumerate(prompts):
            twin.set_kv_cache(1, 16)
            expected = prefill(twin, p[None])[0]
            assert ((logits[i] - expected).abs().max() / expected.abs().max()).item() < 1e-2
            for a, b in zip(model.transformer.h, twin.transformer.h):
                n = p.numel()
                torch.testing.assert_close(a.attn.kv_cache.k[i, :, :n].float(), b.attn.kv_cache.k[0, :, :n], rtol=0.03, atol=0.03)
                torch.testing.assert_close(a.attn.kv_cache.v[i, :, :n].float(), b.attn.kv_cache.v[0, :, :n], rtol=0.03, atol=0.03)
