"""A newcomer's first hour, more of it, typed into the real CLI (`python -m litgpt VERB ...` in a subprocess):
all argument problems in one line before anything is created, `generate_speculatively` on generate's engine,
tokenized-corpus caches outside the user's text folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._gen_helpers import make_checkpoint, tiny_config
from tests._tokenizers import make_hf_tokenizer
from tests._train_helpers import make_corpus

ROOT = Path(__file__).resolve().parents[1]


def litgpt(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "litgpt", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, verb: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"litgpt {verb}: error: "), proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------- every problem at once
def test_unknown_model_name_and_missing_data_are_reported_together(tmp_path):
    line = one_error_line(litgpt("pretrain", "pythia-14mx", cwd=tmp_path), "pretrain")
    assert "2 problems" in line and "'pythia-14mx' is not a supported config name" in line
    assert "pythia-14m," in line  # its close matches
    assert "--data TextFiles" in line
    assert list(tmp_path.iterdir()) == []  # nothing created (not even out/pretrain)


def test_pretrain_reports_every_bad_argument_and_creates_nothing(tmp_path):
    proc = litgpt("pretrain", "pythia-14mx", "--data", "TextFiles", "--data.train_data_path", "no-texts",
                  "--tokenizer_dir", "no-tokenizer", "--train.micro_batch_size", "0", "--eval.interval", "0",
                  "--out_dir", "run", cwd=tmp_path)
    line = one_error_line(proc, "pretrain")
    assert "5 problems" in line
    for part in ("pythia-14mx", "train.micro_batch_size must be >= 1", "eval.interval must be >= 1",
                 "no-tokenizer", "no-texts"):
        assert part in line
    assert list(tmp_path.iterdir()) == []


def test_finetuning_verbs_report_every_bad_argument_and_create_nothing(tmp_path):
    proc = litgpt("finetune_lora", "no-checkpoint", "--lora_r", "0", "--train.global_batch_size", "3",
                  "--train.micro_batch_size", "2", "--out_dir", "run", cwd=tmp_path)
    line = one_error_line(proc, "finetune_lora")
    assert "3 problems" in line and "lora_r must be an integer >= 1" in line
    assert "checkpoint directory no-checkpoint does not exist" in line and "not a multiple of" in line
    proc = litgpt("finetune_full", "no-checkpoint", "--train.epochs", "0", "--data", "JSON",
                  "--data.json_path", "rows.json", cwd=tmp_path)
    line = one_error_line(proc, "finetune_full")
    assert "3 problems" in line and "train.epochs" in line and "rows.json does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_a_single_problem_is_reported_as_it_is(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    line = one_error_line(litgpt("finetune_full", str(checkpoint), "--train.epochs", "0", cwd=tmp_path),
                          "finetune_full")
    assert "problems" not in line and "train.epochs must be >= 1 (or unset), got 0" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ------------------------------------------------------------------------------- speculative decoding
@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    return (make_checkpoint(root / "draft", tiny_config(), seed=1),
            make_checkpoint(root / "target", tiny_config(n_layer=3), seed=0))


def test_generate_speculatively_is_the_target_greedy_output_with_the_acceptance_rate(two_models, tmp_path):
    draft, target = two_models
    args = ["--prompt", "Hello there", "--max_new_tokens", "16", "--temperature", "0", "--precision", "bf16-true"]
    plain = litgpt("generate", str(target), *args, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    spec = litgpt("generate_speculatively", str(draft), str(target), *args, "--speculative_k", "3", cwd=tmp_path)
    assert spec.returncode == 0, spec.stderr
    assert spec.stdout == plain.stdout
    timing = [line for line in spec.stderr.splitlines() if line.startswith("Time for inference")]
    assert len(timing) == 1 and "tokens/sec" in timing[0] and "acceptance rate" in timing[0]
    assert "bf16-true" in timing[0]
    # the target as its own draft accepts every proposal
    same = litgpt("generate_speculatively", str(target), str(target), *args, cwd=tmp_path)
    assert same.stdout == plain.stdout and "acceptance rate 100.0%" in same.stderr


def test_generate_speculatively_bad_arguments(two_models, tmp_path):
    draft, target = two_models
    line = one_error_line(litgpt("generate_speculatively", str(draft), str(target), "--speculative_k", "0",
                                 cwd=tmp_path), "generate_speculatively")
    assert "speculative_k must be >= 1" in line
    line = one_error_line(litgpt("generate_speculatively", str(draft), "nowhere", cwd=tmp_path),
                          "generate_speculatively")
    assert "nowhere" in line


# ------------------------------------------------------------------------------- caches
def test_pretrain_on_text_files_leaves_the_text_folder_as_it_was(tmp_path):
    texts = make_corpus(tmp_path / "my-texts")
    before = sorted(p.relative_to(texts) for p in texts.rglob("*"))
    make_hf_tokenizer(tmp_path / "tok")
    cache_home = tmp_path / "xdg-cache"
    proc = litgpt(
        "pretrain", "--model_config", '{"name": "tiny", "block_size": 64, "n_layer": 1, "n_embd": 32, "n_head": 4, '
        '"vocab_size": 256, "padding_multiple": 64}', "--tokenizer_dir", str(tmp_path / "tok"),
        "--data", "TextFiles", "--data.train_data_path", str(texts), "--data.num_workers", "1",
        "--train.max_steps", "1", "--train.global_batch_size", "2", "--train.micro_batch_size", "2",
        "--train.max_seq_length", "32", "--train.lr_warmup_steps", "0", "--eval.max_iters", "1",
        "--eval.initial_validation", "false", "--precision", "32-true", "--accelerator", "cpu",
        "--out_dir", str(tmp_path / "run"), cwd=tmp_path, env={"XDG_CACHE_HOME": str(cache_home),
                                                                 "LITGPT_CACHE_DIR": ""},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "run" / "final" / "lit_model.pth").is_file()
    assert sorted(p.relative_to(texts) for p in texts.rglob("*")) == before  # only the user's files
    assert list((cache_home / "litgpt" / "tokenized").glob("*/meta.json"))  # the cache is in the cache folder
