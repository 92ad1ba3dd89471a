"""`make demo` / `python -m litgpt.demo`: pretrain a small model offline, on CPU, in about a minute.

The corpus is Python's own documentation (`pydoc_data.topics`, shipped with every CPython). The demo
trains a byte-level BPE tokenizer on it, pretrains a 4-layer, 1.3M-parameter Llama-style model with `litgpt pretrain`
(progress bar, validation loss and a generated sample every few hundred steps, the loss curve PNG), and
ends with the commands that chat with, serve and finetune the result, written so that they run as printed from
the directory `make demo` ran in (through `.venv/bin/litgpt` when `litgpt` is not on the PATH).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import shlex
import sys
import time
from pathlib import Path

from litgpt.config import Config
from litgpt.model import GPT

DEMO_CONFIG = dict(
    name="litgpt-demo-1.3M", block_size=256, n_layer=4, n_embd=128, n_head=4, n_query_groups=4, vocab_size=2048,
    padding_multiple=64, norm_class_name="RMSNorm", norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=352,
    bias=False, parallel_residual=False, rotary_percentage=1.0, rope_base=10000,
)


def write_corpus(data_dir: Path) -> tuple[Path, Path, Path]:
    """Python's documentation topics as .txt files: every 10th topic for validation, the rest for training;
    plus an instruction JSON (explain topic X -> its first paragraph) for the finetuning command."""
    from pydoc_data.topics import topics

    train_dir, val_dir = data_dir / "train", data_dir / "val"
    for d in (train_dir, val_dir):
        d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, text) in enumerate(sorted(topics.items())):
        target = val_dir if i % 10 == 5 else train_dir
        (target / f"{name}.txt").write_text(text, encoding="utf-8")
        first = text.strip().split("\n\n")[0]
        rows.append({"instruction": f"What does the Python documentation say about {name!r}?", "input": "",
                     "output": first[:400]})
    sft = data_dir / "topics_sft.json"
    sft.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return train_dir, val_dir, sft


def train_tokenizer(train_dir: Path, tokenizer_dir: Path, vocab_size: int) -> Path:
    """A byte-level BPE tokenizer (GPT-2 style) trained on the training files, with <s> / </s> specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    if (tokenizer_dir / "tokenizer.json").is_file():
        return tokenizer_dir
    texts = [p.read_text(encoding="utf-8") for p in sorted(train_dir.glob("*.txt"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.save(str(tokenizer_dir / "tokenizer.json"))
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False}, indent=1))
    (tokenizer_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    return tokenizer_dir


def demo_tokenizer(tokenizer_dir: Path, vocab_size: int = 2048) -> Path:
    """A byte-level BPE tokenizer trained on Python's documentation topics, written to `tokenizer_dir` (reused when
    already there): what benchmarks and examples use for a random-weight model without downloading anything."""
    import tempfile

    from pydoc_data.topics import topics

    with tempfile.TemporaryDirectory() as tmp:
        for i, (_, text) in enumerate(sorted(topics.items())):
            (Path(tmp) / f"{i:03d}.txt").write_text(text, encoding="utf-8")
        return train_tokenizer(Path(tmp), Path(tokenizer_dir), vocab_size)


def pick_thread_count(config: Config, batch_size: int, seq_len: int) -> int:
    """The faster of 1 thread and torch's default on this machine right now (a shared 2-core machine can be
    several times slower with 2 threads than with 1 when other work runs), from two timed training steps."""
    import torch

    default = torch.get_num_threads()
    if default <= 1:
        return default
    torch.manual_seed(0)
    model = GPT(config)
    model.max_seq_length = seq_len
    x = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    timings = {}
    for threads in (default, 1, default):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for _ in range(2):
            model(x).float().logsumexp(-1).mean().backward()
        timings[threads] = min(timings.get(threads, float("inf")), time.perf_counter() - t0)
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, default=Path("out/demo"))
    parser.add_argument("--max_steps", type=int, default=400)
    parser.add_argument("--max_time", type=float, default=200.0, help="seconds of training at most")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out_dir
    n_params = sum(p.numel() for p in GPT(Config(**DEMO_CONFIG)).parameters())
    print(f"litgpt demo: pretraining a {DEMO_CONFIG['n_layer']}-layer, {n_params / 1e6:.1f}M-parameter model on "
          f"Python's documentation (offline, CPU: {args.max_steps} steps, about a minute on a quiet 2-core machine, "
          f"stopped after {args.max_time:.0f}s of training at the latest) into {out}", flush=True)
    train_dir, val_dir, sft = write_corpus(out / "data")
    tokenizer_dir = train_tokenizer(train_dir, out / "tokenizer", DEMO_CONFIG["vocab_size"])

    from litgpt.data import TextFiles
    from litgpt.pretrain import pretrain
    from litgpt.train.args import EvalArgs, TrainArgs

    threads = pick_thread_count(Config(**DEMO_CONFIG), 16, 128)
    print(f"Using {threads} CPU thread(s).", flush=True)

    final = pretrain(
        model_config=Config(**DEMO_CONFIG),
        out_dir=out / "pretrain",
        precision=args.precision,
        data=TextFiles(train_dir, val_data_path=val_dir, num_workers=1),
        tokenizer_dir=tokenizer_dir,
        train=TrainArgs(global_batch_size=16, micro_batch_size=16, max_seq_length=128, max_steps=args.max_steps,
                        max_time=args.max_time, lr_warmup_steps=30, min_lr=3e-4, max_norm=1.0, save_interval=None,
                        log_interval=10),
        eval=EvalArgs(interval=80, max_iters=8, max_new_tokens=40, initial_validation=True),
        optimizer={"class_path": "torch.optim.AdamW",
                   "init_args": {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95]}},
        accelerator="cpu", devices=1, seed=1234, resume=False,
    )
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f}s. Try the model:", flush=True)
    print("\n".join("  " + c for c in next_commands(final, sft)), flush=True)
    return 0


def litgpt_command() -> str:
    """How to call `litgpt` from the current directory in a fresh shell: `litgpt` when the one on the PATH is
    this installation's, else the path of this venv's script (e.g. `.venv/bin/litgpt`)."""
    script = Path(sys.executable).parent / "litgpt"
    on_path = shutil.which("litgpt")
    if on_path is not None and os.path.realpath(on_path) == os.path.realpath(script):
        return "litgpt"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def next_commands(final: Path, sft: Path) -> list[str]:
    """The follow-up commands, for the verbs whose packages this installation has; each runs as printed."""
    from litgpt.__main__ import VERBS

    exe, f, q = litgpt_command(), str(final), shlex.quote
    finetune = (f"--data JSON --data.json_path {q(str(sft))} --train.epochs 3 --train.global_batch_size 8 "
                "--train.micro_batch_size 8 --train.lr_warmup_steps 3 --eval.interval 9 --precision 32-true")
    candidates = [
        ("generate", None, f"{exe} generate {q(f)} --prompt {q('The with statement')}"),
        ("chat", None, f"{exe} chat {q(f)}"),
        ("serve", "litserve", f"{exe} serve {q(f)}"),
        ("finetune_lora", None, f"{exe} finetune_lora {q(f)} {finetune} --out_dir out/demo/lora"),
        ("finetune_full", None, f"{exe} finetune_full {q(f)} {finetune} --out_dir out/demo/full"),
        ("convert_from_litgpt", None, f"{exe} convert_from_litgpt {q(f)} {q(str(final.parent / 'hf'))}"),
    ]
    return [cmd for verb, package, cmd in candidates
            if verb in VERBS and (package is None or importlib.util.find_spec(package) is not None)]


if __name__ == "__main__":
    sys.exit(main())
