"""Ctrl-C / SIGTERM during training (through the real CLI), stale partial saves, the learning rate after a resume
with other arguments, and the compile announcement."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import litgpt.train.loop as loop
from litgpt.data import TextFiles
from litgpt.pretrain import pretrain
from litgpt.train.checkpoint import TRAINING_STATE, load_training_state
from litgpt.train.loader import loader_workers
from tests._tokenizers import make_hf_tokenizer
from tests._train_helpers import (  # noqa: F401 (one_thread is an autouse fixture)
    OPTIMIZER,
    fast_eval,
    fast_train,
    make_corpus,
    one_thread,
    read_metrics,
    tiny_config,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_hf_tokenizer(root / "tok")
    make_corpus(root / "texts")
    tiny_config().save(root)
    return root


def cli_pretrain(corpus: Path, out_dir: Path, *extra: str) -> list[str]:
    litgpt = str(Path(sys.executable).parent / "litgpt")
    return [litgpt, "pretrain", "--model_config", str(corpus / "model_config.yaml"), "--data", "TextFiles",
            "--data.train_data_path", str(corpus / "texts"), "--data.num_workers", "0",
            "--tokenizer_dir", str(corpus / "tok"), "--out_dir", str(out_dir), "--precision", "32-true",
            "--accelerator", "cpu", "--devices", "1", "--train.global_batch_size", "4",
            "--train.micro_batch_size", "4", "--train.max_seq_length", "32", "--train.lr_warmup_steps", "2",
            "--train.save_interval", "100000", "--eval.interval", "100000", "--eval.max_iters", "1",
            "--eval.initial_validation", "false", "--eval.max_new_tokens", "0", *extra]


def wait_for_steps(out_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    path = out_dir / "logs" / "metrics.csv"
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.is_file() and sum(1 for line in path.read_text().splitlines()[1:] if line.strip()) >= n:
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"training logged fewer than {n} steps in {timeout}s")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_resumable_checkpoint_and_prints_the_resume_command(corpus, tmp_path, sig, code):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli_pretrain(corpus, out, "--train.max_steps", "100000"), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_steps(out, 3, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stdout + stderr
    assert "Traceback" not in stderr
    lines = [line for line in (stdout + stderr).splitlines() if "resume with:" in line]
    assert len(lines) == 1
    command = lines[0].split("resume with: ", 1)[1]
    steps = sorted(out.glob("step-*"))
    assert len(steps) == 1 and (steps[0] / TRAINING_STATE).is_file() and (steps[0] / "lit_model.pth").is_file()
    assert command.endswith(f"--resume {steps[0]}") and not (out / "final").exists()
    interrupted_at = load_training_state(steps[0])["state"]["step"]

    # the printed command resumes (with one more flag to end the run soon)
    args = shlex.split(command) + ["--train.max_steps", str(interrupted_at + 2)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Resuming from {steps[0]} at step {interrupted_at}" in done.stdout + done.stderr
    assert (out / "final" / "lit_model.pth").is_file()


def test_second_interrupt_while_saving_aborts_the_save_and_keeps_nothing_partial(corpus, tmp_path, monkeypatch):
    original = loop._Trainer._save_step

    def interrupted_save(self, start_time):
        if self.interrupt.saving:  # the save of the interrupt: a second Ctrl-C arrives in the middle of it
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        return original(self, start_time)

    monkeypatch.setattr(loop._Trainer, "_save_step", interrupted_save)

    def interrupt_after_two_steps(self, micro_batches):
        result = original_step(self, micro_batches)
        if self.state.step == 1:  # the counter is incremented after _step returns: this is the 2nd step
            os.kill(os.getpid(), signal.SIGINT)
        return result

    original_step = loop._Trainer._step
    monkeypatch.setattr(loop._Trainer, "_step", interrupt_after_two_steps)
    with pytest.raises(KeyboardInterrupt) as info:
        pretrain(model_config=tiny_config(), data=TextFiles(corpus / "texts", num_workers=0),
                 tokenizer_dir=corpus / "tok", out_dir=tmp_path / "run", train=fast_train(max_steps=50),
                 eval=fast_eval(initial_validation=False), optimizer=OPTIMIZER, precision="32-true",
                 accelerator="cpu", devices=1)
    assert getattr(info.value, "exit_code", None) == 130 and info.value.checkpoint is None
    assert not any((tmp_path / "run").glob("step-*")) and not any((tmp_path / "run").glob(".*tmp"))


def test_stale_partial_saves_are_removed_with_a_note(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    stale = out / ".step-00000004.abc123.tmp"
    stale.mkdir(parents=True)
    (stale / "lit_model.pth").write_bytes(b"x" * 5000)
    pretrain(model_config=tiny_config(), data=TextFiles(corpus / "texts", num_workers=0),
             tokenizer_dir=corpus / "tok", out_dir=out, train=fast_train(max_steps=1), eval=fast_eval(),
             optimizer=OPTIMIZER, precision="32-true", accelerator="cpu", devices=1)
    assert not stale.exists()
    assert "Removed 1 partial checkpoint folder(s)" in capsys.readouterr().out


def test_learning_rate_after_resume_follows_the_current_arguments(corpus, tmp_path):
    def run(out, max_steps, **train):
        return pretrain(model_config=tiny_config(), data=TextFiles(corpus / "texts", num_workers=0),
                        tokenizer_dir=corpus / "tok", out_dir=out, eval=fast_eval(),
                        train=fast_train(max_steps=max_steps, lr_warmup_steps=1, **train),
                        optimizer=OPTIMIZER, precision="32-true", accelerator="cpu", devices=1, resume="auto")

    run(tmp_path / "cut", 2, save_interval=2)
    run(tmp_path / "cut", 6, save_interval=2)
    run(tmp_path / "full", 6)
    lr = lambda out: {int(r["step"]): r["lr"] for r in read_metrics(out) if "lr" in r}  # noqa: E731
    resumed, fresh = lr(tmp_path / "cut"), lr(tmp_path / "full")
    assert resumed[3] == pytest.approx(fresh[3], rel=1e-9) and resumed[5] == pytest.approx(fresh[5], rel=1e-9)


def test_loader_workers_leave_a_cpu_for_training(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert loader_workers(4) == 1 and loader_workers(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert loader_workers(4) == 4


def test_compile_is_announced_and_speed_excludes_it(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, *args, **kwargs: model)  # the messages, not inductor
    pretrain(model_config=tiny_config(), data=TextFiles(corpus / "texts", num_workers=0),
             tokenizer_dir=corpus / "tok", out_dir=tmp_path / "run", train=fast_train(max_steps=2),
             eval=fast_eval(), optimizer=OPTIMIZER, precision="32-true", accelerator="cpu", devices=1, compile=True)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Compiling the model with torch.compile" in text and "the first step took" in text
