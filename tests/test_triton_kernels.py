"""The Triton kernels of extensions/triton against their PyTorch references, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1): forward and backward, float32 and bfloat16, odd sizes, ignore_index rows,
partial rotary, and the switch that swaps them into a GPT.

TRITON_INTERPRET must be set before anything imports triton. When this module is imported after another
one already did (lightning imports triton), its tests run in a fresh subprocess instead
(`test_kernels_in_fresh_process`); setting the variable in tests/conftest.py avoids that detour.
"""

import os
import sys

if "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import triton.language as triton_language

IN_PROCESS = type(triton_language.sum).__name__ == "InterpretedFunction"

if IN_PROCESS:
    import extensions.triton as kt
    from extensions.triton import _runtime, bench, norm, patch
    from litgpt.config import Config
    from litgpt.model import GPT, CausalSelfAttention, GemmaMLP, LLaMAMLP, RMSNorm, apply_rope_partial, build_rope_cache

def interpreted(test):
    """The kernel tests run in this process under TRITON_INTERPRET=1 (tests/conftest.py sets it); if triton was
    imported before that, they are not collected here and test_kernels_in_fresh_process runs them instead."""
    return test if IN_PROCESS else None

BF16 = torch.bfloat16


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    """Compares in float32 with a tolerance fitting the dtype the kernel rounded to."""
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol * scale, rtol=tol)


# --------------------------------------------------------------------------------------------------
# cross-entropy
@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_cross_entropy_matches_pytorch(dtype):
    torch.manual_seed(0)
    N, V = 37, 257  # vocabulary not a power of two: 3 blocks of 128, the last one masked
    logits = (torch.randn(N, V) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (N,))
    targets[[0, 5, 36]] = -100
    loss = kt.cross_entropy(logits, targets, block_size=128)
    expected = F.cross_entropy(logits.float(), targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert grad.dtype == dtype
    close(grad, expected_grad, dtype, scale=0.05)
    assert grad[[0, 5, 36]].abs().max() == 0  # ignored rows get no gradient


@interpreted
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_cross_entropy_reductions_softcap_and_batched_shape(reduction):
    torch.manual_seed(1)
    B, T, V = 2, 5, 100
    logits = (torch.randn(B, T, V) * 20).requires_grad_()
    targets = torch.randint(0, V, (B, T))
    targets[1, 2] = 7  # any ignore_index value works, not only -100
    loss = kt.cross_entropy(logits, targets, ignore_index=7, reduction=reduction, softcap=10.0, block_size=32)
    capped = torch.tanh(logits / 10.0) * 10.0
    expected = F.cross_entropy(capped.transpose(1, 2), targets, ignore_index=7, reduction=reduction)
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-5)
    upstream = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(loss, logits, upstream)
    (expected_grad,) = torch.autograd.grad(expected, logits, upstream)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-4)


@interpreted
def test_cross_entropy_edge_cases():
    logits = torch.randn(3, 10, requires_grad=True)
    # every target ignored: mean is 0/0 = nan like PyTorch, the gradient is zero
    ignored = torch.full((3,), -100)
    loss = kt.cross_entropy(logits, ignored)
    assert torch.isnan(loss) and torch.isnan(F.cross_entropy(logits, ignored))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.count_nonzero(grad) == 0
    # a target outside [0, V) is a NaN loss, never an out-of-bounds read
    assert torch.isnan(kt.cross_entropy(logits, torch.tensor([1, 10, 2]), reduction="none")[1])


# --------------------------------------------------------------------------------------------------
# fused LM head + cross-entropy
@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_fused_linear_cross_entropy_matches_pytorch(dtype):
    torch.manual_seed(2)
    N, C, V = 37, 48, 257
    hidden = torch.randn(N, C).to(dtype).requires_grad_()
    weight = (torch.randn(V, C) * C**-0.5).to(dtype).requires_grad_()
    bias = (torch.randn(V) * 0.1).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (N,))
    targets[[3, 20]] = -100
    # chunks of 16 rows: 16 + 16 + 5
    loss = kt.fused_linear_cross_entropy(hidden, weight, bias, targets, chunk_size=16, block_size=128)
    expected = F.cross_entropy(F.linear(hidden.float(), weight.float(), bias.float()), targets)
    torch.testing.assert_close(loss, expected, atol=1e-5 if dtype == torch.float32 else 2e-3, rtol=1e-4)
    grads = torch.autograd.grad(loss * 2.5, (hidden, weight, bias))
    expected_grads = torch.autograd.grad(expected * 2.5, (hidden, weight, bias))
    for g, e, t in zip(grads, expected_grads, (hidden, weight, bias)):
        assert g.dtype == t.dtype and g.shape == t.shape
        close(g, e, dtype, scale=0.1)


@interpreted
def test_fused_linear_cross_entropy_sum_softcap_frozen_weight():
    torch.manual_seed(3)
    B, T, C, V = 2, 9, 24, 70
    hidden = torch.randn(B, T, C, requires_grad=True)
    weight = torch.randn(V, C) * 0.3  # frozen head (e.g. LoRA finetuning): only hidden gets a gradient
    targets = torch.randint(0, V, (B, T))
    targets[0, :4] = -100
    loss = kt.fused_linear_cross_entropy(hidden, weight, None, targets, reduction="sum", softcap=4.0, chunk_size=5)
    logits = torch.tanh(F.linear(hidden, weight) / 4.0) * 4.0
    expected = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="sum")
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-5)
    (grad,) = torch.autograd.grad(loss, hidden)
    (expected_grad,) = torch.autograd.grad(expected, hidden)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-4)
    # the training loop's signature: summed loss (no softcap), bias positional
    plain = F.cross_entropy(F.linear(hidden, weight).reshape(-1, V), targets.reshape(-1), reduction="sum")
    torch.testing.assert_close(kt.summed_fused_linear_cross_entropy(hidden, weight, None, targets), plain,
                               atol=1e-4, rtol=1e-5)


@interpreted
def test_fused_linear_cross_entropy_autocast_keeps_float32_weight_gradient():
    torch.manual_seed(4)
    N, C, V = 16, 32, 50
    hidden = torch.randn(N, C, requires_grad=True)
    weight = (torch.randn(V, C) * 0.2).requires_grad_()  # float32 master weights, bfloat16 autocast
    targets = torch.randint(0, V, (N,))
    with torch.autocast("cpu", dtype=BF16):
        loss = kt.fused_linear_cross_entropy(hidden, weight, None, targets, chunk_size=6)
    loss.backward()
    assert weight.grad.dtype == torch.float32 and hidden.grad.dtype == torch.float32
    h16, w16 = hidden.detach().to(BF16).float().requires_grad_(), weight.detach().to(BF16).float().requires_grad_()
    expected = F.cross_entropy(h16 @ w16.t(), targets)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(weight.grad, w16.grad, atol=2e-3, rtol=2e-2)
    torch.testing.assert_close(hidden.grad, h16.grad, atol=2e-3, rtol=2e-2)


# --------------------------------------------------------------------------------------------------
# RoPE
def _qkv_views(B, T, nh, ng, hs, dtype):
    """q, k as the attention makes them: strided (B, heads, T, hs) views of a fused qkv projection."""
    qkv = torch.randn(B, T, (nh + 2 * ng) * hs).to(dtype).requires_grad_()
    q, k, _ = qkv.split((nh * hs, ng * hs, ng * hs), dim=-1)
    return qkv, q.view(B, T, nh, hs).transpose(1, 2), k.view(B, T, ng, hs).transpose(1, 2)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize(
    ("head_size", "rotary_percentage"),
    [(20, 1.0), (18, 5 / 9), (12, 0.5)],  # full; partial with half=5 (odd, no power of two); partial 6 of 12
)
def test_rope_matches_pytorch(dtype, head_size, rotary_percentage):
    torch.manual_seed(5)
    B, T, nh, ng = 2, 37, 10, 2  # 10 query heads: two programs of 5 heads per block of positions
    config = Config(n_embd=nh * head_size, n_head=nh, head_size=head_size, rotary_percentage=rotary_percentage,
                    block_size=64)
    n = config.rope_n_elem
    cos, sin = build_rope_cache(T, n, base=config.rope_base)
    qkv, q, k = _qkv_views(B, T, nh, ng, head_size, dtype)
    out = (kt.apply_rope_partial(q, cos, sin, n), kt.apply_rope_partial(k, cos, sin, n))
    ref = (apply_rope_partial(q, cos, sin, n), apply_rope_partial(k, cos, sin, n))
    for o, r in zip(out, ref):
        assert o.shape == r.shape and o.dtype == r.dtype
        close(o, r, dtype)
    upstream = [torch.randn_like(r) for r in ref]
    (grad,) = torch.autograd.grad(out, qkv, upstream)
    (expected,) = torch.autograd.grad(ref, qkv, upstream)
    close(grad, expected, dtype)


@interpreted
def test_rope_per_sequence_positions_and_full_wrapper():
    torch.manual_seed(6)
    B, T, nh, hs = 2, 7, 2, 8
    x = torch.randn(B, nh, T, hs, requires_grad=True)
    cos, sin = torch.randn(B, 1, T, hs), torch.randn(B, 1, T, hs)  # (B, 1, T, n): batched generation
    out = kt.apply_rope(x, cos, sin)
    ref = apply_rope_partial(x, cos, sin, hs)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, upstream)[0], torch.autograd.grad(ref, x, upstream)[0])


@interpreted
def test_rope_rejects_invalid_input():
    x, cos = torch.randn(1, 2, 5, 8), torch.randn(5, 8)
    with pytest.raises(ValueError, match="n_elem must be an even number"):
        kt.apply_rope_partial(x, cos[:, :7], cos[:, :7], 7)
    with pytest.raises(ValueError, match="n_elem must be an even number"):
        kt.apply_rope_partial(x, cos, cos, 10)
    with pytest.raises(ValueError, match=r"x must have shape \(B, n_heads, T, head_size\)"):
        kt.apply_rope_partial(x[0], cos, cos, 8)
    with pytest.raises(ValueError, match="x must be float32, bfloat16 or float16"):
        kt.apply_rope_partial(x.long(), cos, cos, 8)
    with pytest.raises(ValueError, match=r"cos must have shape .*T=5.*got \(4, 8\)"):
        kt.apply_rope_partial(x, cos[:4], cos, 8)


# --------------------------------------------------------------------------------------------------
# SwiGLU / GeGLU
@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("kind", ["swiglu", "geglu", "geglu_tanh"])
def test_glu_matches_pytorch(dtype, kind):
    torch.manual_seed(7)
    a = (torch.randn(37, 50) * 3).to(dtype).requires_grad_()  # 1850 elements: the last block is masked
    b = torch.randn(37, 50).to(dtype).requires_grad_()
    if kind == "swiglu":
        out, ref = kt.swiglu(a, b), F.silu(a.float()) * b.float()
    else:
        approximate = "tanh" if kind == "geglu_tanh" else "none"
        out, ref = kt.geglu(a, b, approximate), F.gelu(a.float(), approximate=approximate) * b.float()
    assert out.dtype == dtype
    close(out, ref, dtype, scale=2)
    upstream = torch.randn(37, 50)
    grads = torch.autograd.grad(out, (a, b), upstream.to(dtype))
    expected = torch.autograd.grad(ref, (a, b), upstream)
    for g, e in zip(grads, expected):
        close(g, e, dtype, scale=4)


# --------------------------------------------------------------------------------------------------
# RMSNorm
@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("blocked", [False, True], ids=["one-block", "multi-block"])
def test_rms_norm_matches_litgpt(dtype, blocked, monkeypatch):
    if blocked:  # rows wider than a block: 48 features in 3 blocks of 16 (the path of very wide models)
        monkeypatch.setattr(norm, "MAX_BLOCK", 16)
    torch.manual_seed(8)
    unit_offset = dtype == BF16  # Gemma's (1 + w) on one of the runs
    module = RMSNorm(48, eps=1e-5, add_unit_offset=unit_offset)
    with torch.no_grad():
        module.weight.copy_(torch.randn(48))
    x = torch.randn(3, 13, 48).to(dtype).requires_grad_()  # 39 rows
    out = kt.rms_norm(x, module.weight, module.eps, unit_offset)
    ref = module(x)
    assert out.shape == ref.shape and out.dtype == dtype
    close(out, ref, dtype, scale=4)
    upstream = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, module.weight), upstream)
    expected = torch.autograd.grad(ref, (x, module.weight), upstream)
    for g, e in zip(grads, expected):
        close(g, e, dtype, scale=8)


# --------------------------------------------------------------------------------------------------
# the switch
def _tiny_config(kind: str) -> "Config":
    common = dict(block_size=32, n_layer=2, n_embd=48, n_head=4, n_query_groups=2, vocab_size=257,
                  padded_vocab_size=257, norm_class_name="RMSNorm", bias=False, parallel_residual=False,
                  intermediate_size=80)
    if kind == "llama":
        return Config(name="tiny-llama", mlp_class_name="LLaMAMLP", rotary_percentage=1.0, **common)
    # Gemma-2-like: GeGLU (tanh), (1 + w) norms, post norms, final-logit softcapping, partial rotary
    return Config(name="tiny-gemma", mlp_class_name="GemmaMLP", gelu_approximate="tanh", rotary_percentage=0.5,
                  rmsnorm_add_unit_offset=True, post_attention_norm=True, post_mlp_norm=True,
                  final_logit_softcapping=30.0, scale_embeddings=True, **common)


@interpreted
@pytest.mark.parametrize("kind", ["llama", "gemma"])
def test_enable_swaps_kernels_into_gpt(kind, monkeypatch):
    torch.manual_seed(9)
    model = GPT(_tiny_config(kind))
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    idx = torch.randint(0, 257, (1, 12))
    targets = torch.randint(0, 257, (1, 12))

    same, loss_fn = kt.enable(model)
    assert same is model and loss_fn is kt.summed_fused_linear_cross_entropy
    assert list(model.state_dict()) == keys  # checkpoints load and save unchanged
    counts = kt.count_swapped(model)
    n_norms = 2 * (4 if kind == "gemma" else 2) + 1
    assert counts["rms_norm"] == n_norms and counts["glu"] == 2
    assert counts["rope"] == 2
    assert isinstance(model.transformer.ln_f, RMSNorm)  # isinstance checks elsewhere keep working
    assert isinstance(model.transformer.h[0].mlp, GemmaMLP if kind == "gemma" else LLaMAMLP)

    logits, expected_logits = model(idx), reference(idx)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    loss = kt.lm_head_loss(model, idx, targets)
    expected = F.cross_entropy(expected_logits[0], targets[0])
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    loss.backward()
    expected.backward()
    ref_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)

    kt.disable(model)
    assert type(model.transformer.ln_f) is RMSNorm and type(model.transformer.h[1].attn) is CausalSelfAttention
    assert sum(kt.count_swapped(model).values()) == 0


# --------------------------------------------------------------------------------------------------
# clear errors
@interpreted
def test_invalid_arguments_raise_value_errors():
    logits, targets = torch.randn(4, 10), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match=r"targets must have shape \(4,\)"):
        kt.cross_entropy(logits, targets[:3])
    with pytest.raises(ValueError, match="targets must hold integer class indices"):
        kt.cross_entropy(logits, targets.float())
    with pytest.raises(ValueError, match="logits must be float32, bfloat16 or float16"):
        kt.cross_entropy(logits.long(), targets)
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        kt.cross_entropy(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="block_size must be a power of two"):
        kt.cross_entropy(logits, targets, block_size=100)
    with pytest.raises(ValueError, match=r"hidden must have shape \(\.\.\., C\) with C=8"):
        kt.fused_linear_cross_entropy(torch.randn(4, 6), torch.randn(10, 8), None, targets)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum' for the fused loss"):
        kt.fused_linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), None, targets, reduction="none")
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\)"):
        kt.fused_linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.randn(9), targets)
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        kt.swiglu(torch.randn(2, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        kt.geglu(torch.randn(2, 3), torch.randn(2, 3), approximate="erf")
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        kt.rms_norm(torch.randn(2, 8), torch.ones(7))


@interpreted
def test_missing_gpu_and_missing_triton_errors(monkeypatch):
    monkeypatch.setattr(_runtime, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="need a CUDA GPU.*TRITON_INTERPRET=1"):
        kt.enable(GPT(_tiny_config("llama")))
    with pytest.raises(RuntimeError, match="need CUDA tensors, but logits is on cpu"):
        kt.cross_entropy(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET was changed after `triton` had been imported"):
        _runtime._check_interpreter_consistency()

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real_find_spec(name, *a))
    monkeypatch.delitem(sys.modules, "extensions.triton")
    with pytest.raises(ImportError, match=r"pip install 'litgpt\[triton\]'"):
        importlib.import_module("extensions.triton")


# --------------------------------------------------------------------------------------------------
@interpreted
def test_bench_tiny_smoke_run(capsys):
    results = bench.main(["--tiny", "--warmup", "0", "--iters", "1"])
    table = capsys.readouterr().out
    for op in bench.OPS:
        assert op in table
        assert {r.impl for r in results if r.op == op} == {"eager", "compile", "triton"}
    assert all(r.ms is not None for r in results if r.impl != "compile")  # compile is skipped on the CPU


def _kernels_in_fresh_process():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ passed in", summary), summary


if not IN_PROCESS:
    test_kernels_in_fresh_process = _kernels_in_fresh_process


# --------------------------------------------------------------------------------------------------
@interpreted
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_training_with_kernels_triton_follows_the_pytorch_run(tmp_path):
    from litgpt.data import JSON
    from litgpt.finetune.full import finetune_full
    from tests._train_helpers import fast_train, make_checkpoint, make_sft_rows, tiny_config, train_losses, write_json

    llama = tiny_config(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=64, bias=False,
                        parallel_residual=False)  # every kernel applies: RMSNorm, SwiGLU, RoPE, the loss
    ckpt = make_checkpoint(tmp_path / "ckpt", config=llama)
    rows = write_json(tmp_path / "rows.json", make_sft_rows(16))
    losses = {}
    for kernels in (None, "triton"):
        out = tmp_path / f"out-{kernels}"
        finetune_full(ckpt, data=JSON(rows, num_workers=0), out_dir=out, accelerator="cpu", precision="32-true",
                      train=fast_train(max_steps=3, kernels=kernels))
        losses[kernels] = train_losses(out)
    assert len(losses[None]) == 3
    for step, loss in losses[None].items():
        assert losses["triton"][step] == pytest.approx(loss, rel=1e-4)


@interpreted
def test_kernels_triton_without_a_gpu_fails_before_training(tmp_path, monkeypatch):
    from litgpt.data import JSON
    from litgpt.finetune.full import finetune_full
    from tests._train_helpers import fast_train, make_checkpoint, make_sft_rows, write_json

    monkeypatch.setattr(_runtime, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt = make_checkpoint(tmp_path / "ckpt")
    data = JSON(write_json(tmp_path / "rows.json", make_sft_rows(8)), num_workers=0)
    with pytest.raises(ValueError, match="--train.kernels triton: The Triton kernels need a CUDA GPU"):
        finetune_full(ckpt, data=data, out_dir=tmp_path / "out", accelerator="cpu",
                      train=fast_train(kernels="triton"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="train.kernels must be 'triton' or unset, got 'cuda'"):
        fast_train(kernels="cuda").validate()
