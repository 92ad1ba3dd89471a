"""The sections of the GPU acceptance check (`tests/gpu/check.py`), each a function `ctx -> rows`.

Run one section in its own process (the driver does this on a GPU, with a timeout per section):

    python -m tests.gpu.sections decode --work /dev/shm/litgpt-gpu --out out/gpu-check [--dry-run]

Every section goes through the project's public entry points: `LLM.load(...).distribute(...).benchmark(...)`,
`litgpt.__main__.main(["pretrain" | "finetune_lora", ...])` (the CLI, in this process so that its peak GPU
memory can be read afterwards) and `litgpt serve` in a child process. Weights are random; nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.gpu.report import fmt, problem, row, write_rows  # noqa: E402

GiB = 2**30


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: the real sizes on a GPU, toy ones for the CPU dry run."""

    model: dict[str, Any]  # overrides of the Llama-3.2-1B registry config
    matmul: int  # square matrix product for the peak FLOP/s
    copy_mib: int  # buffer copied for the bandwidth
    timing_warmup: int
    timing_iters: int
    decode_new_tokens: int
    decode_batch: int
    prompt_tokens: int  # the long prompt of the time-to-first-token row
    kv_cache: int
    train_seq: int
    train_micro_batch: int
    pretrain_steps: int
    pretrain_skip: int  # first logged steps left out of the MFU (allocator warm-up, kernel compilation)
    finetune_steps: int
    finetune_seq: int
    serve_clients: int
    serve_new_tokens: int
    corpus_repeats: int
    kernel_shapes: str = "LLAMA3_8B"


GPU_SIZES = Sizes(
    model=dict(block_size=4096), matmul=8192, copy_mib=2048, timing_warmup=3, timing_iters=20,
    decode_new_tokens=256, decode_batch=8, prompt_tokens=2000, kv_cache=2304, train_seq=2048, train_micro_batch=4,
    pretrain_steps=20, pretrain_skip=5, finetune_steps=10, finetune_seq=1024, serve_clients=16, serve_new_tokens=64,
    corpus_repeats=40,
)
DRY_SIZES = Sizes(
    model=dict(block_size=256, n_layer=1, n_embd=64, n_head=4, n_query_groups=2, head_size=16, intermediate_size=128,
               vocab_size=512, padded_vocab_size=512),
    matmul=256, copy_mib=16, timing_warmup=1, timing_iters=2, decode_new_tokens=6, decode_batch=8, prompt_tokens=48,
    kv_cache=96, train_seq=32, train_micro_batch=2, pretrain_steps=2, pretrain_skip=1, finetune_steps=2,
    finetune_seq=64, serve_clients=16, serve_new_tokens=4, corpus_repeats=2, kernel_shapes="TINY",
)


@dataclass
class Context:
    """What a section needs: where to write, how big, and what the earlier sections found."""

    work: Path  # large scratch files (checkpoint, corpus, training runs)
    out: Path  # results: sections/<name>.json, logs
    dry_run: bool
    deadline: float = field(default_factory=lambda: time.monotonic() + 600)  # for waits inside a section

    @property
    def gpu(self) -> bool:
        import torch

        return torch.cuda.is_available() and not self.dry_run

    @property
    def sizes(self) -> Sizes:
        return DRY_SIZES if self.dry_run else GPU_SIZES

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    @property
    def ckpt(self) -> Path:
        return self.work / "checkpoint"

    def env(self) -> dict[str, float]:
        """The figures of the `env` section (peak FLOP/s, copy bandwidth)."""
        path = self.out / "env.json"
        return json.loads(path.read_text()) if path.is_file() else {}


# --------------------------------------------------------------------------------------------------
# helpers
def model_config(sizes: Sizes):
    """The Llama-3.2-1B registry config (published shapes) with the sizes' overrides."""
    from litgpt import Config

    return Config.from_name("Llama-3.2-1B", **sizes.model)


def timed(fn: Callable[[], Any], device: str, warmup: int, iters: int) -> float:
    """Seconds per call of `fn` (mean over `iters` after `warmup` calls), with the benchmark's timer."""
    import torch

    from extensions.triton.bench import measure

    ms, _ = measure(fn, lambda: None, torch.device(device), warmup, iters)
    return ms / 1000


def run_cli(argv: list[str], device: str) -> dict[str, Any]:
    """Runs `litgpt VERB ...` in this process (the same `main` as the console script).

    Returns:
        {"seconds": wall time, "peak_gib": the most GPU memory allocated during the run (None on the CPU)}.

    Raises:
        RuntimeError: when the verb returns a non-zero status.
    """
    import torch

    from litgpt.__main__ import main

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    status = main(argv)
    seconds = time.perf_counter() - start
    if status not in (0, None):
        raise RuntimeError(f"litgpt {argv[0]} returned {status}")
    peak = torch.cuda.max_memory_allocated() / GiB if device == "cuda" else None
    return {"seconds": seconds, "peak_gib": peak}


def metrics_rows(out_dir: Path) -> list[dict[str, float]]:
    from litgpt.train.monitor import read_csv_metrics

    return [r for r in read_csv_metrics(out_dir / "logs" / "metrics.csv") if "loss" in r]


def median_step_seconds(rows: list[dict[str, float]], skip: int) -> Optional[float]:
    """Median time between logged optimizer steps, after the first `skip` steps."""
    times = [r["time"] for r in rows]
    gaps = [b - a for a, b in zip(times, times[1:])][max(skip - 1, 0):]
    return statistics.median(gaps) if gaps else None


def _train_args(ctx: Context, steps: int, seq: int) -> list[str]:
    s = ctx.sizes
    return ["--train.max_steps", str(steps), "--train.max_seq_length", str(seq),
            "--train.micro_batch_size", str(s.train_micro_batch), "--train.global_batch_size",
            str(s.train_micro_batch), "--train.lr_warmup_steps", "1", "--train.log_interval", "1",
            "--train.save_interval", "100000", "--eval.interval", "100000", "--eval.initial_validation", "false",
            "--eval.final_validation", "false", "--eval.max_iters", "1", "--devices", "1", "--accelerator",
            ctx.device, "--logger_name", "csv"]


# --------------------------------------------------------------------------------------------------
# sections
def section_env(ctx: Context) -> list[dict]:
    """The machine: GPU name and versions, the bf16 matrix-product peak and the copy bandwidth it reaches."""
    import platform

    import torch

    s, gpu, dev = ctx.sizes, ctx.gpu, ctx.device
    dtype = torch.bfloat16 if gpu else torch.float32
    n = s.matmul
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    flops = 2 * n**3 / timed(lambda: torch.mm(a, b), dev, s.timing_warmup, s.timing_iters)
    del a, b
    src = torch.empty(s.copy_mib * 2**20, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_bytes = 2 * src.numel() / timed(lambda: dst.copy_(src), dev, s.timing_warmup, s.timing_iters)  # read + write
    del src, dst
    env = {"peak_flops": flops, "copy_bytes_per_s": copy_bytes}
    (ctx.out / "env.json").write_text(json.dumps(env))
    try:
        import bitsandbytes

        bnb = bitsandbytes.__version__
    except Exception as err:  # reported, not fatal: the bnb tests then fail with the reason
        bnb = f"missing ({type(err).__name__})"
    import triton

    name = torch.cuda.get_device_name() if gpu else f"CPU ({platform.processor() or platform.machine()})"
    versions = f"torch {torch.__version__}, triton {triton.__version__}, bitsandbytes {bnb}, Python {platform.python_version()}"
    return [
        row("env", "device", None, gpu=gpu, cuda_only=False, note=f"{name}; {versions}"),
        row("env", f"{'bf16' if gpu else 'fp32'} matrix product {n}^3 (the MFU's peak)", flops / 1e12, "TFLOP/s",
            gpu=gpu),
        row("env", f"copy bandwidth, {s.copy_mib} MiB, read + write (the roofline's)", copy_bytes / 1e9, "GB/s",
            gpu=gpu),
    ]


def section_prepare(ctx: Context) -> list[dict]:
    """Random-weight checkpoint of the model (bf16 on the GPU), a tokenizer, a text corpus and SFT rows."""
    import torch

    from litgpt import GPT
    from litgpt.prompts import save_prompt_style
    from tests._tokenizers import make_hf_tokenizer, training_text

    if ctx.work.exists():
        shutil.rmtree(ctx.work)
    ckpt = ctx.ckpt
    ckpt.mkdir(parents=True)
    config = model_config(ctx.sizes)
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = GPT(config)
    model = model.to(torch.bfloat16)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    del model
    torch.save(state, ckpt / "lit_model.pth")
    config.save(ckpt)
    make_hf_tokenizer(ckpt)  # 256 byte-level tokens; the model keeps its real vocabulary (the head's cost)
    save_prompt_style("default", ckpt)  # prompts reach the model as written: the 2k prompt stays 2k tokens
    corpus = ctx.work / "corpus"
    corpus.mkdir()
    text = training_text()
    for i in range(4):
        (corpus / f"part{i}.txt").write_text(text * ctx.sizes.corpus_repeats, encoding="utf-8")
    words = text.split()
    n_words = ctx.sizes.finetune_seq // 3  # about 3 tokens per word with the tiny byte-level tokenizer
    rows = [{"instruction": f"Summarize part {i}.", "input": " ".join(words[i * 7: i * 7 + n_words]),
             "output": " ".join(words[i * 11: i * 11 + n_words // 4])} for i in range(64)]
    (ctx.work / "sft.json").write_text(json.dumps(rows))
    size = (ckpt / "lit_model.pth").stat().st_size
    return [row("prepare", "random checkpoint (Llama-3.2-1B shapes)" if ctx.gpu else "random toy checkpoint",
                size / GiB, "GiB", gpu=ctx.gpu, cuda_only=False,
                note=f"{config.n_layer} layers, {config.n_embd} wide, vocabulary {config.padded_vocab_size}")]


CUDA_TEST_PATHS = ("tests/gpu",)
"""Where the CUDA-marked tests live. Other test modules import optional packages (lm_eval, openai, ...) that a
bare GPU machine lacks; keep `@pytest.mark.cuda` tests in these paths (or add the file here)."""


def section_tests(ctx: Context) -> list[dict]:
    """The suite's CUDA-marked tests (bitsandbytes modes, QLoRA step, Triton kernels vs eager), by module."""
    junit = ctx.out / "junit-cuda.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "0" if ctx.gpu else "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={junit}",
           *CUDA_TEST_PATHS]
    left = max(ctx.deadline - time.monotonic() - 5, 10)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left)
    (ctx.out / "logs").mkdir(parents=True, exist_ok=True)
    (ctx.out / "logs" / "pytest-cuda.log").write_text(proc.stdout + proc.stderr)
    if not junit.is_file():
        return [problem("tests", "error", f"pytest exited {proc.returncode}: {proc.stdout[-300:]}")]
    by_module: dict[str, dict[str, list[str]]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "?").rsplit(".", 1)[-1]
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        by_module.setdefault(module, {}).setdefault(outcome, []).append(case.get("name", "?"))
    rows = []
    for module, outcomes in sorted(by_module.items()):
        passed, failed = len(outcomes.get("passed", [])), outcomes.get("failed", [])
        total = passed + len(failed) + len(outcomes.get("skipped", []))
        rows.append(row("tests", f"{module} (CUDA-marked)", passed / total, "%", (">=", 1.0), gpu=ctx.gpu,
                        note=f"{passed}/{total} passed" + (f"; failed: {', '.join(failed)}" if failed else "")))
    if not rows:
        rows.append(problem("tests", "error", f"no CUDA-marked test collected (pytest exited {proc.returncode})"))
    return rows


KERNEL_GOALS = {  # op -> (title, speed-up goal vs eager, vs torch.compile); see tutorials/kernels.md
    "rope": ("RoPE", 2.0, 1.0),
    "swiglu": ("SwiGLU", 1.3, 1.0),
    "rms_norm": ("RMSNorm", 1.0, 1.0),
}


def section_kernels(ctx: Context) -> list[dict]:
    """The Triton kernels against eager PyTorch and torch.compile (forward + backward), bf16."""
    import torch

    import extensions.triton as kt
    from extensions.triton import bench

    s, gpu = ctx.sizes, ctx.gpu
    shapes = getattr(bench, s.kernel_shapes)
    device = torch.device(ctx.device)
    dtype = torch.bfloat16 if gpu else torch.float32
    results: dict[str, dict[str, tuple[float, Optional[float]]]] = {}
    for op in ("linear_cross_entropy", *KERNEL_GOALS):
        results[op] = {}
        compile_ok = gpu and op != "linear_cross_entropy"  # inductor on the CPU would need minutes
        for impl, run, reset in bench.CASES[op](shapes, device, dtype, kt, compile_ok):
            if run is not None:
                results[op][impl] = bench.measure(run, reset, device, s.timing_warmup, s.timing_iters // 2 or 1)
        if gpu:
            torch.cuda.empty_cache()
    ce = results["linear_cross_entropy"]
    (e_ms, e_mib), (t_ms, t_mib) = ce["eager"], ce["triton"]
    size = f"{shapes.tokens} tokens x vocabulary {shapes.vocab}, hidden {shapes.hidden}"
    rows = [
        row("kernels", "fused LM head + cross-entropy: peak memory, eager / Triton", e_mib / t_mib if t_mib else None,
            "x", (">=", 4.0), gpu=gpu, note=f"{size}; eager {fmt(e_mib, 'MiB')}, Triton {fmt(t_mib, 'MiB')}"),
        row("kernels", "fused LM head + cross-entropy: speed-up vs eager", e_ms / t_ms, "x", (">=", 1.5), gpu=gpu,
            note=f"eager {e_ms:.2f} ms, Triton {t_ms:.2f} ms (forward + backward)"),
    ]
    for op, (title, vs_eager, vs_compile) in KERNEL_GOALS.items():
        r = results[op]
        rows.append(row("kernels", f"{title}: speed-up vs eager", r["eager"][0] / r["triton"][0], "x",
                        (">=", vs_eager), gpu=gpu, note=f"eager {r['eager'][0]:.3f} ms, Triton {r['triton'][0]:.3f} ms"))
        compiled = r.get("compile")
        rows.append(row("kernels", f"{title}: speed-up vs torch.compile",
                        compiled[0] / r["triton"][0] if compiled else None, "x", (">=", vs_compile), gpu=gpu,
                        note=f"torch.compile {compiled[0]:.3f} ms" if compiled else "not compiled"))
    return rows


def _prompt_of(tokenizer, n_tokens: int) -> tuple[str, int]:
    """A text that encodes to about `n_tokens` tokens, and its exact token count."""
    from tests._tokenizers import training_text

    text = training_text()
    ids = tokenizer.encode(text * (1 + 4 * n_tokens // len(text)), bos=False)
    prompt = tokenizer.decode(ids[:n_tokens])
    return prompt, int(tokenizer.encode(prompt).numel())


def _decode_rate(stats: dict[str, list[float]], rows: int) -> float:
    """Tokens per second after the first token (the decode steps, prefill excluded), of the last run."""
    tokens, total, first = (stats[k][-1] for k in ("Tokens generated", "Seconds total", "Seconds to first token"))
    return (tokens - rows) / max(total - first, 1e-9)


def section_decode(ctx: Context) -> list[dict]:
    """`LLM` decode: batch 1 (compiled) against the memory roofline, batch 8, time to first token of 2k tokens."""
    import torch

    from litgpt import LLM

    s, gpu = ctx.sizes, ctx.gpu
    llm = LLM.load(str(ctx.ckpt), distribute=None)
    llm.distribute(accelerator=ctx.device, precision="bf16-true" if gpu else None, compile=gpu,
                   fixed_kv_cache_size=s.kv_cache)
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    short = "Llamas eat grass and hay; a short prompt for the decode speed."
    kwargs = dict(max_new_tokens=s.decode_new_tokens, temperature=0.0)
    llm.benchmark(num_iterations=1, prompt=short, **kwargs)  # compiles the batch-1 step
    _, one = llm.benchmark(num_iterations=3, prompt=short, **kwargs)
    rate1 = _decode_rate(one, 1)
    # batch 8 runs eager: compiling a second batch size would cost ~45 s of the budget (tutorials/gpu.md)
    llm.distribute(accelerator=ctx.device, precision=llm.precision, fixed_kv_cache_size=s.kv_cache)
    prompts = [f"{i}: {short}" for i in range(s.decode_batch)]
    kwargs["max_new_tokens"] = max(s.decode_new_tokens // 4, 2)
    llm.benchmark(num_iterations=1, prompt=prompts, **kwargs)
    _, many = llm.benchmark(num_iterations=2, prompt=prompts, **kwargs)
    rate8 = _decode_rate(many, s.decode_batch)
    long_prompt, n_prompt = _prompt_of(llm.tokenizer, s.prompt_tokens)
    llm.benchmark(num_iterations=1, prompt=long_prompt, max_new_tokens=1, temperature=0.0)
    _, first = llm.benchmark(num_iterations=3, prompt=long_prompt, max_new_tokens=1, temperature=0.0)
    ttft = statistics.median(first["Seconds to first token"])
    copy_bw = ctx.env().get("copy_bytes_per_s")
    share = weight_bytes * rate1 / copy_bw if copy_bw else None
    what = f"{llm.precision}, {'compiled' if gpu else 'eager'}, {s.decode_new_tokens} new tokens"
    peak = f"; peak {torch.cuda.max_memory_allocated() / GiB:.1f} GiB" if gpu else ""
    return [
        row("decode", "batch 1: tokens/s", rate1, "tok/s", gpu=gpu, note=what),
        row("decode", "batch 1: share of the memory roofline", share, "%", (">=", 0.75), gpu=gpu,
            note=f"{weight_bytes / 1e9:.2f} GB of weights x {rate1:.0f} tok/s / {(copy_bw or 0) / 1e9:.0f} GB/s"),
        row("decode", f"batch {s.decode_batch}: tokens/s (all rows, eager)", rate8, "tok/s", gpu=gpu,
            note=f"{rate8 / rate1:.1f}x compiled batch 1, {kwargs['max_new_tokens']} new tokens{peak}"),
        row("decode", f"time to first token, {n_prompt}-token prompt", ttft * 1000, "ms", gpu=gpu,
            note=f"prefill {n_prompt / ttft:,.0f} tok/s"),
    ]


def section_pretrain(ctx: Context) -> list[dict]:
    """`litgpt pretrain`, 20 steps of the model, with the Triton kernels and without: MFU and peak memory."""
    s, gpu = ctx.sizes, ctx.gpu
    peak = ctx.env().get("peak_flops")
    rows, steps = [], {}
    for kernels in (True, False):
        out = ctx.work / f"pretrain-{'triton' if kernels else 'eager'}"
        argv = ["pretrain", "--model_config", str(ctx.ckpt / "model_config.yaml"), "--out_dir", str(out),
                "--precision", "bf16-true" if gpu else "32-true", "--data", "TextFiles",
                "--data.train_data_path", str(ctx.work / "corpus"), "--data.num_workers", "1",
                "--tokenizer_dir", str(ctx.ckpt), *_train_args(ctx, s.pretrain_steps, s.train_seq)]
        if kernels:
            argv += ["--train.kernels", "triton"]
        run = run_cli(argv, ctx.device)
        logged = metrics_rows(out)
        tflops = statistics.median(r["tflops_per_sec"] for r in logged[s.pretrain_skip:])
        steps[kernels] = median_step_seconds(logged, s.pretrain_skip)
        shutil.rmtree(out, ignore_errors=True)
        label = "kernels on" if kernels else "kernels off"
        mfu = tflops * 1e12 / peak if peak else None
        tokens = s.train_micro_batch * s.train_seq
        rows.append(row("pretrain", f"{label}: MFU vs the measured bf16 peak", mfu, "%",
                        (">=", 0.5) if kernels else None, gpu=gpu,
                        note=f"{tflops:.0f} TFLOP/s; {tokens} tokens/step, {steps[kernels] * 1000:.0f} ms/step"))
        rows.append(row("pretrain", f"{label}: peak memory", run["peak_gib"], "GiB", gpu=gpu,
                        note=f"{len(logged)} steps in {run['seconds']:.0f} s (start-up and save included)"))
    rows.append(row("pretrain", "kernels' effect: step time off / on", steps[False] / steps[True], "x", gpu=gpu))
    return rows


def section_finetune(ctx: Context) -> list[dict]:
    """`litgpt finetune_lora` on the checkpoint: LoRA step time, QLoRA (nf4) peak memory."""
    s, gpu = ctx.sizes, ctx.gpu
    rows = []
    for quantize in (None, "bnb.nf4"):
        out = ctx.work / f"lora-{quantize or 'bf16'}"
        argv = ["finetune_lora", str(ctx.ckpt), "--out_dir", str(out), "--precision", "bf16-true", "--data", "JSON",
                "--data.json_path", str(ctx.work / "sft.json"), "--data.val_split_fraction", "0.1",
                "--data.num_workers", "0", *_train_args(ctx, s.finetune_steps, s.finetune_seq)]
        if quantize:
            argv += ["--quantize", quantize]
        run = run_cli(argv, ctx.device)
        step = median_step_seconds(metrics_rows(out), s.pretrain_skip)
        shutil.rmtree(out, ignore_errors=True)
        label = "QLoRA (nf4)" if quantize else "LoRA (bf16)"
        note = f"micro batch {s.train_micro_batch}, up to {s.finetune_seq} tokens"
        rows.append(row("finetune", f"{label}: step time", None if step is None else step * 1000, "ms", gpu=gpu,
                        note=note))
        rows.append(row("finetune", f"{label}: peak memory", run["peak_gib"], "GiB", gpu=gpu,
                        note=f"run {run['seconds']:.0f} s (load, quantize, save included)"))
    return rows


def _ask(url: str, i: int, new_tokens: int) -> int:
    """One /predict request (greedy, exactly `new_tokens` tokens asked); returns the tokens generated."""
    body = json.dumps({"prompt": f"Request {i}: what do llamas eat?", "max_new_tokens": new_tokens,
                       "temperature": 0, "stream": False}).encode()
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return int(json.loads(response.read())["usage"]["completion_tokens"])


def section_serve(ctx: Context) -> list[dict]:
    """`litgpt serve` (continuous batching): tokens/s of 16 concurrent clients against one client."""
    from litgpt.deploy.serve import BackgroundServer

    s, gpu = ctx.sizes, ctx.gpu
    n = s.serve_new_tokens
    server = BackgroundServer(
        ctx.ckpt, log_path=ctx.out / "logs" / "serve.log", startup_timeout=max(ctx.deadline - time.monotonic() - 20, 10),
        accelerator=ctx.device, precision="bf16-true" if gpu else None, max_batch_size=s.serve_clients,
        max_seq_length=s.kv_cache,
    )
    (ctx.out / "logs").mkdir(parents=True, exist_ok=True)
    with server:
        _ask(server.url, -1, n)  # warm-up
        start = time.perf_counter()
        one = sum(_ask(server.url, i, n) for i in range(3)) / (time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(s.serve_clients) as pool:
            tokens = sum(pool.map(lambda i: _ask(server.url, 100 + i, n), range(2 * s.serve_clients)))
        many = tokens / (time.perf_counter() - start)
    return [
        row("serve", "1 client: tokens/s", one, "tok/s", gpu=gpu, note=f"{n} new tokens per request, eager"),
        row("serve", f"{s.serve_clients} concurrent clients: tokens/s", many, "tok/s", gpu=gpu,
            note=f"{many / one:.1f}x one client (2 requests per client)"),
    ]


SECTIONS: dict[str, Callable[[Context], list[dict]]] = {
    "env": section_env,
    "prepare": section_prepare,
    "tests": section_tests,
    "kernels": section_kernels,
    "decode": section_decode,
    "pretrain": section_pretrain,
    "finetune": section_finetune,
    "serve": section_serve,
}


def run_section(name: str, ctx: Context) -> list[dict]:
    """Runs one section and writes its rows to `<out>/sections/<name>.json`; an exception becomes an error row."""
    start = time.perf_counter()
    try:
        rows = SECTIONS[name](ctx)
    except Exception as err:  # the table must still come out: one row says what broke
        import traceback

        (ctx.out / "logs").mkdir(parents=True, exist_ok=True)
        (ctx.out / "logs" / f"{name}.traceback").write_text(traceback.format_exc())
        rows = [problem(name, "error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300])]
    rows.append({"section": name, "check": "_seconds", "value": time.perf_counter() - start})
    write_rows(ctx.out / "sections" / f"{name}.json", rows)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run one section of the GPU acceptance check.")
    parser.add_argument("section", choices=list(SECTIONS))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--seconds", type=float, default=600, help="the section's time limit (for inner waits)")
    args = parser.parse_args(argv)
    ctx = Context(work=args.work, out=args.out, dry_run=args.dry_run, deadline=time.monotonic() + args.seconds)
    rows = run_section(args.section, ctx)
    return 1 if any(r.get("result") == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

