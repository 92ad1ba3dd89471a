"""Every recipe in config_hub/ is parsed by the verb it is written for, and names a model the registry knows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import litgpt.__main__ as cli
from litgpt.config import Config
from litgpt.data.base import DataModule

HUB = Path(__file__).resolve().parent.parent / "config_hub"
PRETRAIN = sorted((HUB / "pretrain").glob("*.yaml"))
FINETUNE = sorted(p for p in (HUB / "finetune").glob("*/*.yaml") if not p.name.startswith("dpo"))  # see test_dpo.py
PEFT_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_query", "lora_key", "lora_value", "lora_projection",
             "lora_mlp", "lora_head", "quantize")


def parse(verb: str, path: Path) -> dict:
    parser, _ = cli.build_parser(verb)
    cfg = parser.parse_args(["--config", str(path)])
    kwargs = parser.instantiate(cfg).as_dict()
    kwargs.pop("config", None)
    return kwargs


def test_the_hub_has_recipes_for_the_main_families():
    assert len(PRETRAIN) >= 5
    families = {p.parent.name for p in FINETUNE}
    assert {"llama-3.2-1b", "mistral-7b", "phi-2", "gemma-2b", "qwen2.5-1.5b", "smollm2-135m"} <= families
    for family in families:
        assert {p.name for p in (HUB / "finetune" / family).glob("*.yaml") if not p.name.startswith("dpo")} == {
            "full.yaml", "lora.yaml", "qlora.yaml"}


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: p.name)
def test_pretrain_recipe_parses(path):
    kwargs = parse("pretrain", path)
    assert isinstance(kwargs["data"], DataModule)
    if kwargs["model_name"] is not None:
        Config.from_name(kwargs["model_name"])
    else:
        assert isinstance(kwargs["model_config"], Config)
    kwargs["train"].validate()
    kwargs["eval"].validate()


@pytest.mark.parametrize("path", FINETUNE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_finetune_recipe_parses(path):
    verb = "finetune_full" if path.name == "full.yaml" else "finetune_lora"
    data = yaml.safe_load(path.read_text())
    if verb == "finetune_lora":
        assert all(key in data for key in PEFT_KEYS)
        assert data["quantize"] == ("bnb.nf4" if path.name == "qlora.yaml" else None)
    kwargs = parse(verb, path)
    assert isinstance(kwargs["data"], DataModule)
    Config.from_name("/".join(Path(kwargs["checkpoint_dir"]).parts[-2:]))  # checkpoints/ORG/NAME is known
    kwargs["train"].validate()
    if verb == "finetune_lora":
        assert (kwargs["lora_r"], kwargs["quantize"]) == (data["lora_r"], data["quantize"])


def test_the_tinyllama_and_microllama_recipes_use_their_corpora_as_litgpts_do():
    assert type(parse("pretrain", HUB / "pretrain" / "tinyllama.yaml")["data"]).__name__ == "TinyLlama"
    assert type(parse("pretrain", HUB / "pretrain" / "microllama.yaml")["data"]).__name__ == "MicroLlama"
