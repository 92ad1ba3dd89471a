"""The CPU decode path: single-token linears through torch.mv, same parameters and results."""

import pytest
import torch
import torch.nn as nn

from litgpt import GPT, LLM
from litgpt.generate.base import generate
from litgpt.generate.cpu import MatVecLinear, restore_linears, use_matvec_linears
from tests._gen_helpers import make_checkpoint, tiny_config


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
