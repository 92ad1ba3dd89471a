"""The registry of named configs (`litgpt/config_registry.py`) and `Config`'s lookup, override and I/O."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from litgpt.config import Config, name_to_config
from litgpt.config_registry import configs
from litgpt.model import GPT
from litgpt.utils import num_parameters

ALL_NAMES = [entry["name"] for entry in configs]
CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)}


# --------------------------------------------------------------------------------------------------
# The registry as data
def test_registry_is_large_with_unique_names_and_repos():
    assert len(configs) >= 150
    assert len(ALL_NAMES) == len(set(ALL_NAMES)), "duplicate registry names"
    repos = [f"{e['hf_config']['org']}/{e['hf_config']['name']}".lower() for e in configs]
    assert len(repos) == len(set(repos)), "two entries point at the same Hugging Face repository"
    assert set(name_to_config) == set(ALL_NAMES)


@pytest.mark.parametrize("entry", configs, ids=ALL_NAMES)
def test_entries_hold_only_config_fields(entry):
    unknown = set(entry) - CONFIG_FIELDS
    assert not unknown, f"{entry['name']}: not Config fields: {unknown}"
    assert set(entry["hf_config"]) == {"org", "name"}
    config = Config.from_name(entry["name"])
    assert config.name == entry["name"]
    assert config.padded_vocab_size >= config.vocab_size
    assert config.n_head % config.n_query_groups == 0
    assert config.rope_n_elem % 2 == 0
    if config.sliding_window_indices is not None:
        assert len(config.sliding_window_indices) == config.n_layer


def test_every_family_the_brief_names_is_present():
    expected = [
        "pythia-14m", "pythia-31m", "pythia-70m", "pythia-70m-deduped", "pythia-12b", "pythia-12b-deduped",
        "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
        "Llama-2-7b-hf", "Llama-2-7b-chat-hf", "Llama-2-70b-chat-hf",
        "Llama-3-8B", "Llama-3-8B-Instruct", "Llama-3-70B-Instruct",
        "Llama-3.1-8B", "Llama-3.1-8B-Instruct", "Llama-3.1-405B-Instruct",
        "Llama-3.2-1B", "Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct", "Llama-3.3-70B-Instruct",
        "CodeLlama-7b-hf", "CodeLlama-7b-Python-hf", "CodeLlama-7b-Instruct-hf", "CodeLlama-70b-Instruct-hf",
        "Mistral-7B-v0.1", "Mistral-7B-Instruct-v0.1", "Mistral-7B-Instruct-v0.2", "Mistral-7B-Instruct-v0.3",
        "Mixtral-8x7B-v0.1", "Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x22B-v0.1", "Mixtral-8x22B-Instruct-v0.1",
        "Gemma-2b", "Gemma-2b-it", "Gemma-7b", "Gemma-7b-it", "Gemma-2-2b", "Gemma-2-2b-it", "Gemma-2-9b-it",
        "Gemma-2-27b-it", "Gemma-3-1b-it", "Gemma-3-4b-it", "Gemma-3-12b-it", "Gemma-3-27b-it", "Gemma-3-1b-pt",
        "CodeGemma-7b-it", "phi-1_5", "phi-2", "Phi-3-mini-4k-instruct", "Phi-3-mini-128k-instruct",
        "Phi-3.5-mini-instruct", "phi-4",
        "Qwen2.5-0.5B", "Qwen2.5-0.5B-Instruct", "Qwen2.5-72B-Instruct", "Qwen2.5-Coder-32B-Instruct",
        "Qwen2.5-Math-7B-Instruct", "QwQ-32B", "QwQ-32B-Preview",
        "Qwen3-0.6B", "Qwen3-0.6B-Base", "Qwen3-32B", "Qwen3-30B-A3B", "Qwen3-235B-A22B",
        "OLMo-1B-hf", "OLMo-7B-hf", "OLMo-7B-Instruct-hf",
        "OLMo-2-1124-7B", "OLMo-2-1124-7B-SFT", "OLMo-2-1124-7B-DPO", "OLMo-2-1124-13B-Instruct",
        "falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct", "falcon-180B", "falcon-180B-chat",
        "Falcon3-1B-Base", "Falcon3-1B-Instruct", "Falcon3-10B-Instruct",
        "SmolLM2-135M", "SmolLM2-135M-Instruct", "SmolLM2-1.7B-Instruct",
        "tiny-llama-1.1b", "tiny-llama-1.1b-chat", "micro-llama-300M",
        "stablelm-base-alpha-3b", "stablelm-tuned-alpha-7b", "stablelm-3b-4e1t", "stablelm-zephyr-3b",
        "stablecode-completion-alpha-3b", "stablecode-completion-alpha-3b-4k", "stablecode-instruct-alpha-3b",
        "stable-code-3b", "open_llama_3b", "open_llama_13b", "salamandra-2b", "salamandra-7b-instruct",
    ]
    missing = [name for name in expected if name not in name_to_config]
    assert not missing


# --------------------------------------------------------------------------------------------------
# Every config builds; published parameter counts
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_config_builds_on_meta(name):
    config = Config.from_name(name, n_layer=2)
    with torch.device("meta"):
        model = GPT(config)
    assert len(model.transformer.h) == 2
    assert model.lm_head.weight.shape == (config.padded_vocab_size, config.n_embd)
    assert (model.lm_head.weight is model.transformer.wte.weight) == config.tie_embeddings
    assert ("wpe" in model.transformer) == config.learned_pos_embedding


# Total parameters, tied weights counted once. Each number was computed by hand from the architecture
# (embeddings + per layer: attention, MLP, norms + final norm and head) and agrees with the exact figure
# published for the model where one exists (Pythia's table, GPT-2, Llama 2/3, Mistral, Mixtral, Phi,
# Gemma, OLMo, TinyLlama, SmolLM2, Qwen cards). Falcon ties its LM head to the embeddings.
PUBLISHED_PARAMETER_COUNTS = {
    "pythia-14m": 14_067_712,
    "pythia-160m": 162_322_944,
    "pythia-1.4b": 1_414_647_808,
    "pythia-12b": 11_846_072_320,
    "gpt2": 124_439_808,
    "gpt2-xl": 1_557_611_200,
    "Llama-2-7b-hf": 6_738_415_616,
    "Llama-3-8B": 8_030_261_248,
    "Llama-3.2-1B": 1_235_814_400,
    "Qwen2.5-0.5B": 494_032_768,
    "Qwen3-0.6B": 596_049_920,
    "SmolLM2-135M": 134_515_008,
    "Mistral-7B-v0.1": 7_241_732_096,
    "Mixtral-8x7B-v0.1": 46_702_792_704,
    "phi-1_5": 1_418_270_720,
    "phi-2": 2_779_683_840,
    "Gemma-2b": 2_506_172_416,
    "Gemma-2-2b": 2_614_341_888,
    "Gemma-3-1b-it": 999_885_952,
    "falcon-7b": 6_921_720_704,
    "tiny-llama-1.1b": 1_100_048_384,
    "OLMo-1B-hf": 1_176_764_416,
}


@pytest.mark.parametrize(("name", "expected"), list(PUBLISHED_PARAMETER_COUNTS.items()))
def test_parameter_count_matches_published(name, expected):
    with torch.device("meta"):
        model = GPT(Config.from_name(name))
    assert num_parameters(model) == expected


def test_pythia_14m_count_from_the_architecture():
    # embeddings and untied head 2 * 50304 * 128; per layer: qkv and proj with bias, 4x MLP with bias,
    # two LayerNorms (weight + bias); final LayerNorm.
    c, v, layers = 128, 50304, 6
    per_layer = (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c) + 2 * 2 * c
    assert 2 * v * c + layers * per_layer + 2 * c == PUBLISHED_PARAMETER_COUNTS["pythia-14m"]


# --------------------------------------------------------------------------------------------------
# Each registry entry's combination of fields runs: a shrunken copy (same flags, tiny sizes) forwards.
def _shrink(name: str) -> Config:
    full = Config.from_name(name)
    groups = {full.n_head: 4, 1: 1}.get(full.n_query_groups, 2)
    overrides = dict(
        n_layer=2, n_embd=64, n_head=4, n_query_groups=groups, head_size=16, intermediate_size=32,
        vocab_size=96, padded_vocab_size=96, block_size=32,
    )
    if full.moe_intermediate_size:
        overrides["moe_intermediate_size"] = 24
    if full.mlp_class_name == "LLaMAMoE":
        overrides.update(n_expert=4, n_expert_per_token=2)
    if full.sliding_window_size is not None:
        overrides["sliding_window_size"] = 6
    if full.attention_scores_scalar is not None:
        overrides["attention_scores_scalar"] = 16
    if full.rope_adjustments and "original_max_seq_len" in full.rope_adjustments:
        overrides["rope_adjustments"] = dict(full.rope_adjustments, original_max_seq_len=16)
    return Config.from_name(name, **overrides)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_config_runs_a_tiny_forward(name):
    torch.manual_seed(0)
    config = _shrink(name)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (2, 12))
    logits = model(idx)
    assert logits.shape == (2, 12, config.padded_vocab_size)
    assert torch.isfinite(logits).all()


# --------------------------------------------------------------------------------------------------
# Lookup
def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match="'Llama-3.2-1c' is not a supported config name.*Llama-3.2-1B"):
        Config.from_name("Llama-3.2-1c")
    with pytest.raises(ValueError, match="pythia-14m"):
        Config.from_name("pythia-14n")
    with pytest.warns(UserWarning, match="resolved to 'pythia-14m'"):  # another case: resolved, with a note
        assert Config.from_name("pythia-14M").name == "pythia-14m"


def test_lookup_by_hugging_face_repo_id():
    assert Config.from_name("meta-llama/Llama-3.2-1B").name == "Llama-3.2-1B"
    assert Config.from_name("meta-llama/Meta-Llama-3-8B-Instruct").name == "Llama-3-8B-Instruct"
    assert Config.from_name("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T").name == "tiny-llama-1.1b"
    with pytest.warns(UserWarning, match="resolved to 'Qwen3-0.6B'"):  # another case
        assert Config.from_name("qwen/qwen3-0.6b").name == "Qwen3-0.6B"
    for entry in configs:
        repo = f"{entry['hf_config']['org']}/{entry['hf_config']['name']}"
        assert Config.from_name(repo).name == entry["name"]


# --------------------------------------------------------------------------------------------------
# Overrides
def test_overrides_replace_fields_and_shorten_layer_patterns():
    config = Config.from_name("Gemma-2-2b", n_layer=2, block_size=128)
    assert (config.n_layer, config.block_size) == (2, 128)
    assert config.sliding_window_indices == [1, 0]
    config = Config.from_name("Gemma-3-1b-it", n_layer=7)
    assert config.sliding_window_indices == [1, 1, 1, 1, 1, 0, 1]
    assert config.rope_indices == config.sliding_window_indices
    # the registry entry itself is untouched
    assert len(name_to_config["Gemma-2-2b"]["sliding_window_indices"]) == 26
    config = Config.from_name("Gemma-2-2b", n_layer=4, sliding_window_indices=[0, 0, 0, 1])
    assert config.sliding_window_indices == [0, 0, 0, 1]


# --------------------------------------------------------------------------------------------------
# Saving and loading
@pytest.mark.parametrize("name", ["pythia-14m", "gpt2", "Gemma-3-4b-it", "OLMo-1B-hf", "Qwen3-30B-A3B"])
def test_save_and_from_file_round_trip(tmp_path, name):
    config = Config.from_name(name, n_layer=3)
    path = config.save(tmp_path)
    assert path == tmp_path / "model_config.yaml"
    assert Config.from_file(path) == config
    assert Config.from_checkpoint(tmp_path) == config
    assert not list(tmp_path.glob("*.tmp"))


def test_save_writes_extra_fields_only_when_the_registry_cannot_restore_them(tmp_path):
    gemma = Config.from_name("Gemma-2b")
    saved = yaml.safe_load(gemma.save(tmp_path).read_text())
    assert "rmsnorm_add_unit_offset" not in saved and "tie_embeddings" not in saved
    custom = dataclasses.replace(gemma, name="my-gemma")  # not in the registry: extras must be written
    saved = yaml.safe_load(custom.save(tmp_path).read_text())
    assert saved["rmsnorm_add_unit_offset"] is True and saved["tie_embeddings"] is True
    assert Config.from_file(tmp_path / "model_config.yaml") == custom


def _litgpt_style_yaml(path: Path, config: Config) -> Path:
    """What LitGPT 0.5.x writes: every field it knows, none of our explicit extras."""
    data = config.to_dict()
    for key in ("rmsnorm_add_unit_offset", "norm_affine", "learned_pos_embedding", "tie_embeddings"):
        del data[key]
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("Gemma-2b", "rmsnorm_add_unit_offset", True),
        ("Gemma-2-2b-it", "tie_embeddings", True),
        ("gpt2", "learned_pos_embedding", True),
        ("OLMo-7B-hf", "norm_affine", False),
        ("Llama-3.2-1B", "tie_embeddings", True),
    ],
)
def test_litgpt_yaml_without_extra_fields_gets_them_from_the_registry(tmp_path, name, field, value):
    path = _litgpt_style_yaml(tmp_path / "model_config.yaml", Config.from_name(name))
    assert field not in yaml.safe_load(path.read_text())
    config = Config.from_file(path)
    assert getattr(config, field) == value
    assert config == Config.from_name(name)


def test_unknown_field_in_yaml_is_a_clear_error(tmp_path):
    data = Config.from_name("pythia-14m").to_dict()
    data["n_layers"] = 3
    path = tmp_path / "model_config.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="unknown Config field.*n_layers"):
        Config.from_file(path)
    with pytest.raises(FileNotFoundError):
        Config.from_file(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------------
# Spot checks of family-specific fields (values from the models' config.json)
@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("pythia-6.9b", dict(padded_vocab_size=50432, rotary_percentage=0.25, parallel_residual=True)),
        ("gpt2", dict(block_size=1024, rotary_percentage=0.0, gelu_approximate="tanh", padded_vocab_size=50257)),
        ("Llama-3.1-8B", dict(block_size=131072, rope_base=500000, padded_vocab_size=128256,
                              rope_adjustments=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                    original_max_seq_len=8192))),
        ("Llama-3.2-3B-Instruct", dict(n_layer=28, n_head=24, tie_embeddings=True)),
        ("CodeLlama-7b-hf", dict(padded_vocab_size=32016, rope_base=1000000, block_size=16384)),
        ("CodeLlama-34b-Python-hf", dict(padded_vocab_size=32000, n_query_groups=8)),
        ("Mistral-7B-v0.1", dict(sliding_window_size=4096, sliding_window_indices=[1] * 32)),
        ("Mistral-7B-Instruct-v0.2", dict(sliding_window_size=None, rope_base=1000000)),
        ("Mistral-7B-v0.3", dict(padded_vocab_size=32768)),
        ("Mixtral-8x22B-v0.1", dict(n_expert=8, n_expert_per_token=2, block_size=65536)),
        ("Gemma-7b", dict(head_size=256, n_query_groups=16, scale_embeddings=True, mlp_class_name="GemmaMLP")),
        ("Gemma-2-27b", dict(head_size=128, attention_scores_scalar=144, attention_logit_softcapping=50.0,
                             final_logit_softcapping=30.0, post_mlp_norm=True)),
        ("Gemma-3-27b-it", dict(head_size=128, attention_scores_scalar=168, sliding_window_size=1024,
                                rope_local_base_freq=10000, rope_adjustments=dict(factor=8.0), norm_qk=True)),
        ("Gemma-3-1b-it", dict(sliding_window_size=512, rope_adjustments=None, block_size=32768)),
        ("phi-1_5", dict(rotary_percentage=0.5, shared_attention_norm=True, lm_head_bias=True)),
        ("phi-2", dict(rotary_percentage=0.4, padded_vocab_size=51200)),
        ("Phi-3-mini-4k-instruct", dict(sliding_window_size=2047, padded_vocab_size=32064)),
        ("phi-4", dict(n_query_groups=10, rope_base=250000, padded_vocab_size=100352)),
        ("Qwen2.5-7B-Instruct", dict(attn_bias=True, bias=False, padded_vocab_size=152064, block_size=32768)),
        ("Qwen2.5-Math-1.5B", dict(rope_base=10000, block_size=4096, tie_embeddings=True)),
        ("Qwen3-8B", dict(norm_qk=True, head_size=128, tie_embeddings=False, block_size=40960)),
        ("Qwen3-235B-A22B", dict(n_expert=128, n_expert_per_token=8, moe_intermediate_size=1536,
                                 norm_topk_prob=False)),
        ("OLMo-2-1124-13B", dict(norm_1=False, norm_2=False, norm_qk_type="olmo2", post_attention_norm=True)),
        ("falcon-7b", dict(n_query_groups=1, shared_attention_norm=True, head_size=64)),
        ("falcon-40b", dict(n_query_groups=8, shared_attention_norm=False, parallel_residual=True)),
        ("Falcon3-7B-Base", dict(head_size=256, rope_base=1000042, padded_vocab_size=131072)),
        ("stablelm-3b-4e1t", dict(rotary_percentage=0.25, norm_class_name="LayerNorm", parallel_residual=False)),
        ("stablelm-base-alpha-3b", dict(padded_vocab_size=50688, parallel_residual=True)),
    ],
)
def test_family_fields(name, fields):
    config = Config.from_name(name)
    for key, value in fields.items():
        assert getattr(config, key) == value, f"{name}.{key}"


def test_gemma_sliding_layouts():
    gemma2 = Config.from_name("Gemma-2-9b")
    assert [gemma2.is_sliding_layer(i) for i in range(4)] == [True, False, True, False]
    gemma3 = Config.from_name("Gemma-3-12b-it")
    layout = [gemma3.is_sliding_layer(i) for i in range(gemma3.n_layer)]
    assert layout[:6] == [True] * 5 + [False] and layout.count(False) == gemma3.n_layer // 6
    assert [gemma3.uses_local_rope(i) for i in range(gemma3.n_layer)] == layout


def test_tutorial_yaml_example_loads(tmp_path):
    doc = (Path(__file__).parents[1] / "tutorials" / "models.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my-tiny-llama.yaml"
    path.write_text(block)
    config = Config.from_file(path)
    assert (config.name, config.n_query_groups, config.mlp_class_name) == ("my-tiny-llama", 2, "LLaMAMLP")
    with torch.device("meta"):
        GPT(config)
