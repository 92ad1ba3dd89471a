#!/usr/bin/env python3
"""Decode speed and memory of bf16 vs the portable int8 / int4 weight-only quantization, on the CPU.

Writes a random-weight bf16 checkpoint of a registry config (default SmolLM2-135M), then, for each mode, starts a
fresh Python process that loads it with `litgpt.quantization.load_model` (quantizing while loading), runs a greedy
decode loop over `litgpt.generate.engine.prefill` / `decode_one_token`, and reports:

* tokens/s: decode steps only (after a prefill of `--prompt` tokens and `--warmup` steps), batch 1;
* weights MB: bytes of the model's parameters and persistent buffers (tied tensors counted once);
* RSS MB: resident memory of the whole process after the decode (Python, torch's libraries and allocator caches
  included: about 250 MB before anything is loaded);
* peak MB: the process's peak RSS (the memory-mapped checkpoint counts while it is read).

Modes alternate over `--rounds` rounds (this machine is shared; medians and same-round ratios are what count).
Not a test: run it by hand, e.g.

    .venv/bin/python tests/benchmarks/quantize_bench.py --rounds 5
    .venv/bin/python tests/benchmarks/quantize_bench.py --modes bf16 int8 int4-g32 int4-g64 int4-g128 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc, else the peak from `resource`)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KB on Linux


def worker(args: argparse.Namespace) -> None:
    """One mode in this process: load, decode, print one JSON line."""
    import gc
    import time

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from litgpt.generate.engine import compile_decode_step, decode_one_token, prefill
    from litgpt.quantization import load_model, quantized_nbytes

    gc.collect()
    start = time.perf_counter()
    quantize = None if args.worker == "bf16" else args.worker
    model = load_model(args.checkpoint, quantize=quantize, dtype=torch.bfloat16, device="cpu")
    load_s = time.perf_counter() - start

    step = compile_decode_step() if args.compile else decode_one_token
    total = args.prompt + args.warmup + args.new_tokens
    model.set_kv_cache(batch_size=1, max_seq_length=total + 1, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt), generator=gen)
    with torch.inference_mode():
        token = prefill(model, prompt).argmax(dim=-1, keepdim=True)  # (1, 1)
        pos = args.prompt
        for _ in range(args.warmup):
            token = step(model, token, torch.tensor([pos])).argmax(dim=-1, keepdim=True)
            pos += 1
        t0 = time.perf_counter()
        for _ in range(args.new_tokens):
            token = step(model, token, torch.tensor([pos])).argmax(dim=-1, keepdim=True)
            pos += 1
        decode_s = time.perf_counter() - t0
    gc.collect()
    print(json.dumps({
        "mode": args.worker,
        "tokens_per_s": round(args.new_tokens / decode_s, 2),
        "weights_mb": round(quantized_nbytes(model) / 1e6, 1),
        "rss_mb": round(rss_mb(), 1),
        "peak_mb": round(peak_rss_mb(), 1),
        "load_s": round(load_s, 2),
    }))


def make_checkpoint(model_name: str, layers: int, directory: Path) -> Path:
    import torch

    from litgpt import GPT, Config

    torch.manual_seed(0)
    config = Config.from_name(model_name, **({"n_layer": layers} if layers else {}))
    with torch.device("cpu"):
        model = GPT(config).to(torch.bfloat16)
    torch.save(model.state_dict(), directory / "lit_model.pth")
    config.save(directory)
    return directory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="SmolLM2-135M")
    p.add_argument("--layers", type=int, default=0, help="override n_layer (0 keeps the config's)")
    p.add_argument("--modes", nargs="+", default=["bf16", "int8", "int4"], help="bf16 and any --quantize modes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens (prefilled, not timed)")
    p.add_argument("--warmup", type=int, default=4, help="decode steps before timing")
    p.add_argument("--new_tokens", type=int, default=64, help="timed decode steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (warm-up steps compile)")
    p.add_argument("--checkpoint", type=Path, default=None, help="use this bf16 checkpoint instead of a random one")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or make_checkpoint(args.model, args.layers, Path(tmp))
        results: dict[str, list[dict]] = {m: [] for m in args.modes}
        for r in range(args.rounds):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--worker", mode, "--checkpoint", str(ckpt)]
                for flag in ("prompt", "warmup", "new_tokens", "threads"):
                    cmd += [f"--{flag}", str(getattr(args, flag))]
                cmd += ["--compile"] if args.compile else []
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
                if out.returncode != 0:
                    sys.exit(f"{mode} failed:\n{out.stderr}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(row)
                print(json.dumps({"round": r, **row}), flush=True)

    base = args.modes[0]
    base_w = statistics.median(x["weights_mb"] for x in results[base])
    compiled = ", compiled decode step" if args.compile else ""
    print(f"\nmedians over {args.rounds} rounds ({args.model}, threads={args.threads or 'default'}{compiled}):")
    print(f"| mode | decode tok/s | vs {base} | weights MB | vs {base} | RSS MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for mode, rows in results.items():
        med = {k: statistics.median(x[k] for x in rows) for k in ("tokens_per_s", "weights_mb", "rss_mb", "peak_mb")}
        # speed ratio per round (same machine state), then the median of those
        ratios = [x["tokens_per_s"] / b["tokens_per_s"] for x, b in zip(rows, results[base])]
        print(
            f"| {mode} | {med['tokens_per_s']:.1f} | {statistics.median(ratios):.2f}x | {med['weights_mb']:.0f} | "
            f"{med['weights_mb'] / base_w:.2f} | {med['rss_mb']:.0f} | {med['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
