"""LitGPT-style recipe files (tests/fixtures/litgpt_recipes/, one per recipe kind: keys, nesting and value forms
as LitGPT 0.5.x writes them) parse with `--config` and start: run offline, each one gets as far as its data and
stops there with a one-line error that names the download; the recipe naming both model_name and model_config
trains for real. Every training verb also takes each flag LitGPT's has."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import litgpt.__main__ as cli
from litgpt.config import Config
from litgpt.data.base import DataModule
from tests._train_helpers import make_checkpoint, make_corpus, one_thread, tiny_config  # noqa: F401 (autouse)

RECIPES = Path(__file__).resolve().parent / "fixtures" / "litgpt_recipes"
FILES = sorted(RECIPES.glob("*.yaml"))
ROOT = Path(__file__).resolve().parent.parent


def verb_of(path: Path) -> str:
    """The verb a fixture is written for (from its file name)."""
    name = path.stem
    if name.startswith("pretrain"):
        return "pretrain"
    return "finetune_lora" if name == "finetune_qlora" else name


def parse(path: Path, *extra: str) -> dict:
    parser, _ = cli.build_parser(verb_of(path))
    kwargs = parser.instantiate(parser.parse_args(["--config", str(path), *extra])).as_dict()
    kwargs.pop("config", None)
    return kwargs


def test_there_is_a_fixture_per_recipe_kind():
    assert {p.stem for p in FILES} == {
        "finetune_full", "finetune_lora", "finetune_qlora", "finetune_adapter", "finetune_adapter_v2",
        "pretrain_tinyllama", "pretrain_microllama", "pretrain_textfiles", "pretrain_openwebtext",
        "pretrain_model_config",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_recipe_parses_into_the_verbs_arguments(path):
    recipe = yaml.safe_load(path.read_text())
    kwargs = parse(path)
    data = kwargs["data"]
    assert isinstance(data, DataModule)
    expected = recipe["data"] if isinstance(recipe["data"], str) else recipe["data"]["class_path"].rsplit(".", 1)[1]
    assert type(data).__name__ == expected
    for key, value in (recipe["data"].get("init_args", {}) if isinstance(recipe["data"], dict) else {}).items():
        got = getattr(data, key)
        if key == "prompt_style" and not isinstance(got, str):
            got = type(got).__name__.lower()
        assert (str(got) if isinstance(got, Path) else got) == value, key
    for key in ("precision", "devices", "num_nodes", "seed", "logger_name", "quantize", "resume"):
        if key in recipe:
            assert kwargs[key] == recipe[key], key
    for group in ("train", "eval"):
        for key, value in (recipe.get(group) or {}).items():
            assert getattr(kwargs[group], key) == value, f"{group}.{key}"
    kwargs["train"].validate()
    kwargs["eval"].validate()
    optimizer = recipe["optimizer"]
    if isinstance(optimizer, dict):  # YAML 1.1 reads 4e-4 as text; the parser makes it a number, as LitGPT's does
        optimizer = {**optimizer, "init_args": {k: float(v) if isinstance(v, str) else v
                                                for k, v in optimizer["init_args"].items()}}
    assert kwargs["optimizer"] == optimizer
    if verb_of(path) != "pretrain":
        assert str(kwargs["checkpoint_dir"]) == recipe["checkpoint_dir"]


def test_model_config_overrides_model_name():
    path = RECIPES / "pretrain_model_config.yaml"
    kwargs = parse(path)
    assert kwargs["model_name"] == "pythia-14m" and isinstance(kwargs["model_config"], Config)
    from litgpt.pretrain import resolve_config

    with pytest.warns(UserWarning, match="overrides model_name"):
        config = resolve_config(kwargs["model_name"], kwargs["model_config"], None)
    assert (config.name, config.n_layer, config.mlp_class_name, config.padded_vocab_size) == ("tiny-debug", 2, "LLaMAMLP", 256)


def lay_out(path: Path, cwd: Path) -> None:
    """Puts what the recipe's relative paths point to into `cwd`: a tiny checkpoint at checkpoint_dir, a tokenizer
    at tokenizer_dir, text files at a TextFiles folder (data the recipes download stays missing)."""
    recipe = yaml.safe_load(path.read_text())
    for key in ("checkpoint_dir", "tokenizer_dir"):
        if recipe.get(key) and not (cwd / recipe[key]).exists():
            make_checkpoint(cwd / recipe[key], tiny_config(block_size=2048, n_layer=3), seed=1)
    if path.stem == "pretrain_model_config":
        make_corpus(cwd / recipe["data"]["init_args"]["train_data_path"])


@pytest.fixture
def offline(monkeypatch):
    """No network in this process: every socket connection fails at once."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


STOPS_AT_THE_DATA = [p for p in FILES if p.stem not in ("pretrain_model_config", "pretrain_textfiles")]
PREPARED_DATA = ("pretrain_tinyllama", "pretrain_microllama")
"""Recipes whose data LitGPT prepares with a script (no download): they stop at the missing prepared folder."""


@pytest.mark.parametrize("path", STOPS_AT_THE_DATA, ids=lambda p: p.stem)
def test_recipe_starts_and_stops_only_at_the_download(path, tmp_path, monkeypatch, capsys, offline):
    lay_out(path, tmp_path)
    monkeypatch.chdir(tmp_path)
    code = cli.main([verb_of(path), "--config", str(path), "--devices", "1", "--accelerator", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert err[-1].startswith(f"litgpt {verb_of(path)}: error: "), err[-1]
    assert ("prepare" if path.stem in PREPARED_DATA else "download") in err[-1].lower(), err[-1]


def test_text_files_recipe_stops_at_its_missing_folder(tmp_path, monkeypatch, capsys):
    path = RECIPES / "pretrain_textfiles.yaml"
    lay_out(path, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["pretrain", "--config", str(path), "--accelerator", "cpu"]) == 1
    assert "custom_texts/train" in capsys.readouterr().err


def test_recipe_with_model_name_and_model_config_trains(tmp_path, monkeypatch, offline):
    path = RECIPES / "pretrain_model_config.yaml"
    lay_out(path, tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="overrides model_name"):
        assert cli.main(["pretrain", "--config", str(path), "--accelerator", "cpu"]) == 0
    final = tmp_path / "out" / "pretrain" / "debug" / "final"
    assert Config.from_file(final / "model_config.yaml").name == "tiny-debug"


def test_offline_download_error_through_the_cli(tmp_path):
    """The real command line in a subprocess without network: one line that names the download, quickly."""
    path = RECIPES / "finetune_lora.yaml"
    lay_out(path, tmp_path)
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
           "http_proxy": dead, "https_proxy": dead, "PYTHONPATH": str(ROOT), "LITGPT_DEBUG": ""}
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    result = subprocess.run(
        [sys.executable, "-m", "litgpt", "finetune_lora", "--config", str(path), "--devices", "1",
         "--accelerator", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert lines[-1].startswith("litgpt finetune_lora: error: ") and "download" in lines[-1].lower(), lines[-1]
    assert "Traceback" not in result.stderr


# LitGPT 0.5.13's flags per verb (its `--help`), which every verb here takes too
LITGPT_FINETUNE = {"checkpoint_dir", "out_dir", "precision", "devices", "num_nodes", "data", "train", "eval", "log",
                   "optimizer", "logger_name", "seed", "access_token"}
LITGPT_FLAGS = {
    "finetune_full": LITGPT_FINETUNE | {"resume"},
    "finetune_lora": LITGPT_FINETUNE | {"quantize", "lora_r", "lora_alpha", "lora_dropout", "lora_query", "lora_key",
                                        "lora_value", "lora_projection", "lora_mlp", "lora_head"},
    "finetune_adapter": LITGPT_FINETUNE | {"quantize"},
    "finetune_adapter_v2": LITGPT_FINETUNE | {"quantize", "resume"},
    "pretrain": {"model_name", "model_config", "out_dir", "precision", "initial_checkpoint_dir", "resume", "data",
                 "train", "eval", "log", "optimizer", "devices", "num_nodes", "tokenizer_dir", "logger_name", "seed"},
}
LITGPT_LOG = {"project", "run", "group", "teamspace", "metadata", "log_model", "save_logs", "checkpoint_name"}
LITGPT_TRAIN = {"save_interval", "log_interval", "global_batch_size", "micro_batch_size", "lr_warmup_steps",
                "lr_warmup_fraction", "epochs", "max_tokens", "max_steps", "max_time", "max_seq_length",
                "tie_embeddings", "max_norm", "min_lr"}
LITGPT_EVAL = {"interval", "max_new_tokens", "max_iters", "initial_validation", "final_validation", "evaluate_example"}


@pytest.mark.parametrize("verb", sorted(LITGPT_FLAGS) + ["finetune"])
def test_every_training_verb_takes_litgpts_flags(verb, tmp_path):
    import dataclasses
    import inspect

    fn = cli.resolve(verb)
    params = inspect.signature(fn).parameters
    assert LITGPT_FLAGS.get(verb, LITGPT_FLAGS["finetune_lora"]) <= set(params)
    for group, names in (("train", LITGPT_TRAIN), ("eval", LITGPT_EVAL), ("log", LITGPT_LOG)):
        assert names <= {f.name for f in dataclasses.fields(params[group].default)}, group
    # LitGPT's values are accepted: its logger names, its log fields, its quantize modes
    parser, _ = cli.build_parser(verb)
    args = ["--logger_name", "litlogger", "--log.teamspace", "team", "--log.log_model", "true",
            "--log.metadata", '{"a": 1}']
    if verb != "pretrain":
        args = [str(tmp_path), *args]
    cfg = parser.parse_args(args)
    assert cfg.logger_name == "litlogger" and cfg.log.teamspace == "team" and cfg.log.metadata == {"a": 1}


def test_litlogger_fails_in_one_line_before_any_work(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "ckpt", tiny_config(block_size=256))
    code = cli.main(["finetune_full", str(ckpt), "--logger_name", "litlogger", "--out_dir", str(tmp_path / "out"),
                     "--data", "JSON", "--data.json_path", str(tmp_path / "x.json")])
    assert code == 1 and "litlogger" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
