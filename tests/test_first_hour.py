"""A newcomer's mistakes, typed into the real CLI: one clear line before any work, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._gen_helpers import make_checkpoint, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def litgpt(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "litgpt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_mistyped_flag_is_one_line_with_the_closest_flag_and_creates_nothing(checkpoint, tmp_path):
    proc = litgpt("finetune_lora", str(checkpoint), "--lora_rank", "16", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown flag --lora_rank" in lines[0] and "--lora_r" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_mistyped_nested_flag(checkpoint, tmp_path):
    proc = litgpt("generate", str(checkpoint), "--max_new_tokenz", "3", cwd=tmp_path)
    assert proc.returncode == 2 and "--max_new_tokens" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = litgpt("pretrain", "--train.max_stpes", "3", cwd=tmp_path)
    assert proc.returncode == 2 and "--train.max_steps" in proc.stderr


def test_single_stop_string(checkpoint, tmp_path):
    proc = litgpt("generate", str(checkpoint), "--prompt", "Hello", "--max_new_tokens", "5", "--stop", ".",
                  "--precision", "32-true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = litgpt("generate", str(checkpoint), "--prompt", "Hello", "--max_new_tokens", "5", "--stop", '[".", "!"]',
                  "--precision", "32-true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_model_config_file_of_config_fields(tmp_path):
    tiny_config(name="from-a-file").save(tmp_path)
    proc = litgpt("pretrain", "--model_config", str(tmp_path / "model_config.yaml"), "--out_dir", "o",
                  cwd=tmp_path)
    # the config file is accepted: the run stops at the next missing piece (the data), not at the config
    assert proc.returncode == 1 and "class_path" not in proc.stderr and "model_config" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_tokenizer_larger_than_the_embedding_is_caught_at_load(tmp_path):
    ckpt = make_checkpoint(tmp_path / "small", tiny_config(vocab_size=200))  # the tokenizer has 256 tokens
    proc = litgpt("generate", str(ckpt), "--prompt", "Hello", cwd=tmp_path)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()
    assert len(line) == 1 and "256 tokens" in line[0] and "200 embedding rows" in line[0]


def test_ctrl_c_outside_training_is_one_line(checkpoint, tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "litgpt", "chat", str(checkpoint)], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130) and "Traceback" not in err


def test_chat_with_a_budget_larger_than_the_context_is_clamped_once(checkpoint, tmp_path):
    # the tiny model's context is 128 tokens; chat's default max_new_tokens is 512
    proc = subprocess.run([sys.executable, "-m", "litgpt", "chat", str(checkpoint), "--temperature", "0",
                           "--precision", "32-true"], cwd=tmp_path, input="Hi\nHow are you?\nBye\n/quit\n",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("max_new_tokens=512") == 1  # said once, not inside every answer
    assert "Warning" not in proc.stdout + proc.stderr
    assert proc.stdout.count(">> User:") >= 3  # every message got an answer
