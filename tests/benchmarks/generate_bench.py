#!/usr/bin/env python3
"""Decode throughput of `litgpt.LLM`: batch 1 vs a batch of prompts, eager vs `--compile`.

Builds a random-weight checkpoint of a registry config (default SmolLM2-135M) with a small byte-level
tokenizer, then times `LLM.benchmark` (greedy, `--new_tokens` per prompt). Prints one JSON line per case
and the batched / batch-1 ratio. Not a test: run it by hand on a quiet machine, e.g.

    .venv/bin/python tests/benchmarks/generate_bench.py --batch 8
    .venv/bin/python tests/benchmarks/generate_bench.py --batch 8 --compile   # adds the compiled cases
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from litgpt import GPT, LLM, Config  # noqa: E402
from litgpt.demo import demo_tokenizer  # noqa: E402


def run_case(llm: LLM, prompts: list[str], new_tokens: int, runs: int) -> dict:
    prompt = prompts[0] if len(prompts) == 1 else prompts
    kwargs = dict(prompt=prompt, max_new_tokens=new_tokens, temperature=0.0)
    llm.benchmark(num_iterations=1, **kwargs)  # warm-up (and compilation)
    _, stats = llm.benchmark(num_iterations=runs, **kwargs)
    return {
        "batch": len(prompts),
        "tokens_per_s": round(statistics.median(stats["Inference speed in tokens/sec"]), 2),
        "seconds": round(statistics.median(stats["Seconds total"]), 3),
        "tokens": int(statistics.median(stats["Tokens generated"])),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="SmolLM2-135M")
    p.add_argument("--layers", type=int, default=0, help="override n_layer (0 keeps the config's)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt_words", type=int, default=48)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--precision", default=None, help="32-true, bf16-true, 16-true (default: the API's)")
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    args = p.parse_args()

    torch.manual_seed(0)
    config = Config.from_name(args.model, **({"n_layer": args.layers} if args.layers else {}))
    words = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
    prompts = [" ".join(words[(i + j) % len(words)] for j in range(args.prompt_words)) for i in range(args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        demo_tokenizer(ckpt)
        # the model keeps its real vocabulary (the LM head is a large part of each step); the tiny
        # tokenizer only ever produces ids below 256
        torch.save(GPT(config).state_dict(), ckpt / "lit_model.pth")
        config.save(ckpt)
        results = []
        for compiled in ([False, True] if args.compile else [False]):
            llm = LLM.load(str(ckpt), distribute=None)
            llm.distribute(precision=args.precision, compile=compiled)
            for prompts_case in (prompts[:1], prompts):
                r = run_case(llm, prompts_case, args.new_tokens, args.runs)
                r.update(model=args.model, compiled=compiled, precision=llm.precision, device=llm.device.type)
                results.append(r)
                print(json.dumps(r), flush=True)
        for compiled in sorted({r["compiled"] for r in results}):
            one, many = [r for r in results if r["compiled"] == compiled]
            print(json.dumps({"compiled": compiled, "batched_over_batch1": round(many["tokens_per_s"] / one["tokens_per_s"], 2)}))


if __name__ == "__main__":
    main()
