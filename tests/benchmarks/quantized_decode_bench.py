#!/usr/bin/env python3
"""Decode speed and peak memory of bf16 vs int8 / int4 weights on the CPU, through the public `LLM` API.

Builds a random-weight bf16 checkpoint of a registry config (default SmolLM2-135M, its full vocabulary) with the
small demo tokenizer, then for each mode starts a fresh Python process that runs

    LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", quantize=MODE)

and times `LLM.benchmark` (greedy, `--new_tokens` new tokens after a prompt of about `--prompt_tokens` tokens)
at batch 1 and at batch `--batch`. Per mode it reports tokens/s (prefill included, as `LLM.benchmark` counts
them) and the process's peak RSS (Python and torch included). Modes alternate over `--rounds` rounds: this
machine is shared, so the ratios to bf16 are taken within each round and their median is printed, with the load
average before and after. Not a test: run it by hand, e.g.

    .venv/bin/python tests/benchmarks/quantized_decode_bench.py --rounds 3 --threads 2
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


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM of /proc/self/status on Linux (getrusage's ru_maxrss is not: Linux
    carries it over fork and exec, so a worker would report the parent's peak from making the checkpoint)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> None:
    """One mode in this process: load, time batch 1 and batch `args.batch`, print one JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from litgpt import LLM

    llm = LLM.load(str(args.checkpoint), distribute=None)
    quantize = None if args.worker == "bf16" else args.worker
    llm.distribute(accelerator="cpu", precision="bf16-true", quantize=quantize)
    load_peak = peak_rss_mb()
    text = " ".join("the quick brown fox jumps over the lazy dog while the cat sleeps".split() * 20)
    ids = llm.preprocessor.tokenizer.encode(text)[: args.prompt_tokens]
    prompt = llm.preprocessor.tokenizer.decode(ids)
    row = {"mode": args.worker}
    for batch in (1, args.batch):
        kwargs = dict(prompt=prompt if batch == 1 else [prompt] * batch, max_new_tokens=args.new_tokens, temperature=0.0)
        llm.benchmark(num_iterations=1, **kwargs)  # warm-up
        _, stats = llm.benchmark(num_iterations=args.runs, **kwargs)
        row[f"tok_s_b{batch}"] = round(statistics.median(stats["Inference speed in tokens/sec"]), 2)
    row.update(load_peak_mb=round(load_peak, 1), peak_mb=round(peak_rss_mb(), 1))
    print(json.dumps(row))


def make_checkpoint(model_name: str, layers: int, directory: Path) -> Path:
    import torch

    from litgpt import GPT, Config
    from litgpt.demo import demo_tokenizer

    torch.manual_seed(0)
    config = Config.from_name(model_name, **({"n_layer": layers} if layers else {}))
    demo_tokenizer(directory)
    model = GPT(config).to(torch.bfloat16)
    torch.save(model.state_dict(), directory / "lit_model.pth")
    config.save(directory)
    return directory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="SmolLM2-135M")
    p.add_argument("--layers", type=int, default=0, help="override n_layer (0 keeps the config's)")
    p.add_argument("--modes", nargs="+", default=["bf16", "int8", "int4-g32", "int4-g64", "int4-g128"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="timed generations per case (median)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt_tokens", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--checkpoint", type=Path, default=None, help="use this bf16 checkpoint instead of a random one")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or make_checkpoint(args.model, args.layers, Path(tmp))
        results: dict[str, list[dict]] = {m: [] for m in args.modes}
        for r in range(args.rounds):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--worker", mode, "--checkpoint", str(ckpt)]
                for flag in ("runs", "batch", "prompt_tokens", "new_tokens", "threads"):
                    cmd += [f"--{flag}", str(getattr(args, flag))]
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
                if out.returncode != 0:
                    sys.exit(f"{mode} failed:\n{out.stderr}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(row)
                print(json.dumps({"round": r, **row}), flush=True)
    load_after = os.getloadavg()

    base = args.modes[0]
    b = args.batch
    print(f"\nmedians over {args.rounds} rounds ({args.model}, threads={args.threads or 'default'}, load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after):")
    print(f"| mode | tok/s batch 1 | vs {base} | tok/s batch {b} | vs {base} | peak RSS MiB | vs {base} |")
    print("|---|---|---|---|---|---|---|")
    for mode, rows in results.items():
        def med(key: str) -> float:
            return statistics.median(x[key] for x in rows)

        def ratio(key: str) -> float:  # per round (same machine state), then the median
            return statistics.median(x[key] / y[key] for x, y in zip(rows, results[base]))

        print(
            f"| {mode} | {med('tok_s_b1'):.1f} | {ratio('tok_s_b1'):.2f}x | {med(f'tok_s_b{b}'):.1f} | "
            f"{ratio(f'tok_s_b{b}'):.2f}x | {med('peak_mb'):.0f} | {ratio('peak_mb'):.2f} |"
        )


if __name__ == "__main__":
    main()
