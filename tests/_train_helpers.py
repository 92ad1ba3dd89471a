"""Tiny models, corpora, checkpoints and argument sets shared by the training, pretrain, finetune and data tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from litgpt.config import Config
from litgpt.model import GPT
from litgpt.train.args import EvalArgs, TrainArgs
from tests._tokenizers import make_hf_tokenizer, training_text

TINY = dict(name="tiny", block_size=64, n_layer=2, n_embd=32, n_head=4, vocab_size=256, padding_multiple=64)


def tiny_config(**overrides: Any) -> Config:
    """A 2-layer, 32-wide model over the 256-token byte-level test tokenizer."""
    return Config(**{**TINY, **overrides})


def make_corpus(directory: Path, n_files: int = 2) -> Path:
    """A folder of .txt files cut from the tokenizer training text (about 12 KB)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = training_text()
    size = len(text) // n_files
    for i in range(n_files):
        (directory / f"part{i}.txt").write_text(text[i * size : (i + 1) * size], encoding="utf-8")
    return directory


def make_checkpoint(directory: Path, config: Config = None, seed: int = 0) -> Path:
    """lit_model.pth + model_config.yaml + tokenizer files of a random tiny model."""
    config = config or tiny_config()
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(GPT(config).state_dict(), directory / "lit_model.pth")
    config.save(directory)
    make_hf_tokenizer(directory)
    return directory


def make_sft_rows(n: int = 40) -> list[dict[str, str]]:
    """Instruction rows built from the test text: 'Repeat: X' -> 'X'."""
    words = training_text().split()
    rows = []
    for i in range(n):
        phrase = " ".join(words[i * 3 : i * 3 + 3])
        rows.append({"instruction": f"Repeat: {phrase}", "input": "" if i % 2 else "twice", "output": phrase})
    return rows


def write_json(path: Path, rows: list, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def fast_train(**overrides: Any) -> TrainArgs:
    """Short-run TrainArgs: 6 steps of a global batch of 4 (2 x 2 accumulation), sequences of 32."""
    args = dict(global_batch_size=4, micro_batch_size=2, max_steps=6, max_seq_length=32, lr_warmup_steps=2,
                save_interval=None, log_interval=1, min_lr=1e-4, max_norm=1.0)
    args.update(overrides)
    return TrainArgs(**args)


def fast_eval(**overrides: Any) -> EvalArgs:
    args = dict(interval=1000, max_iters=2, max_new_tokens=4, final_validation=True)
    args.update(overrides)
    return EvalArgs(**args)


OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3, "weight_decay": 0.1}}


def read_metrics(out_dir: Path) -> list[dict[str, float]]:
    from litgpt.train.monitor import read_csv_metrics

    return read_csv_metrics(out_dir / "logs" / "metrics.csv")


def train_losses(out_dir: Path) -> dict[int, float]:
    return {int(r["step"]): r["loss"] for r in read_metrics(out_dir) if "loss" in r}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine two threads can be
    several times slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
