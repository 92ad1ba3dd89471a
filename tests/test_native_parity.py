"""Greedy parity of the native CPU decode step (litgpt/generate/cpu.py) with the eager PyTorch path.

Every model family the engine decodes (base, LoRA unmerged, Adapter, Adapter v2, int8, int4) generates 32 greedy
tokens in bfloat16 both ways. Modules the native step does not compute (a PEFT branch, an adapter prefix) must
keep the model on the eager path: eligibility is declared per module class (`native_decode = True` on the class
itself), never inherited. On a CPU without AVX512-BF16 (or without a C
compiler) the tests assert the fallback instead: no native step, the same tokens.
"""

from __future__ import annotations

import pytest
import torch

from litgpt import GPT
from litgpt.adapter import AdapterSettings, inject_adapter
from litgpt.generate import cpu
from litgpt.generate.engine import decode_one_token, generate
from litgpt.lora import LoRASettings, inject_lora
from litgpt.model import CausalSelfAttention
from litgpt.quantization.loading import quantize_model
from tests._gen_helpers import shrunk, tiny_config

NEW_TOKENS = 32
KERNELS = cpu.load_kernels() is not None
# what keeps each family on the eager path (None: the native step runs it, where the kernels load)
FAMILIES = {
    "base": None,
    "lora": "LoRAQKVLinear",
    "adapter": "AdapterAttention",
    "adapter_v2": "AdapterV2Linear",
    "int8": None,  # quantized weights run natively too (tests/test_native_quantized.py)
    "int4": None,
}


def _model(family: str, config=None, seed: int = 0) -> GPT:
    """A tiny bfloat16 model of `family` whose PEFT tensors are far from their no-op init (so they matter)."""
    torch.manual_seed(seed)
    model = GPT(config or tiny_config(block_size=64))
    if family == "lora":
        inject_lora(model, LoRASettings(r=4, alpha=8, dropout=0.0, projection=True, mlp=True))
    elif family in ("adapter", "adapter_v2"):
        inject_adapter(model, AdapterSettings(version="v1" if family == "adapter" else "v2", prompt_length=4, start_layer=0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lora_B", "adapter_gate", "adapter_bias")):
                p.normal_(0.0, 0.5)
            elif name.endswith("adapter_scale"):
                p.uniform_(0.5, 1.5)
    model = model.to(torch.bfloat16).eval()
    if family in ("int8", "int4"):
        quantize_model(model, family, dtype=torch.bfloat16, device="cpu")
    return model


def _assert_greedy_parity(model: GPT, prompt: torch.Tensor) -> None:
    """Native (the engine's default on the CPU) and eager greedy tokens agree; a divergence is accepted only
    at a near-tie of the eager logits (bfloat16 rounding may flip those: the native step keeps the residual
    stream in float32)."""
    eager = generate(model, [prompt], NEW_TOKENS, temperature=0, step_fn=decode_one_token)[0]
    native = generate(model, [prompt], NEW_TOKENS, temperature=0)[0]
    assert len(eager) == len(native) == NEW_TOKENS
    if torch.equal(eager, native):
        return
    i = int((eager != native).nonzero()[0])
    with torch.no_grad():
        logits = model(torch.cat([prompt, eager[:i]])[None])[0, -1].float()
    top2 = logits.topk(2).values
    margin = float(top2[0] - top2[1]) / float(logits.abs().max())
    assert margin < 2e-2, f"tokens differ at step {i} where the eager logits are not a tie (margin {margin:.3f})"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_native_and_eager_greedy_tokens_agree_for_every_family(family):
    model = _model(family)
    model.set_kv_cache(1, 64)
    reason = cpu.native_decode_problem(model)
    blocker = FAMILIES[family]
    if blocker is not None:
        assert reason is not None and blocker in reason, reason  # eager, whatever the CPU
        assert cpu.native_decode_step(model) is None
    elif KERNELS:
        assert reason is None and cpu.native_decode_step(model) is not None  # the native step really runs
    else:
        assert "unavailable" in reason and cpu.native_decode_step(model) is None  # the fallback
    prompt = torch.randint(0, model.config.vocab_size, (6,), generator=torch.Generator().manual_seed(1))
    _assert_greedy_parity(model, prompt)


@pytest.mark.parametrize("name", ["gpt2", "Gemma-2-2b", "phi-2"])
def test_native_and_eager_greedy_tokens_agree_for_base_models_of_other_layouts(name):
    """Learned positions and LayerNorm (gpt2), soft-caps and post norms (Gemma 2), partial rotary and parallel
    residuals (phi-2)."""
    model = _model("base", shrunk(name))
    model.set_kv_cache(1, 48)
    assert (cpu.native_decode_problem(model) is None) == KERNELS
    prompt = torch.randint(0, model.config.vocab_size, (5,), generator=torch.Generator().manual_seed(2))
    _assert_greedy_parity(model, prompt)


def test_adapter_v1_prefix_keeps_a_bf16_model_on_the_eager_path_and_matters():
    """The bug this guards against: the native step has no adapter prefix, so an adapter (v1) checkpoint
    decoded natively would ignore it. The prefix changes the tokens here, and the engine keeps them."""
    adapted, base = _model("adapter"), _model("base")
    base.load_state_dict({k: v for k, v in adapted.state_dict().items() if "adapter" not in k})
    for m in (adapted, base):
        m.set_kv_cache(1, 64)
    assert "AdapterAttention" in cpu.native_decode_problem(adapted)
    prompt = torch.randint(0, 256, (6,), generator=torch.Generator().manual_seed(3))
    with_prefix = generate(adapted, [prompt], NEW_TOKENS, temperature=0, step_fn=decode_one_token)[0]
    without_prefix = generate(base, [prompt], NEW_TOKENS, temperature=0, step_fn=decode_one_token)[0]
    assert not torch.equal(with_prefix, without_prefix)  # the prefix matters
    assert torch.equal(generate(adapted, [prompt], NEW_TOKENS, temperature=0)[0], with_prefix)


def test_eligibility_is_declared_by_the_class_itself_not_inherited():
    class PatchedAttention(CausalSelfAttention):  # adds behaviour the native step does not know
        pass

    model = _model("base")
    model.set_kv_cache(1, 16)
    assert cpu.runs_natively(model.transformer.h[0].attn)
    model.transformer.h[1].attn.__class__ = PatchedAttention
    assert not cpu.runs_natively(model.transformer.h[1].attn)
    assert "PatchedAttention (transformer.h.1.attn)" in cpu.native_decode_problem(model)
    assert cpu.native_decode_step(model) is None
    PatchedAttention.native_decode = True  # a class that declares it is taken
    assert cpu.runs_natively(model.transformer.h[1].attn)
    assert (cpu.native_decode_problem(model) is None) == KERNELS
