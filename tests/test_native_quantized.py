"""int8 / int4 weights on the native CPU decode step (litgpt/generate/cpu.py, cpu_kernels.c).

The kernels widen the quantized codes to bfloat16 in registers and sum in float32; they must compute exactly what
the portable layers mean (W = q * scale, W = (c - 8) * scale + zero with the stored bf16 scales and zeros): per
layer within float32 rounding, per model as close to the float32 computation with the same dequantized weights
as the native bf16 step is, and the same greedy tokens as the PyTorch (eager) quantized path.
"""

from __future__ import annotations

import copy
import ctypes

import pytest
import torch
import torch.nn as nn

from litgpt import GPT
from litgpt.generate import cpu
from litgpt.generate.engine import decode_one_token, generate, prefill
from litgpt.quantization.loading import load_model, quantize_model
from litgpt.quantization.portable import Int4Linear, Int8Linear, quantize_int4, quantize_int8, unpack_int4
from tests._gen_helpers import FAMILIES, make_checkpoint, shrunk, tiny_config
from tests.test_native_parity import _assert_greedy_parity

HAS_AVX512_BF16 = set(cpu._CPU_FEATURES) <= cpu._cpu_flags()
needs_kernels = pytest.mark.skipif(not HAS_AVX512_BF16, reason="this CPU has no AVX512-BF16 (hardware)")
MODES = ["int8", "int4-g32", "int4-g64", "int4-g128"]


def _exact_weight(module: nn.Module) -> torch.Tensor:
    """The float32 weight a quantized layer stands for, computed exactly from its stored codes and scales."""
    if isinstance(module, Int8Linear):
        return module.weight.float() * module.scales.float()[:, None]
    weight, scales, zeros = module.portable()
    n, g = weight.size(0), module.group_size
    codes = unpack_int4(weight).float().view(n, -1, g)
    return ((codes - 8) * scales.float()[..., None] + zeros.float()[..., None]).view(n, -1)[:, : module.in_features]


def _float32_twin(model: GPT) -> GPT:
    """A float32 copy of a quantized model with plain layers holding the exact dequantized weights."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, (Int8Linear, Int4Linear)):
                w = _exact_weight(child)
                if attr == "wte":
                    plain = nn.Embedding(*w.shape)
                else:
                    plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                    if child.bias is not None:
                        plain.bias.data = child.bias.detach().float()
                plain.weight.data = w
                setattr(module, attr, plain)
    return twin.float()


def _kernel_linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    decoder = cpu.NativeDecoder.__new__(cpu.NativeDecoder)
    decoder._keep = []
    desc = decoder._linear(module)
    B, K = x.shape
    y = torch.zeros(B, module.out_features)
    pack = torch.zeros(-(-B // 16) * 16 * K, dtype=torch.bfloat16)
    cpu.load_kernels().lg_qlinear(x.data_ptr(), B, K, ctypes.byref(desc), y.data_ptr(), module.out_features, 0, pack.data_ptr())
    return y


@needs_kernels
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n, k", [(64, 128), (100, 200), (37, 77), (192, 576)])
def test_quantized_kernel_layer_equals_the_exact_dequantized_matmul(mode, n, k):
    """Rows not a multiple of the 64-row blocks, inputs not a multiple of the group (padded) or odd, batches that
    split into passes of 4 (int4) and 8 (int8) rows."""
    torch.manual_seed(0)
    w, bias = torch.randn(n, k), torch.randn(n)
    if mode == "int8":
        layer = Int8Linear(k, n, bias=True).set_quantized(*quantize_int8(w), bias, torch.bfloat16)
    else:
        group = int(mode.split("-g")[1])
        layer = Int4Linear(k, n, bias=True, group_size=group).set_quantized(*quantize_int4(w, group), bias, torch.bfloat16)
        assert layer.layout == "cpu"
    for rows in (1, 3, 5, 9):
        x = torch.randn(rows, k).to(torch.bfloat16)
        expected = x.float() @ _exact_weight(layer).T + layer.bias.float()
        y = _kernel_linear(layer, x)
        assert ((y - expected).abs().max() / expected.abs().max()).item() < 1e-5, (rows, mode)


NATIVE_FAMILIES = [name for name in FAMILIES if not shrunk(name).norm_qk and not shrunk(name).n_expert]


def _quantized_model_and_twin(config, mode: str):
    torch.manual_seed(0)
    model = GPT(config).to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    quantize_model(model, mode, dtype=torch.bfloat16, device="cpu")
    return model, _float32_twin(model)


@needs_kernels
@pytest.mark.parametrize("mode", ["int8", "int4-g128"])
@pytest.mark.parametrize("name", NATIVE_FAMILIES)
def test_native_quantized_step_matches_float32_with_the_same_weights(name, mode):
    """Every family of the parity set the native step runs: one decode step (1 and 5 rows, per-row positions) after
    a prefill, against the float32 model holding the exact dequantized weights. The native step rounds only the
    inputs of its linear layers to bfloat16 (as the eager bf16 path does, which also rounds every output)."""
    model, twin = _quantized_model_and_twin(shrunk(name), mode)
    model.set_kv_cache(1, 16, dtype=torch.bfloat16)  # no floating-point parameter tells some models' dtype
    assert cpu.native_decode_problem(model) is None
    for rows in (1, 5):
        model.set_kv_cache(rows, 16, dtype=torch.bfloat16)
        twin.set_kv_cache(rows, 16)
        idx = torch.randint(0, model.config.vocab_size, (rows, 7))
        token = torch.randint(0, model.config.vocab_size, (rows, 1))
        pos = torch.tensor([[7 - r % 3] for r in range(rows)])
        with torch.no_grad():
            prefill(twin, idx)
            prefill(model, idx)
            for a, b in zip(model.transformer.h, twin.transformer.h):  # the same (rounded) cache for both
                a.attn.kv_cache.k.copy_(b.attn.kv_cache.k)
                a.attn.kv_cache.v.copy_(b.attn.kv_cache.v)
            reference = decode_one_token(twin, token, pos).float()
            native = cpu.native_decode_step(model)(model, token, pos)
        err = ((native - reference).norm() / reference.norm()).item()
        assert err < 1e-2, (name, mode, rows, err)


@needs_kernels
@pytest.mark.parametrize("mode", MODES)
def test_native_and_eager_quantized_greedy_tokens_agree(mode):
    """Generate (prefill and steps) takes the native step for a quantized model; the tokens equal the eager
    quantized path's (PyTorch's int8 / int4 kernels) but at near-ties of the eager logits, batch 1 and batched."""
    torch.manual_seed(0)
    model = GPT(tiny_config(n_embd=64, intermediate_size=128, block_size=64)).to(torch.bfloat16).eval()
    quantize_model(model, mode, dtype=torch.bfloat16, device="cpu")
    prompts = [torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(n)) for n in (6, 9)]
    model.set_kv_cache(2, 64)
    assert cpu.native_decode_step(model) is not None, cpu.native_decode_problem(model)
    batched = generate(model, prompts, 24, temperature=0)
    for prompt, tokens in zip(prompts, batched):
        assert torch.equal(generate(model, [prompt], 24, temperature=0)[0], tokens)  # rows are independent
    model.set_kv_cache(1, 64)
    for prompt in prompts:
        _assert_greedy_parity(model, prompt)


def test_quantized_layers_declare_native_support_and_say_why_when_not():
    for cls in ("Int8Linear", "Int8Embedding", "Int4Linear", "Int4Embedding"):
        module = getattr(__import__("litgpt.quantization.portable", fromlist=[cls]), cls)
        assert vars(module).get("native_decode") is True
    torch.manual_seed(0)
    model = GPT(tiny_config(n_embd=64, intermediate_size=128)).eval()
    quantize_model(model, "int4-g32", dtype=torch.bfloat16, device="cpu", use_kernels=False)  # portable layout
    model.set_kv_cache(1, 16)
    assert "portable layout" in cpu.native_decode_problem(model)
    model = GPT(tiny_config(n_embd=64, intermediate_size=128)).eval()
    quantize_model(model, "int8", dtype=torch.float32, device="cpu")
    model.set_kv_cache(1, 16)
    assert "bfloat16" in cpu.native_decode_problem(model)


@needs_kernels
def test_a_saved_quantized_checkpoint_loads_as_saved_and_decodes_natively(tmp_path):
    """`litgpt quantize` output (codes, scales and quantization.yaml) loads without quantizing again; the loaded
    model runs the native step with the saved codes."""
    from litgpt.quantization.cli import quantize_checkpoint

    src = make_checkpoint(tmp_path / "src", tiny_config(n_embd=64, intermediate_size=128))
    out = tmp_path / "q"
    quantize_checkpoint(src, mode="int4-g32", out_dir=out)
    model = load_model(out, dtype=torch.bfloat16, device="cpu")
    fresh = load_model(src, quantize="int4-g32", dtype=torch.bfloat16, device="cpu")
    assert torch.equal(model.lm_head.weight, fresh.lm_head.weight)
    model.set_kv_cache(1, 32)
    assert cpu.native_decode_step(model) is not None
    assert len(generate(model, [torch.tensor([1, 2, 3])], 5, temperature=0)[0]) == 5
