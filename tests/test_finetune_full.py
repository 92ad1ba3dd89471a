"""`litgpt finetune_full`: instruction data in, a checkpoint folder with the data's prompt style out."""

from __future__ import annotations

import pytest
import torch

import litgpt.__main__ as cli
from litgpt.finetune.full import finetune_full
from litgpt.data import JSON
from litgpt.prompts import load_prompt_style
from litgpt.train.args import EvalArgs, TrainArgs
from litgpt.utils import load_state_dict
from tests._train_helpers import (  # noqa: F401 (one_thread is an autouse fixture)
    make_checkpoint,
    make_sft_rows,
    one_thread,
    read_metrics,
    tiny_config,
    train_losses,
    write_json,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_config(block_size=256), seed=1)


def test_finetune_full_learns_the_data_and_writes_a_complete_checkpoint(checkpoint, tmp_path, capsys):
    data = write_json(tmp_path / "sft.jsonl", make_sft_rows(12), jsonl=True)
    out = tmp_path / "out"
    args = ["finetune_full", str(checkpoint), "--data", "JSON", "--data.json_path", str(data),
            "--data.val_split_fraction", "0.25", "--data.mask_prompt", "true", "--data.num_workers", "0",
            "--data.prompt_style", "chatml",
            "--train.epochs", "4", "--train.global_batch_size", "3", "--train.micro_batch_size", "3",
            "--train.lr_warmup_steps", "1", "--train.max_seq_length", "96", "--train.min_lr", "0",
            "--eval.interval", "6", "--eval.max_new_tokens", "3",
            "--optimizer", '{"class_path": "AdamW", "init_args": {"lr": 0.01}}',
            "--precision", "32-true", "--accelerator", "cpu", "--out_dir", str(out)]
    assert cli.main(args) == 0
    losses = train_losses(out)
    assert len(losses) == 4 * 3  # 9 training rows -> 3 steps per epoch
    assert losses[12] < losses[1] - 0.5
    vals = [r["val_loss"] for r in read_metrics(out) if "val_loss" in r]
    assert len(vals) == 2 and vals[-1] < vals[0]
    final = out / "final"
    assert type(load_prompt_style(final)).__name__ == "ChatML"
    before, after = load_state_dict(checkpoint / "lit_model.pth"), load_state_dict(final / "lit_model.pth")
    assert before.keys() == after.keys() and not torch.equal(before["transformer.h.0.attn.qkv.weight"],
                                                             after["transformer.h.0.attn.qkv.weight"])
    assert {"tokenizer.json", "model_config.yaml", "generation_config.json"} <= {p.name for p in final.iterdir()}
    assert "<|im_start|>" in capsys.readouterr().out  # the sample's prompt is in the chat format


def test_a_json_folder_with_train_and_val_files(checkpoint, tmp_path):
    rows = make_sft_rows(10)
    write_json(tmp_path / "data" / "train.json", rows[:8])
    write_json(tmp_path / "data" / "val.jsonl", rows[8:], jsonl=True)
    out = finetune_full(
        checkpoint, out_dir=tmp_path / "out", data=JSON(tmp_path / "data", num_workers=0),
        train=TrainArgs(max_steps=2, global_batch_size=4, micro_batch_size=2, lr_warmup_steps=0, save_interval=None,
                        max_seq_length=224),
        eval=EvalArgs(max_new_tokens=0), precision="32-true", accelerator="cpu",
    )
    assert (out / "lit_model.pth").is_file()
    assert type(load_prompt_style(out)).__name__ == "Alpaca"


def test_a_missing_checkpoint_fails_in_one_line(tmp_path, capsys):
    code = cli.main(["finetune_full", str(tmp_path / "nope"), "--data", "JSON", "--data.json_path", "x.json",
                     "--out_dir", str(tmp_path / "out")])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
