"""Throughput of `litgpt serve` with many clients at once versus one client at a time.

Starts `litgpt serve` on a SmolLM2-135M-sized model with random weights (and a tiny byte-level tokenizer from
the test helpers), then measures, on the same server:

* one at a time: `--sequential_requests` requests, each sent after the previous one was answered;
* concurrent: `--clients` clients at once, each sending `--requests_per_client` requests one after another.

Every request asks for exactly `--max_new_tokens` greedy tokens (no stop token: the model is random). The
script prints generated tokens per second of both phases, their ratio (continuous batching at work) and the
p50 / p95 latency of a request. Run from the repository root:

    python tests/benchmarks/serve_bench.py                      # 16 clients, 64 new tokens per request
    python tests/benchmarks/serve_bench.py --clients 32 --max_new_tokens 128 --precision 32-true
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch

from litgpt import GPT, Config  # noqa: E402
from litgpt.deploy.serve import BackgroundServer  # noqa: E402
from litgpt.demo import demo_tokenizer  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while llamas eat grass in the sun".split()


def make_checkpoint(directory: Path, model_name: str) -> Path:
    """A checkpoint folder with a randomly initialised `model_name` (bf16 weights) and a tiny tokenizer."""
    config = Config.from_name(model_name)
    torch.manual_seed(0)
    model = GPT(config).to(torch.bfloat16)
    torch.save(model.state_dict(), directory / "lit_model.pth")
    config.save(directory)
    demo_tokenizer(directory)
    return directory


def prompt(i: int, words: int) -> str:
    """A distinct prompt of about `words` words for request `i`."""
    return f"Request {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))


def ask(url: str, i: int, args) -> tuple[float, int]:
    """Sends request `i`; returns (latency in seconds, tokens generated)."""
    body = {"prompt": prompt(i, args.prompt_words), "max_new_tokens": args.max_new_tokens, "temperature": 0,
            "stream": False}
    start = time.perf_counter()
    response = requests.post(f"{url}/predict", json=body, timeout=3600)
    latency = time.perf_counter() - start
    response.raise_for_status()
    return latency, response.json()["usage"]["completion_tokens"]


def sequential(url: str, args) -> dict:
    results, start = [], time.perf_counter()
    for i in range(args.sequential_requests):
        results.append(ask(url, i, args))
    return summarize(results, time.perf_counter() - start)


def concurrent(url: str, args) -> dict:
    def client(c: int) -> list[tuple[float, int]]:
        first = 1000 + c * args.requests_per_client
        return [ask(url, i, args) for i in range(first, first + args.requests_per_client)]

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = [r for rs in pool.map(client, range(args.clients)) for r in rs]
    return summarize(results, time.perf_counter() - start)


def summarize(results: list[tuple[float, int]], seconds: float) -> dict:
    latencies = sorted(latency for latency, _ in results)
    tokens = sum(n for _, n in results)
    return {
        "requests": len(results), "tokens": tokens, "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1),
        "p50_latency_s": round(statistics.median(latencies), 2),
        "p95_latency_s": round(latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M", help="registry config of the random model")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests_per_client", type=int, default=2)
    parser.add_argument("--sequential_requests", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--prompt_words", type=int, default=24)
    parser.add_argument("--max_batch_size", type=int, default=16)
    parser.add_argument("--max_seq_length", type=int, default=512)
    parser.add_argument("--precision", default=None, help="default: the server's (bf16-true on CPUs with AMX)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), args.model)
        server = BackgroundServer(
            ckpt, log_path=Path(tmp) / "server.log", precision=args.precision, accelerator=args.accelerator,
            max_batch_size=args.max_batch_size, max_seq_length=args.max_seq_length,
        )
        with server:
            ask(server.url, -1, args)  # warm-up
            one = sequential(server.url, args)
            many = concurrent(server.url, args)
    ratio = many["tokens_per_second"] / one["tokens_per_second"]
    result = {"model": args.model, "precision": args.precision or "server default", "max_new_tokens":
              args.max_new_tokens, "one_at_a_time": one, f"{args.clients}_clients": many,
              "throughput_ratio": round(ratio, 2)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model} (random weights), {args.max_new_tokens} new tokens per request, "
          f"precision {result['precision']}")
    for name, r in (("one at a time", one), (f"{args.clients} clients", many)):
        print(f"  {name:>14}: {r['requests']:3d} requests, {r['tokens_per_second']:8.1f} tokens/s, "
              f"latency p50 {r['p50_latency_s']:.2f} s, p95 {r['p95_latency_s']:.2f} s")
    print(f"  throughput ratio: {ratio:.2f}x")


if __name__ == "__main__":
    main()
