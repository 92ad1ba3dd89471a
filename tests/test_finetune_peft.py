"""`litgpt finetune_lora` / `finetune_adapter` / `finetune_adapter_v2`, `merge_lora` and `export_peft` end to end on a
tiny model: the loss goes down, step folders hold only the PEFT tensors, the final folder loads like any
checkpoint, resume is exact, QLoRA runs on the CPU, and bad input fails in one line before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import litgpt.__main__ as cli
import litgpt.train.loop as loop
from litgpt import GPT, LLM
from litgpt.adapter import ADAPTER_CONFIG, ADAPTER_FILE, AdapterSettings, inject_adapter
from litgpt.config import Config
from litgpt.lora import LORA_FILE, LoRASettings, inject_lora
from litgpt.train.checkpoint import TRAINING_STATE
from litgpt.utils import load_state_dict
from tests._train_helpers import (  # noqa: F401 (one_thread is an autouse fixture)
    make_checkpoint,
    make_sft_rows,
    one_thread,
    tiny_config,
    train_losses,
    write_json,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_config(block_size=256), seed=1)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_json(tmp_path_factory.mktemp("data") / "sft.jsonl", make_sft_rows(12), jsonl=True)


def args(verb: str, checkpoint: Path, data: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    """CLI arguments of a short run: 9 training rows, 3 steps per epoch, a checkpoint every 2 steps."""
    return [verb, str(checkpoint), "--data", "JSON", "--data.json_path", str(data),
            "--data.val_split_fraction", "0.25", "--data.num_workers", "0",
            "--train.epochs", str(epochs), "--train.global_batch_size", "3", "--train.micro_batch_size", "3",
            "--train.lr_warmup_steps", "1", "--train.max_seq_length", "96", "--train.min_lr", "0",
            "--train.save_interval", "2", "--eval.interval", "100", "--eval.max_new_tokens", "0",
            "--optimizer", '{"class_path": "AdamW", "init_args": {"lr": 0.02}}',
            "--precision", "32-true", "--accelerator", "cpu", "--out_dir", str(out), *extra]


def base_model(checkpoint: Path) -> GPT:
    model = GPT(Config.from_file(checkpoint / "model_config.yaml"))
    model.load_state_dict(load_state_dict(checkpoint / "lit_model.pth"))
    return model.eval()


def test_lora_run_lowers_the_loss_saves_small_steps_and_a_merged_final_folder(checkpoint, data_file, tmp_path):
    out = tmp_path / "out"
    assert cli.main(args("finetune_lora", checkpoint, data_file, out, "--lora_r", "4", "--lora_alpha", "8",
                         "--lora_mlp", "true", "--lora_head", "true", "--lora_dropout", "0", epochs=4)) == 0
    losses = train_losses(out)
    assert len(losses) == 12 and losses[12] < losses[1] - 0.5
    step = out / "step-00000002"
    assert (step / LORA_FILE).is_file() and (step / TRAINING_STATE).is_file() and not (step / "lit_model.pth").exists()
    lora = load_state_dict(step / LORA_FILE)
    assert lora and all(k.endswith((".lora_A", ".lora_B")) for k in lora)
    assert (step / LORA_FILE).stat().st_size < (checkpoint / "lit_model.pth").stat().st_size / 2
    hparams = yaml.safe_load((step / "hyperparameters.yaml").read_text())
    settings = LoRASettings.from_hyperparameters(hparams)
    assert (settings.r, settings.alpha, settings.mlp, settings.head) == (4, 8, True, True)

    # the final folder: merged weights that equal the base model with the trained LoRA tensors
    final = out / "final"
    assert {"lit_model.pth", LORA_FILE, "model_config.yaml", "tokenizer.json", "prompt_style.yaml"} <= {
        p.name for p in final.iterdir()}
    unmerged = base_model(checkpoint)
    inject_lora(unmerged, settings)
    unmerged.load_state_dict(load_state_dict(final / LORA_FILE), strict=False)
    x = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(0))
    llm = LLM.load(str(final), distribute=None)  # the same code path as any checkpoint
    with torch.no_grad():
        expected = unmerged(x)
        torch.testing.assert_close(llm.model(x), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(base_model(checkpoint)(x), expected, atol=1e-3)

    # a step folder: generate needs the merged weights; `litgpt merge_lora` writes them
    assert cli.main(["generate", str(step), "--prompt", "hi"]) == 1
    assert cli.main(["merge_lora", str(step)]) == 0
    merged = LLM.load(str(step), distribute=None)
    unmerged.load_state_dict(lora, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(merged.model(x), unmerged(x), atol=1e-5, rtol=1e-5)


class _Crash(Exception):
    pass


def test_resume_of_a_lora_run_equals_the_uninterrupted_run(checkpoint, data_file, tmp_path, monkeypatch):
    extra = ("--lora_r", "4", "--lora_dropout", "0.1", "--lora_key", "true")
    assert cli.main(args("finetune_lora", checkpoint, data_file, tmp_path / "full", *extra)) == 0

    original = loop._Trainer._save_step

    def crash_after_step_4(self, start_time):
        original(self, start_time)
        if self.state.step == 4:
            raise _Crash

    monkeypatch.setattr(loop._Trainer, "_save_step", crash_after_step_4)
    with pytest.raises(_Crash):
        cli.main(args("finetune_lora", checkpoint, data_file, tmp_path / "cut", *extra))
    monkeypatch.setattr(loop._Trainer, "_save_step", original)
    assert cli.main(args("finetune_lora", checkpoint, data_file, tmp_path / "cut", *extra, "--resume", "auto")) == 0

    expected, got = train_losses(tmp_path / "full"), train_losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 7)) and got == expected  # steps 5-6 computed after the restart
    a, b = (load_state_dict(tmp_path / run / "final" / LORA_FILE) for run in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_qlora_nf4_trains_on_the_cpu_and_writes_full_precision_merged_weights(checkpoint, data_file, tmp_path):
    import bitsandbytes  # noqa: F401 (a test dependency: missing means failing)
    out = tmp_path / "out"
    assert cli.main(args("finetune_lora", checkpoint, data_file, out, "--quantize", "bnb.nf4", "--precision",
                         "bf16-true", epochs=1)) == 0
    losses = train_losses(out)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    base, merged = load_state_dict(checkpoint / "lit_model.pth"), load_state_dict(out / "final" / "lit_model.pth")
    assert merged.keys() == base.keys()
    assert all(merged[k].dtype == base[k].dtype for k in base)
    assert torch.equal(merged["transformer.h.0.mlp.fc.weight"], base["transformer.h.0.mlp.fc.weight"])
    assert not torch.equal(merged["transformer.h.0.attn.qkv.weight"], base["transformer.h.0.attn.qkv.weight"])


@pytest.mark.parametrize("verb, version", [("finetune_adapter", "v1"), ("finetune_adapter_v2", "v2")])
def test_adapter_runs_learn_and_their_final_folder_loads_like_any_checkpoint(verb, version, checkpoint, data_file,
                                                                             tmp_path):
    out = tmp_path / "out"
    assert cli.main(args(verb, checkpoint, data_file, out, "--adapter_start_layer", "1", "--adapter_prompt_length",
                         "4", epochs=3)) == 0
    losses = train_losses(out)
    assert losses[9] < losses[1]
    step, final = out / "step-00000002", out / "final"
    assert (step / ADAPTER_FILE).is_file() and not (step / "lit_model.pth").exists()
    assert yaml.safe_load((final / ADAPTER_CONFIG).read_text())["method"] == verb.removeprefix("finetune_")
    trained = load_state_dict(final / ADAPTER_FILE)
    assert any(k.endswith("adapter_gate") for k in trained)
    assert any(k.endswith("norm_1.weight") for k in trained) == (version == "v2")
    expected_model = base_model(checkpoint)
    inject_adapter(expected_model, AdapterSettings(version, 4, 1))
    expected_model.load_state_dict(trained, strict=False)
    llm = LLM.load(str(final), distribute=None)
    x = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(llm.model(x), expected_model(x))
    assert cli.main(["generate", str(final), "--prompt", "hello", "--max_new_tokens", "3",
                     "--precision", "32-true"]) == 0
    assert cli.main(["merge_lora", str(step)]) == 0  # a step folder becomes a full checkpoint as well
    assert LLM.load(str(step), distribute=None).model.transformer.h[1].attn.adapter_prefix.shape == (4, 32)


@pytest.mark.parametrize(
    "verb, extra, message",
    [
        ("finetune_lora", ["--lora_r", "0"], "lora_r must be an integer >= 1"),
        ("finetune_lora", ["--lora_query", "false", "--lora_value", "false"], "no LoRA target is enabled"),
        ("finetune_lora", ["--quantize", "bnb.nf4", "--precision", "bf16-mixed"], "cannot train with --precision bf16-mixed"),
        ("finetune_adapter", ["--adapter_start_layer", "2"], "leaves no layer for the adapter prefix"),
        ("finetune_lora", ["PEFT_STEP"], "litgpt merge_lora"),
        ("finetune_adapter_v2", ["ADAPTER_FINAL"], "adapter finetuning checkpoint"),
        ("finetune_full", ["ADAPTER_FINAL"], "adapter finetuning checkpoint"),
    ],
)
def test_bad_input_fails_in_one_line_before_writing_anything(verb, extra, message, checkpoint, data_file, tmp_path,
                                                             capsys):
    ckpt = checkpoint
    if extra and extra[0] in ("PEFT_STEP", "ADAPTER_FINAL"):
        ckpt = tmp_path / "peft"
        ckpt.mkdir()
        for name in ("model_config.yaml", "tokenizer.json", "tokenizer_config.json"):
            (ckpt / name).write_bytes((checkpoint / name).read_bytes())
        if extra[0] == "PEFT_STEP":
            (ckpt / LORA_FILE).write_bytes(b"")
        else:
            (ckpt / "lit_model.pth").write_bytes((checkpoint / "lit_model.pth").read_bytes())
            (ckpt / ADAPTER_CONFIG).write_text("method: adapter\n")
        extra = []
    out = tmp_path / "out"
    assert cli.main(args(verb, ckpt, data_file, out, *extra)) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_merge_and_export_name_what_is_missing(checkpoint, tmp_path, capsys):
    assert cli.main(["merge_lora", str(checkpoint)]) == 1
    assert "has no lit_model.pth.lora" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / LORA_FILE).write_bytes(b"")
    (run / "model_config.yaml").write_bytes((checkpoint / "model_config.yaml").read_bytes())
    (run / "hyperparameters.yaml").write_text(yaml.safe_dump({"checkpoint_dir": str(tmp_path / "gone"),
                                                              **LoRASettings().to_hyperparameters()}))
    assert cli.main(["merge_lora", str(run)]) == 1
    assert "recorded in" in capsys.readouterr().err and not (run / "lit_model.pth").exists()
    assert cli.main(["export_peft", str(checkpoint)]) == 1
    assert "has no lit_model.pth.lora" in capsys.readouterr().err


def test_a_folder_of_peft_weights_only_points_to_merge_lora(tmp_path):
    from litgpt.utils import check_valid_checkpoint_dir

    step = tmp_path / "step-000010"
    step.mkdir()
    (step / "model_config.yaml").write_text("name: tiny\n")
    (step / "lit_model.pth.lora").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"only finetuned PEFT weights: run `litgpt merge_lora .*step-000010` first"):
        check_valid_checkpoint_dir(step)
