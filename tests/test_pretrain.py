"""`litgpt pretrain` through the CLI: LitGPT's flags, the final folder, continued pretraining, DDP and FSDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import litgpt.__main__ as cli
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer
from litgpt.utils import load_state_dict
from litgpt.checkpoint import load_checkpoint
from tests._tokenizers import make_hf_tokenizer
from tests._train_helpers import one_thread, TINY, make_checkpoint, make_corpus, train_losses  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    make_hf_tokenizer(root / "tok")
    make_corpus(root / "texts")
    (root / "model.yaml").write_text(yaml.safe_dump({"model_config": TINY}))
    return root


ADAMW = '{"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}}'


def tiny_args(files: Path, out: Path, *extra: str, optimizer: str = ADAMW) -> list[str]:
    return [
        "pretrain", "--config", str(files / "model.yaml"), "--tokenizer_dir", str(files / "tok"),
        "--data", "TextFiles", "--data.train_data_path", str(files / "texts"), "--data.num_workers", "1",
        "--train.max_steps", "4", "--train.global_batch_size", "4", "--train.micro_batch_size", "2",
        "--train.max_seq_length", "32", "--train.lr_warmup_steps", "1", "--train.save_interval", "2",
        "--eval.interval", "2", "--eval.max_iters", "8", "--eval.max_new_tokens", "4",
        "--optimizer", optimizer,
        "--precision", "32-true", "--accelerator", "cpu", "--out_dir", str(out), "--seed", "3", *extra,
    ]


def test_final_folder_holds_everything_generate_and_chat_need(files, tmp_path):
    out = tmp_path / "out"
    assert cli.main(tiny_args(files, out, "--devices", "1")) == 0
    final = out / "final"
    names = {p.name for p in final.iterdir()}
    assert {"lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json", "prompt_style.yaml",
            "hyperparameters.yaml"} <= names
    assert "training_state.pth" not in names
    assert {p.name for p in out.iterdir()} >= {"step-00000002", "step-00000004", "final", "logs", "loss.png"}

    config = Config.from_file(final / "model_config.yaml")
    model = GPT(config)
    load_checkpoint(model, final / "lit_model.pth")
    tokenizer = Tokenizer(final)
    from litgpt.generate.engine import generate
    from litgpt.prompts import load_prompt_style

    assert type(load_prompt_style(final)).__name__ == "Default"
    new = generate(model, tokenizer.encode("The "), max_new_tokens=5, temperature=0.0)[0]
    assert new.numel() == 5
    losses = train_losses(out)
    assert sorted(losses) == [1, 2, 3, 4]

    # hyperparameters.yaml is a --config file for the same verb
    again = tmp_path / "again"
    assert cli.main(["pretrain", "--config", str(final / "hyperparameters.yaml"), "--out_dir", str(again)]) == 0
    assert train_losses(again) == losses


def test_resume_refuses_a_different_global_batch(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(tiny_args(files, out, "--devices", "1", "--train.max_steps", "2")) == 0
    code = cli.main(tiny_args(files, out, "--devices", "1", "--resume", "true", "--train.global_batch_size", "2"))
    assert code == 1
    err = capsys.readouterr().err
    assert "global_batch_size=4" in err and "global_batch_size=2" in err


def test_workflow_flags_of_the_benchmark_are_accepted(files, tmp_path):
    """The exact flags `../shared/bench/workflows.py pretrain` passes, with a registry model name."""
    out = tmp_path / "out"
    args = ["pretrain", "pythia-14m", "--tokenizer_dir", str(files / "tok"),
            "--data", "TextFiles", "--data.train_data_path", str(files / "texts"),
            "--data.val_data_path", str(files / "texts"),
            "--train.max_tokens", str(2 * 2 * 32),
            "--train.micro_batch_size", "2", "--train.global_batch_size", "2",
            "--train.max_seq_length", "32", "--train.log_interval", "5",
            "--train.save_interval", "1000000", "--eval.interval", "1000000",
            "--eval.final_validation", "false", "--out_dir", str(out), "--logger_name", "csv", "--devices", "1",
            "--precision", "bf16-mixed", "--accelerator", "cpu"]
    assert cli.main(args) == 0
    config = Config.from_file(out / "final" / "model_config.yaml")
    assert config.name == "pythia-14m" and config.n_layer == 6
    state = torch.load(out / "step-00000002" / "training_state.pth", weights_only=True)
    assert state["state"]["step"] == 2 and state["state"]["tokens"] == 2 * 2 * 32


def test_continued_pretraining_starts_from_the_checkpoint_and_can_tie_embeddings(files, tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", seed=5)
    out = tmp_path / "out"
    # lr 0: one step leaves the weights as loaded
    args = tiny_args(files, out, "--devices", "1", "--train.max_steps", "1", "--train.min_lr", "0",
                     optimizer='{"class_path": "SGD", "init_args": {"lr": 0.0}}')
    args[args.index("--config") : args.index("--config") + 2] = ["--initial_checkpoint_dir", str(ckpt)]
    args.remove("--tokenizer_dir")
    args.remove(str(files / "tok"))
    assert cli.main(args) == 0
    start, end = load_state_dict(ckpt / "lit_model.pth"), load_state_dict(out / "final" / "lit_model.pth")
    assert all(torch.equal(start[k], end[k]) for k in start)

    tied = tmp_path / "tied"
    assert cli.main(tiny_args(files, tied, "--devices", "1", "--train.max_steps", "1", "--train.tie_embeddings", "true")) == 0
    assert Config.from_file(tied / "final" / "model_config.yaml").tie_embeddings
    state = load_state_dict(tied / "final" / "lit_model.pth")
    assert torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])


def _launch(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "litgpt", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert cli.main(tiny_args(files, out, "--devices", "1")) == 0
    torch.set_num_threads(before)
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process_with_the_same_global_batch(files, one_process, tmp_path, strategy):
    two = tmp_path / "two"
    _launch(tiny_args(files, two, "--devices", "2", "--strategy", strategy), cwd=tmp_path)
    assert train_losses(two) == pytest.approx(train_losses(one_process), rel=1e-5)
    a = load_state_dict(one_process / "final" / "lit_model.pth")
    b = load_state_dict(two / "final" / "lit_model.pth")
    assert a.keys() == b.keys()
    for key in a:  # Adam turns float-rounding noise of near-zero gradients into lr-sized steps: compare norms
        assert (a[key] - b[key]).norm() <= 1e-3 * a[key].norm() + 1e-3, key
    # the 2-process checkpoint resumes in 1 process (same global batch, same data order)
    assert cli.main(tiny_args(files, two, "--devices", "1", "--train.max_steps", "5", "--resume", "auto")) == 0
    assert sorted(train_losses(two)) == [1, 2, 3, 4, 5]


def test_the_demo_runs_end_to_end(tmp_path, capsys):
    """`make demo` in 2 steps: corpus, tokenizer, pretraining with validation, PNG, the follow-up commands."""
    from litgpt.demo import main

    assert main(["--out_dir", str(tmp_path / "demo"), "--max_steps", "2", "--max_time", "120"]) == 0
    out = capsys.readouterr().out
    assert "step 0: val loss" in out and "step 2: val loss" in out and "sample:" in out
    assert "litgpt finetune_full" in out and "litgpt convert_from_litgpt" in out
    final = tmp_path / "demo" / "pretrain" / "final"
    assert (final / "lit_model.pth").is_file() and (tmp_path / "demo" / "pretrain" / "loss.png").is_file()
    assert (tmp_path / "demo" / "data" / "topics_sft.json").is_file()
