"""The Triton kernels compiled for a CUDA GPU against eager PyTorch, forward and backward, in bfloat16 and
float32 (tests/test_triton_kernels.py checks the same functions through Triton's CPU interpreter).

Marked `cuda`: skipped without a GPU. Run with TRITON_INTERPRET=0 (`make gpu-check` does), otherwise
tests/conftest.py switches Triton to its interpreter and these tests say so.
"""

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def kt():
    import extensions.triton as kernels

    if kernels.INTERPRETED:
        pytest.fail("TRITON_INTERPRET=1 is set: run these tests with TRITON_INTERPRET=0 to test the compiled kernels")
    return kernels


def close(actual, expected, dtype, fp32_tol=1e-4):
    tol = fp32_tol if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol, rtol=tol)


def grads(out_fn, inputs, upstream=None):
    """Forward value and input gradients of `out_fn(*inputs)` (fresh leaf copies of the inputs)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = out_fn(*leaves)
    out.backward(upstream if upstream is not None else torch.ones_like(out))
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(kt, dtype):
    torch.manual_seed(0)
    logits = (torch.randn(301, 5003, device="cuda") * 3).to(dtype)  # neither size a power of two
    targets = torch.randint(0, 5003, (301,), device="cuda")
    targets[::9] = -100
    got, (g_grad,) = grads(lambda x: kt.cross_entropy(x, targets), [logits])
    want, (w_grad,) = grads(lambda x: F.cross_entropy(x.float(), targets), [logits])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert g_grad.dtype == dtype
    close(g_grad, w_grad, dtype, fp32_tol=1e-5)
    assert g_grad[::9].abs().max() == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_linear_cross_entropy(kt, dtype):
    torch.manual_seed(1)
    hidden = torch.randn(513, 256, device="cuda").to(dtype)
    weight = (torch.randn(7001, 256, device="cuda") * 256**-0.5).to(dtype)
    targets = torch.randint(0, 7001, (513,), device="cuda")
    targets[::5] = -100
    got, g = grads(lambda h, w: kt.fused_linear_cross_entropy(h, w, None, targets), [hidden, weight])
    want, w = grads(lambda h, w_: F.cross_entropy(F.linear(h, w_).float(), targets), [hidden, weight])
    close(got, want, dtype, fp32_tol=2e-3)  # the kernel's matrix products may use TF32
    for a, b in zip(g, w):
        close(a, b, dtype, fp32_tol=2e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_elem", [64, 32])  # full and partial rotation
def test_rope(kt, dtype, n_elem):
    from litgpt.model import apply_rope_partial, build_rope_cache

    torch.manual_seed(2)
    x = torch.randn(2, 8, 77, 64, device="cuda").to(dtype)
    cos, sin = build_rope_cache(77, n_elem, torch.device("cuda"))
    upstream = torch.randn_like(x)
    got, (g,) = grads(lambda t: kt.apply_rope_partial(t, cos, sin, n_elem), [x], upstream)
    want, (w,) = grads(lambda t: apply_rope_partial(t, cos, sin, n_elem), [x], upstream)
    close(got, want, dtype)
    close(g, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["swiglu", "geglu"])
def test_glu(kt, dtype, kind):
    torch.manual_seed(3)
    a, b = (torch.randn(129, 1000, device="cuda").to(dtype) for _ in range(2))
    upstream = torch.randn_like(a)
    if kind == "swiglu":
        fn, ref = kt.swiglu, (lambda x, y: F.silu(x.float()) * y.float())
    else:
        fn, ref = (lambda x, y: kt.geglu(x, y, approximate="tanh")), (lambda x, y: F.gelu(x.float(), approximate="tanh") * y.float())
    got, g = grads(fn, [a, b], upstream)
    want, w = grads(ref, [a, b], upstream.float())
    close(got, want, dtype)
    for x, y in zip(g, w):
        close(x, y, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(kt, dtype):
    from litgpt.model import RMSNorm

    torch.manual_seed(4)
    norm = RMSNorm(2048, eps=1e-5).cuda()
    torch.nn.init.normal_(norm.weight, 1.0, 0.1)
    x = torch.randn(3, 33, 2048, device="cuda").to(dtype)
    upstream = torch.randn_like(x)
    weight = norm.weight.detach().to(dtype)
    got, g = grads(lambda t, w: kt.rms_norm(t, w, 1e-5), [x, weight], upstream)
    want, w = grads(lambda t, w_: torch.nn.functional.rms_norm(t.float(), (2048,), w_.float(), 1e-5), [x, weight],
                    upstream)
    close(got, want, dtype)
    close(g[0], w[0], dtype)
    close(g[1], w[1], dtype, fp32_tol=1e-3)  # a sum over 99 rows


@pytest.mark.parametrize("dtype", DTYPES)
def test_enabled_model_matches_eager_loss_and_gradients(kt, dtype):
    from litgpt import GPT
    from tests._gen_helpers import tiny_config

    torch.manual_seed(5)
    config = tiny_config(vocab_size=1000, n_embd=128, intermediate_size=256, n_layer=2)
    model = GPT(config).cuda().to(dtype)
    idx = torch.randint(0, 1000, (2, 65), device="cuda")
    logits = model(idx[:, :-1])
    eager = F.cross_entropy(logits.float().reshape(-1, 1000), idx[:, 1:].reshape(-1))
    eager.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    kt.enable(model)
    assert sum(kt.count_swapped(model).values()) > 0
    loss = kt.lm_head_loss(model, idx[:, :-1], idx[:, 1:])
    loss.backward()
    close(loss, eager, dtype, fp32_tol=1e-3)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad.float(), expected[name].float(), atol=5e-2 if dtype != torch.float32 else 2e-3,
                                   rtol=5e-2 if dtype != torch.float32 else 2e-3, msg=name)
