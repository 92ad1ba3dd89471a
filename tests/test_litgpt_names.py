"""LitGPT 0.5.x's public names that users' scripts import from `litgpt`, `litgpt.api`, `litgpt.utils`,
`litgpt.constants` and `litgpt.__main__`: each called with LitGPT's arguments, checking what it returns."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import litgpt
import litgpt.utils as U
from tests._gen_helpers import make_checkpoint, tiny_config


@pytest.fixture
def checkpoint(tmp_path):
    return make_checkpoint(tmp_path / "ckpt")


def test_top_level_names():
    from litgpt.api import LLM
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.prompts import PromptStyle
    from litgpt.tokenizer import Tokenizer

    assert (litgpt.LLM, litgpt.GPT, litgpt.Config, litgpt.Tokenizer, litgpt.PromptStyle) == (
        LLM, GPT, Config, Tokenizer, PromptStyle)
    assert set(litgpt.__all__) >= {"LLM", "GPT", "Config", "Tokenizer", "PromptStyle"}


# ------------------------------------------------------------------------------------------------ LLM


def test_llm_is_a_module_with_the_models_state_dict(checkpoint):
    from litgpt.api import LLM, Preprocessor

    llm = LLM.load(checkpoint, distribute=None)
    assert isinstance(llm, torch.nn.Module)
    keys = list(llm.state_dict())
    assert keys == list(llm.model.state_dict()) and not any(k.startswith("model.") for k in keys)
    before = {k: v.clone() for k, v in llm.state_dict().items()}
    zeros = {k: torch.zeros_like(v) for k, v in before.items()}
    llm.load_state_dict(zeros)
    assert all(torch.count_nonzero(v) == 0 for v in llm.state_dict().values())
    llm.load_state_dict(before)
    assert isinstance(llm.preprocessor, Preprocessor)
    ids = llm.preprocessor.encode("hello world")
    assert ids.dtype in (torch.int32, torch.int64) and llm.preprocessor.decode(ids).strip().endswith("hello world")


def test_llm_forward_returns_logits_or_logits_and_shifted_loss(checkpoint):
    from litgpt.api import LLM

    llm = LLM.load(checkpoint, distribute=None)
    x = torch.randint(0, 256, (2, 9))
    logits = llm(x)
    assert logits.shape == (2, 9, 256)
    logits2, loss = llm(input_ids=x, target_ids=x)
    want = F.cross_entropy(logits2[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    _, custom = llm(x, target_ids=x, loss_fn=lambda lg, tg: lg.sum() * 0 + tg.shape[1])
    assert custom.item() == 8  # the loss function sees the shifted targets


def test_llm_trainer_setup_loads_weights_and_trains(checkpoint, tmp_path):
    from litgpt.api import LLM

    llm = LLM.load(checkpoint, distribute=None)
    saved = torch.load(checkpoint / "lit_model.pth")
    with torch.no_grad():
        llm.model.lm_head.weight.mul_(2)
    assert not torch.equal(llm.state_dict()["lm_head.weight"], saved["lm_head.weight"])
    llm.trainer_setup()
    assert llm.model.training and torch.equal(llm.state_dict()["lm_head.weight"], saved["lm_head.weight"])
    other = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in saved.items()}, other)
    llm.trainer_setup(trainer_ckpt=other)
    assert torch.equal(llm.state_dict()["lm_head.weight"], saved["lm_head.weight"] + 1)
    bare = LLM(llm.model, llm.tokenizer)
    with pytest.raises(ValueError, match="trainer_ckpt"):
        bare.trainer_setup()


def test_llm_trains_with_a_lightning_trainer(checkpoint, tmp_path):
    import lightning as L

    from litgpt.api import LLM

    class LitLLM(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.llm = LLM.load(checkpoint, distribute=None)

        def setup(self, stage):
            self.llm.trainer_setup()

        def training_step(self, batch, batch_idx):
            _, loss = self.llm(input_ids=batch, target_ids=batch)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.llm.model.parameters(), lr=1e-2)

    torch.manual_seed(0)
    data = torch.randint(0, 256, (8, 16))
    module = LitLLM()
    with torch.no_grad():
        start = module.llm(data, target_ids=data)[1].item()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    module.llm.model.eval()
    with torch.no_grad():
        end = module.llm(data, target_ids=data)[1].item()
    assert end < start - 0.1
    out = module.llm.save(tmp_path / "trained")
    assert (out / "lit_model.pth").is_file() and (out / "model_config.yaml").is_file()


def test_llm_save_defaults_to_its_checkpoint_dir(checkpoint):
    from litgpt.api import LLM

    llm = LLM.load(checkpoint, distribute=None)
    with torch.no_grad():
        llm.model.lm_head.weight.add_(1)
    assert llm.save() == checkpoint
    assert torch.equal(torch.load(checkpoint / "lit_model.pth")["lm_head.weight"], llm.model.lm_head.weight)


def test_llm_benchmark_returns_output_and_timings(checkpoint):
    from litgpt.api import LLM

    llm = LLM.load(checkpoint, distribute=None).distribute(accelerator="cpu", precision="32-true")
    text, stats = llm.benchmark(num_iterations=2, prompt="hello", max_new_tokens=3, temperature=0)
    assert isinstance(text, str) and len(stats["Seconds total"]) == 2


# ------------------------------------------------------------------------------------------------ utils


def test_cli_runs_a_function_from_its_signature(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "from litgpt.utils import CLI\n"
        "def main(n: int = 1, name: str = 'x'):\n"
        "    '''A script.\n\n    Args:\n        n: how many.\n        name: a name.\n    '''\n"
        "    print(name * n)\n"
        "CLI(main)\n"
    )
    out = subprocess.run([sys.executable, str(script), "--n", "3", "--name", "ab"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ababab"


def test_chunked_cross_entropy_matches_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 7, 11), torch.randint(0, 11, (2, 7))
    targets[0, :3] = -100
    want = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=-100)
    for chunk in (0, 3, 128):
        torch.testing.assert_close(U.chunked_cross_entropy(logits, targets, chunk_size=chunk), want)
    pieces = [logits[:, :4], logits[:, 4:]]
    torch.testing.assert_close(U.chunked_cross_entropy(pieces, targets, chunk_size=0), want)


def test_cycle_iterator_counts_epochs():
    it = U.CycleIterator([1, 2])
    assert [next(it) for _ in range(5)] == [1, 2, 1, 2, 1] and it.epoch == 2
    assert iter(it) is it


def test_num_parameters_and_estimates():
    config = tiny_config()
    model = litgpt.GPT(config)
    n = U.num_parameters(model)
    assert n == sum(p.numel() for p in model.parameters())
    assert U.num_parameters(model, requires_grad=False) == 0
    estimate = U.estimate_model_memory(config, dtype=torch.bfloat16, training=True)
    assert abs(estimate["param_count"] - n) / n < 0.05
    assert estimate["estimated_total_gb"] >= estimate["param_memory_gb"]
    assert estimate["available_gpu_memory_gb"] is None and estimate["fits_in_memory"] is None
    assert U.estimate_flops(model, training=True) > U.estimate_flops(model, training=False) > 0


def test_checkpoint_dir_helpers(checkpoint, tmp_path, monkeypatch):
    assert U.check_valid_checkpoint_dir(checkpoint) == checkpoint
    assert U.check_valid_checkpoint_dir(checkpoint, verbose=False, raise_error=True, ignore_tokenizer_files=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        U.check_valid_checkpoint_dir(tmp_path)
    (tmp_path / "checkpoints" / "org" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert U.extend_checkpoint_dir(Path("org/m")) == Path("checkpoints/org/m")
    assert U.extend_checkpoint_dir(Path("nowhere")) == Path("nowhere")
    monkeypatch.setenv("LIGHTNING_ARTIFACTS_DIR", "/artifacts")
    assert U.init_out_dir(Path("out/run")) == Path("/artifacts/out/run")
    assert U.init_out_dir(Path("/abs")) == Path("/abs")


def test_copy_config_files_copies_model_config_too(checkpoint, tmp_path):
    out = tmp_path / "copy"
    U.copy_config_files(checkpoint, out)
    assert (out / "model_config.yaml").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "lit_model.pth").exists()
    U.save_config(tiny_config(name="saved"), tmp_path / "cfg")
    assert litgpt.Config.from_file(tmp_path / "cfg" / "model_config.yaml").name == "saved"


def test_load_checkpoint_and_lazy_load(checkpoint):
    model = litgpt.GPT(tiny_config())
    U.load_checkpoint(None, model, checkpoint / "lit_model.pth")
    state = U.lazy_load(checkpoint / "lit_model.pth")
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])
    result = U.validate_checkpoint(checkpoint / "lit_model.pth", model, verbose=False)
    assert result.is_valid and not result.missing_keys
    bigger = litgpt.GPT(tiny_config(n_layer=3))
    result = U.validate_checkpoint(checkpoint / "lit_model.pth", bigger, verbose=False)
    assert not result.is_valid and any(".h.2." in k for k in result.missing_keys)


def test_find_resume_path(tmp_path):
    assert U.find_resume_path(False, tmp_path) is None
    assert U.find_resume_path("auto", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="resume"):
        U.find_resume_path(True, tmp_path)
    for step in (2, 10):
        (tmp_path / f"step-{step:08d}").mkdir()
        torch.save({}, tmp_path / f"step-{step:08d}" / "lit_model.pth")
    assert U.find_resume_path(True, tmp_path) == tmp_path / "step-00000010" / "lit_model.pth"
    assert U.find_resume_path("auto", tmp_path) == tmp_path / "step-00000010" / "lit_model.pth"
    assert U.find_resume_path(tmp_path / "x.pth", tmp_path) == tmp_path / "x.pth"


def test_devices_precision_and_optimizers():
    assert U.parse_devices(2) == 2 and U.parse_devices("auto") >= 1
    with pytest.raises(ValueError, match="devices"):
        U.parse_devices(0)
    assert U.get_default_supported_precision(training=True).endswith("-mixed")
    assert U.get_default_supported_precision(training=False).endswith("-true")
    model = torch.nn.Linear(3, 3)
    adamw = U.instantiate_torch_optimizer("AdamW", model.parameters(), lr=0.1, not_an_arg=1)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 0.1
    sgd = U.instantiate_torch_optimizer({"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}}, model.parameters())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 0.5
    with pytest.raises(ValueError, match="unknown optimizer"):
        U.instantiate_torch_optimizer("Adamm", model.parameters())
    paged = U.instantiate_bnb_optimizer({"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
                                        model.parameters())
    assert type(paged).__name__ == "PagedAdamW" and paged.defaults["lr"] == 0.01


def test_choose_logger(tmp_path):
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    csv = U.choose_logger("csv", tmp_path, "run", log_interval=2)
    assert isinstance(csv, CSVLogger) and Path(csv.log_dir).is_relative_to(tmp_path / "logs")
    assert isinstance(U.choose_logger("tensorboard", tmp_path, "run"), TensorBoardLogger)
    with pytest.raises(ValueError, match="logger_name"):
        U.choose_logger("nope", tmp_path, "run")


def test_hyperparameter_helpers(tmp_path):
    def verb(a: int = 1, b: str = "x", out: Path = Path("o")):
        return U.capture_hparams()

    assert verb(2) == {"a": 2, "b": "x", "out": "o"}

    @dataclasses.dataclass
    class Args:
        lr: float = 0.1

    assert U.get_argument_names(Args) == {"lr"}
    path = U.save_hyperparameters(verb, tmp_path, hparams={"a": 3, "args": Args()})
    import yaml

    assert yaml.safe_load(path.read_text()) == {"a": 3, "args": {"lr": 0.1}}


def test_auto_download_checkpoint_uses_a_local_folder(checkpoint):
    assert U.auto_download_checkpoint(str(checkpoint)) == checkpoint


def test_auto_download_checkpoint_downloads_missing_names(tmp_path, monkeypatch):
    import litgpt.scripts.download as download

    calls = []

    def fake_download(repo_id, access_token=None, checkpoint_dir=Path("checkpoints"), **kwargs):
        calls.append((repo_id, access_token))
        make_checkpoint(Path(checkpoint_dir) / repo_id)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(download, "download_from_hub", fake_download)
    folder = U.auto_download_checkpoint("pythia-14m", access_token="hf_x")
    assert folder == Path("checkpoints/EleutherAI/pythia-14m") and calls == [("EleutherAI/pythia-14m", "hf_x")]
    assert U.auto_download_checkpoint("EleutherAI/pythia-14m") == folder and len(calls) == 1


def test_kill_process_tree():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                               "'import time; time.sleep(60)']); time.sleep(60)"])
    time.sleep(0.5)
    U.kill_process_tree(parent.pid)
    assert parent.wait(timeout=10) != 0


# ------------------------------------------------------------------------------------------------ constants, main


def test_constants_are_requirement_flags():
    import litgpt.constants as C

    assert bool(C._JINJA2_AVAILABLE) and bool(C._SAFETENSORS_AVAILABLE) and bool(C._LITSERVE_AVAILABLE)
    assert "csv" in C._SUPPORTED_LOGGERS
    assert not C._THUNDER_AVAILABLE and "thunder" in str(C._THUNDER_AVAILABLE)


def test_main_help_exits_through_system_exit(capsys):
    from litgpt.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["-h"])
    assert info.value.code == 0 and "verbs" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ remaining modules


def test_parser_config_and_types(tmp_path, monkeypatch):
    import yaml

    from litgpt.parser_config import parser_commands, save_hyperparameters
    from litgpt.types import PathLike

    assert {"pretrain", "finetune_lora", "generate", "validate"} <= set(parser_commands())

    def verb(checkpoint_dir: Path = Path("c"), lr: float = 0.1, steps: int = 3):
        pass

    monkeypatch.setattr(sys, "argv", ["litgpt", "finetune_lora", "--lr", "0.5"])
    save_hyperparameters(verb, tmp_path)
    saved = yaml.safe_load((tmp_path / "hyperparameters.yaml").read_text())
    assert saved["lr"] == "0.5" and saved["steps"] == 3 and sys.argv[1] == "finetune_lora"
    assert PathLike.__args__ == (str, Path)


def test_speculative_decoding_module_streams_the_targets_greedy_tokens():
    from litgpt.generate.base import generate as plain_generate
    from litgpt.generate.speculative_decoding import generate, main

    torch.manual_seed(0)
    target, draft = litgpt.GPT(tiny_config()).eval(), litgpt.GPT(tiny_config(n_layer=1)).eval()
    prompt = torch.tensor([1, 5, 9, 12])
    pieces = list(generate(draft, target, prompt, 12, temperature=0.0, speculative_k=3))
    out = torch.cat(pieces)
    want = plain_generate(target, prompt, 12, temperature=0.0)
    assert torch.equal(out, want.reshape(-1)[: out.numel()]) and out.numel() == 12
    assert callable(main)


def test_lora_legacy_setup_is_the_lora_verb():
    import inspect

    from litgpt.finetune.lora import finetune_lora
    from litgpt.finetune.lora_legacy import setup

    assert setup is finetune_lora
    params = inspect.signature(setup).parameters
    assert {"checkpoint_dir", "out_dir", "lora_r", "lora_alpha", "quantize", "data", "train"} <= set(params)
