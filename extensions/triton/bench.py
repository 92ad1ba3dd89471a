"""Benchmark of the Triton kernels against eager PyTorch and `torch.compile`: time and peak memory of a
forward + backward pass, at Llama-3-8B shapes (hidden 4096, vocabulary 128,256, 16,384 tokens), plus one
training step of a 1B-class model with and without the kernels.

    python -m extensions.triton.bench                       # on a CUDA GPU; --markdown for the README table
    python -m extensions.triton.bench --tiny                # CPU smoke run through TRITON_INTERPRET=1

Time: mean over `--iters` runs after `--warmup` runs (CUDA events). Peak memory: the most memory allocated
during one run beyond what was allocated before it (the inputs), i.e. what the operation and its
gradients need (`torch.cuda.max_memory_allocated`). On the CPU only times are reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

OPS = ("cross_entropy", "linear_cross_entropy", "rope", "swiglu", "geglu", "rms_norm", "pretrain_step")


@dataclass(frozen=True)
class Shapes:
    batch: int
    seq: int
    hidden: int
    vocab: int
    n_head: int
    n_query_groups: int
    head_size: int
    intermediate: int
    rope_base: int

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


LLAMA3_8B = Shapes(batch=4, seq=4096, hidden=4096, vocab=128256, n_head=32, n_query_groups=8, head_size=128,
                   intermediate=14336, rope_base=500000)
TINY = Shapes(batch=1, seq=37, hidden=48, vocab=257, n_head=4, n_query_groups=2, head_size=12, intermediate=80,
              rope_base=10000)


def step_config(tiny: bool):
    """A Llama-3.2-1B-shaped Config (published shapes) for the training-step benchmark, or a tiny one."""
    from litgpt.config import Config

    common = dict(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", parallel_residual=False, bias=False,
                  rotary_percentage=1.0, tie_embeddings=True)
    if tiny:
        return Config(name="tiny-llama", block_size=64, n_layer=2, n_embd=48, n_head=4, n_query_groups=2,
                      vocab_size=257, padded_vocab_size=257, intermediate_size=80, norm_eps=1e-5, **common)
    return Config(name="llama-3.2-1b-shaped", block_size=2048, n_layer=16, n_embd=2048, n_head=32, n_query_groups=8,
                  vocab_size=128256, padded_vocab_size=128256, intermediate_size=8192, norm_eps=1e-5,
                  rope_base=500000, **common)


# --------------------------------------------------------------------------------------------------
@dataclass
class Result:
    op: str
    impl: str
    ms: Optional[float]
    peak_mib: Optional[float]
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run: Callable[[], None], reset: Callable[[], None], device: torch.device, warmup: int, iters: int):
    """Times `run` (forward + backward of one implementation).

    Args:
        run: one forward + backward pass.
        reset: called before each run (drops the gradients of the previous one).
        device: where the tensors live.
        warmup: untimed runs first.
        iters: timed runs.

    Returns:
        (mean milliseconds per run, peak MiB allocated beyond what was allocated before a run; None on the CPU).
    """
    for _ in range(warmup):
        reset()
        run()
    reset()
    _sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        _sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    total = 0.0
    for _ in range(iters):
        reset()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            total += start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            run()
            total += (time.perf_counter() - t0) * 1000
    reset()
    return total / max(iters, 1), peak


def _clear(*tensors: torch.Tensor) -> Callable[[], None]:
    def reset() -> None:
        for t in tensors:
            t.grad = None
    return reset


def _compiled(fn: Callable, enabled: bool) -> Optional[Callable]:
    return torch.compile(fn) if enabled else None


# --------------------------------------------------------------------------------------------------
# the cases: each yields (impl name, run, reset)
def case_cross_entropy(s: Shapes, device, dtype, kt, compile_ok):
    logits = torch.randn(s.tokens, s.vocab, device=device, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, s.vocab, (s.tokens,), device=device)
    targets[::7] = -100  # some ignored positions (padding / prompt tokens)

    def eager(lg, y):
        return F.cross_entropy(lg.float(), y, ignore_index=-100)

    impls = {"eager": eager, "compile": _compiled(eager, compile_ok),
             "triton": lambda lg, y: kt.cross_entropy(lg, y, ignore_index=-100)}
    for name, fn in impls.items():
        yield name, (None if fn is None else (lambda fn=fn: fn(logits, targets).backward())), _clear(logits)


def case_linear_cross_entropy(s: Shapes, device, dtype, kt, compile_ok):
    hidden = torch.randn(s.tokens, s.hidden, device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(s.vocab, s.hidden, device=device, dtype=dtype) * s.hidden**-0.5).requires_grad_()
    targets = torch.randint(0, s.vocab, (s.tokens,), device=device)
    targets[::7] = -100

    def eager(h, w, y):
        return F.cross_entropy(F.linear(h, w).float(), y, ignore_index=-100)

    impls = {"eager": eager, "compile": _compiled(eager, compile_ok),
             "triton": lambda h, w, y: kt.fused_linear_cross_entropy(h, w, None, y, ignore_index=-100)}
    for name, fn in impls.items():
        run = None if fn is None else (lambda fn=fn: fn(hidden, weight, targets).backward())
        yield name, run, _clear(hidden, weight)


def case_rope(s: Shapes, device, dtype, kt, compile_ok):
    from litgpt.config import Config
    from litgpt.model import apply_rope_partial, build_rope_cache

    nh, ng, hs = s.n_head, s.n_query_groups, s.head_size
    qkv = torch.randn(s.batch, s.seq, (nh + 2 * ng) * hs, device=device, dtype=dtype, requires_grad=True)
    cfg = Config(n_embd=nh * hs, n_head=nh, head_size=hs, rotary_percentage=1.0, rope_base=s.rope_base,
                 block_size=s.seq)
    cos, sin = build_rope_cache(s.seq, cfg.rope_n_elem, device, base=cfg.rope_base)  # (T, hs) float32
    dq = torch.randn(s.batch, nh, s.seq, hs, device=device, dtype=dtype)
    dk = torch.randn(s.batch, ng, s.seq, hs, device=device, dtype=dtype)

    def split(x):  # the attention's views: (B, nh, T, hs) and (B, ng, T, hs), strided
        q, k, _ = x.split((nh * hs, ng * hs, ng * hs), dim=-1)
        return q.view(s.batch, s.seq, nh, hs).transpose(1, 2), k.view(s.batch, s.seq, ng, hs).transpose(1, 2)

    def eager(x):
        q, k = split(x)
        return apply_rope_partial(q, cos, sin, hs), apply_rope_partial(k, cos, sin, hs)

    def triton_rope(x):
        q, k = split(x)
        return kt.apply_rope_partial(q, cos, sin, hs), kt.apply_rope_partial(k, cos, sin, hs)

    for name, fn in {"eager": eager, "compile": _compiled(eager, compile_ok), "triton": triton_rope}.items():
        run = None if fn is None else (lambda fn=fn: torch.autograd.backward(fn(qkv), (dq, dk)))
        yield name, run, _clear(qkv)


def _case_glu(s: Shapes, device, dtype, eager, triton_fn, compile_ok):
    a = torch.randn(s.tokens, s.intermediate, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(s.tokens, s.intermediate, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(s.tokens, s.intermediate, device=device, dtype=dtype)
    for name, fn in {"eager": eager, "compile": _compiled(eager, compile_ok), "triton": triton_fn}.items():
        run = None if fn is None else (lambda fn=fn: fn(a, b).backward(dy))
        yield name, run, _clear(a, b)


def case_swiglu(s, device, dtype, kt, compile_ok):
    yield from _case_glu(s, device, dtype, lambda a, b: F.silu(a) * b, kt.swiglu, compile_ok)


def case_geglu(s, device, dtype, kt, compile_ok):
    yield from _case_glu(s, device, dtype, lambda a, b: F.gelu(a, approximate="tanh") * b,
                         lambda a, b: kt.geglu(a, b, approximate="tanh"), compile_ok)


def case_rms_norm(s: Shapes, device, dtype, kt, compile_ok):
    from litgpt.model import RMSNorm

    norm = RMSNorm(s.hidden, eps=1e-5).to(device=device, dtype=dtype)
    x = torch.randn(s.tokens, s.hidden, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)

    def eager(t):
        return norm(t)

    impls = {"eager": eager, "compile": _compiled(eager, compile_ok),
             "triton": lambda t: kt.rms_norm(t, norm.weight, norm.eps)}
    for name, fn in impls.items():
        run = None if fn is None else (lambda fn=fn: fn(x).backward(dy))
        yield name, run, _clear(x, norm.weight)


def case_pretrain_step(s: Shapes, device, dtype, kt, compile_ok, tiny: bool = False, step_batch: int = 4):
    """forward + loss + backward + AdamW step of a Llama-3.2-1B-shaped model (bf16 weights)."""
    from litgpt.model import GPT

    config = step_config(tiny)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(config)
    model = model.to(dtype)
    T = config.block_size if not tiny else 32
    B = 1 if tiny else step_batch
    idx = torch.randint(0, config.vocab_size, (B, T + 1), device=device)
    inputs, targets = idx[:, :-1], idx[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))

    def reset():
        optimizer.zero_grad(set_to_none=True)

    def eager_step(m):
        logits = m(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    yield "eager", (lambda: eager_step(model)), reset
    compiled = torch.compile(model) if compile_ok else None
    yield "compile", (None if compiled is None else (lambda: eager_step(compiled))), reset
    kt.enable(model)

    def triton_step():
        loss = kt.lm_head_loss(model, inputs, targets)
        loss.backward()
        optimizer.step()

    yield "triton", triton_step, reset
    kt.disable(model)


CASES = {
    "cross_entropy": case_cross_entropy,
    "linear_cross_entropy": case_linear_cross_entropy,
    "rope": case_rope,
    "swiglu": case_swiglu,
    "geglu": case_geglu,
    "rms_norm": case_rms_norm,
    "pretrain_step": case_pretrain_step,
}


# --------------------------------------------------------------------------------------------------
def _fmt(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(results: list[Result], markdown: bool) -> str:
    """A table of the results with speed-up and memory ratio against eager per operation.

    Args:
        results: what `main` measured.
        markdown: a Markdown table instead of aligned text.

    Returns:
        The table as one string.
    """
    eager = {r.op: r for r in results if r.impl == "eager"}
    lines = []
    if markdown:
        lines.append("| operation | implementation | time (ms) | peak memory (MiB) | speed-up vs eager "
                     "| memory vs eager |")
        lines.append("|---|---|---:|---:|---:|---:|")
    else:
        lines.append(f"{'operation':<22}{'impl':<9}{'time ms':>11}{'peak MiB':>12}{'speed-up':>10}{'mem ratio':>11}")
    for r in results:
        base = eager.get(r.op)
        speed = base.ms / r.ms if base and base.ms and r.ms else None
        mem = base.peak_mib / r.peak_mib if base and base.peak_mib and r.peak_mib else None
        cells = [r.op, r.impl, _fmt(r.ms), _fmt(r.peak_mib, 0),
                 "-" if speed is None else f"{speed:.2f}x", "-" if mem is None else f"{mem:.2f}x"]
        if r.note:
            cells[2] = r.note
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(f"{cells[0]:<22}{cells[1]:<9}{cells[2]:>11}{cells[3]:>12}{cells[4]:>10}{cells[5]:>11}")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke run under TRITON_INTERPRET=1)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of: {', '.join(OPS)}")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (compilation, autotuning)")
    parser.add_argument("--iters", type=int, default=10, help="timed runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--step-batch", type=int, default=4, help="sequences of 2048 tokens per training step")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for extensions/README.md)")
    args = parser.parse_args(argv)
    unknown = [op for op in args.ops.split(",") if op not in OPS]
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(OPS)}")
    if args.warmup < 0 or args.iters < 1:
        parser.error("--warmup must be >= 0 and --iters >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> list[Result]:
    """Runs the benchmark and prints the table.

    Args:
        argv: command-line arguments (see `--help`); None reads sys.argv.

    Returns:
        One `Result` per operation and implementation.
    """
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.tiny:
            raise SystemExit("The benchmark needs a CUDA GPU (torch.cuda.is_available() is False). "
                             "Use --tiny for a CPU smoke run through Triton's interpreter.")
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined, i.e. on import
    import extensions.triton as kt

    if not cuda and not kt.INTERPRETED:
        raise SystemExit("extensions.triton was imported without TRITON_INTERPRET=1; on the CPU set it first.")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    shapes = TINY if args.tiny else LLAMA3_8B
    compile_ok = cuda and not args.no_compile  # inductor on the CPU needs a C++ toolchain: skipped there
    name = torch.cuda.get_device_name(device) if cuda else "CPU (Triton interpreter)"
    import triton

    print(f"device: {name} | torch {torch.__version__} | triton {triton.__version__} | dtype {args.dtype} | "
          f"shapes: {shapes}")
    if not cuda:
        print("note: a CPU smoke run through Triton's interpreter; its times say nothing about GPU speed")
    results: list[Result] = []
    for op in args.ops.split(","):
        extra = {"tiny": args.tiny, "step_batch": args.step_batch} if op == "pretrain_step" else {}
        for impl, run, reset in CASES[op](shapes, device, dtype, kt, compile_ok, **extra):
            if run is None:
                results.append(Result(op, impl, None, None, "skipped"))
                continue
            try:
                ms, peak = measure(run, reset, device, args.warmup, args.iters)
                results.append(Result(op, impl, ms, peak))
            except torch.cuda.OutOfMemoryError:
                results.append(Result(op, impl, None, None, "OOM"))
                reset()
                torch.cuda.empty_cache()
            print(f"  {op} / {impl}: done", file=sys.stderr, flush=True)
        if cuda:
            torch.cuda.empty_cache()
    print(report(results, args.markdown))
    return results


if __name__ == "__main__":
    main()
