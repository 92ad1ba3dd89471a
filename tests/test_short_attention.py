"""The CPU training attention for short sequences (`litgpt.model.short_causal_attention`): as accurate as torch's
flash kernel against a float64 reference, compiled and eager paths equal, chosen only where it applies, and a
whole training step of the model the same as with F.scaled_dot_product_attention."""

import pytest
import torch
import torch.nn.functional as F

import litgpt.model as model_module
from litgpt import GPT, Config
from litgpt.model import _short_backward_kernel, _short_forward_kernel, short_attention_applies, short_causal_attention


def _inputs(B, nh, ng, T, hs, hv=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, nh, T, hs, generator=g) * 2).bfloat16()
    k = (torch.randn(B, ng, T, hs, generator=g) * 2).bfloat16()
    v = torch.randn(B, ng, T, hv or hs, generator=g).bfloat16()
    grad = torch.randn(B, nh, T, hv or hs, generator=g).bfloat16()
    return q, k, v, grad


def _run(fn, q, k, v, grad, dtype):
    leaves = [t.to(dtype).clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(grad.to(dtype))
    return [out.double()] + [t.grad.double() for t in leaves]


def _sdpa(scale):
    def fn(q, k, v):
        if q.size(-1) != v.size(-1) or q.size(1) != k.size(1):  # reference: expanded heads
            r = q.size(1) // k.size(1)
            k, v = k.repeat_interleave(r, 1), v.repeat_interleave(r, 1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return fn


@pytest.mark.parametrize(
    "B, nh, ng, T, hs, hv",
    [(2, 6, 2, 37, 16, None), (1, 4, 4, 50, 32, None), (2, 4, 1, 23, 16, None), (1, 4, 2, 19, 24, 16)],
    ids=["gqa", "mha", "mqa", "v-head-size"],
)
def test_as_accurate_as_the_flash_kernel(B, nh, ng, T, hs, hv):
    q, k, v, grad = _inputs(B, nh, ng, T, hs, hv)
    scale = hs**-0.5
    reference = _run(_sdpa(scale), q, k, v, grad, torch.float64)
    ours = _run(lambda *t: short_causal_attention(*t, scale), q, k, v, grad, torch.bfloat16)
    flash = _run(_sdpa(scale), q, k, v, grad, torch.bfloat16)
    for name, got, ref, theirs in zip(("out", "dq", "dk", "dv"), ours, reference, flash):
        # the output as accurate as the flash kernel's (float32 scores and softmax); the gradients within bfloat16
        # training accuracy (the flash backward keeps the score gradients in float32, ours rounds them to
        # bfloat16 for the products: ~0.5-1% mean relative error where flash has 0.1-0.5%)
        err, flash_err, size = ((got - ref).abs().mean().item(), (theirs - ref).abs().mean().item(),
                                ref.abs().mean().item())
        bound = 1.5 * flash_err if name == "out" else 0.012 * size
        assert err <= bound, (name, err, flash_err, size)
        assert (got - ref).abs().max().item() <= 0.02 * ref.abs().max().item() + 0.03, name
    # in float64 the same arithmetic is exact
    exact = _run(lambda *t: short_causal_attention(*t, scale), q, k, v, grad, torch.float64)
    for got, ref in zip(exact, reference):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_compiled_and_eager_paths_agree(monkeypatch):
    q, k, v, grad = _inputs(2, 6, 2, 41, 16)
    compiled = _run(lambda *t: short_causal_attention(*t, 0.25), q, k, v, grad, torch.bfloat16)
    assert _short_forward_kernel.compiled is not None and not _short_forward_kernel.failed
    assert _short_backward_kernel.compiled is not None and not _short_backward_kernel.failed
    monkeypatch.setenv("LITGPT_COMPILE_ATTENTION", "0")
    assert not _short_forward_kernel.enabled
    eager = _run(lambda *t: short_causal_attention(*t, 0.25), q, k, v, grad, torch.bfloat16)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_applies_only_to_short_cpu_bfloat16_training_calls(monkeypatch):
    q = torch.randn(1, 4, 8, 16, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 2, 8, 16, dtype=torch.bfloat16, requires_grad=True)
    assert short_attention_applies(q, k)
    with torch.no_grad():
        assert not short_attention_applies(q, k)  # validation, generation: the flash kernel
    assert not short_attention_applies(q.detach().float().requires_grad_(), k.detach().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 activations under bf16 autocast
        assert short_attention_applies(q.detach().float().requires_grad_(), k.detach().float())
    assert not short_attention_applies(q, k[:, :, :5])  # keys of another length (a KV cache)
    frozen_q, frozen_k = q.detach(), k.detach()  # e.g. LoRA on the values only, in the first layer
    assert not short_attention_applies(frozen_q, frozen_k, frozen_k)
    assert short_attention_applies(frozen_q, frozen_k, k)
    monkeypatch.setattr(model_module, "SHORT_ATTENTION_MAX_SCORES", 1 * 4 * 8 * 8 - 1)
    assert not short_attention_applies(q, k)


def test_a_training_step_matches_the_flash_kernel(monkeypatch):
    config = Config(block_size=64, vocab_size=96, padded_vocab_size=96, n_layer=2, n_head=4, n_query_groups=2,
                    n_embd=32, rotary_percentage=1.0, parallel_residual=False, bias=False,
                    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=64)
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(0, 96, (2, 48))

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(idx)
        loss = F.cross_entropy(logits.float().flatten(0, 1), idx.roll(-1, 1).flatten())
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    calls = []
    original = model_module.short_causal_attention
    monkeypatch.setattr(model_module, "short_causal_attention", lambda *a: calls.append(1) or original(*a))
    loss, grads = step()
    assert len(calls) == config.n_layer
    monkeypatch.setattr(model_module, "SHORT_ATTENTION_MAX_SCORES", 0)  # the flash kernel
    flash_loss, flash_grads = step()
    assert len(calls) == config.n_layer
    torch.testing.assert_close(loss, flash_loss, rtol=1e-3, atol=1e-3)
    for a, b in zip(grads, flash_grads):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item() + 1e-4)
