"""The registry against LitGPT 0.5.13's, recorded from outside in `tests/fixtures/`:

* `litgpt_registry_names.txt`: the keys of LitGPT's `litgpt.config.name_to_config`;
* `litgpt_download_list.txt`: the repository ids `litgpt download list` prints;
* `litgpt_registry_configs.json`: for every name, the fields of LitGPT's `Config.from_name(name)` that differ
  from its `Config` defaults, and what `Config.from_name(name, n_head=..)` and similar overrides derive.

Every LitGPT name must exist here with the same fields, except the deviations listed in `DEVIATIONS`, each
with the reason (the published Hugging Face `config.json` says otherwise, or the value makes no difference).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from litgpt.config import Config, name_to_config
from litgpt.model import GPT, LLaMAMoE
from litgpt.scripts.download import supported_repo_ids

FIXTURES = Path(__file__).parent / "fixtures"
LITGPT_NAMES = (FIXTURES / "litgpt_registry_names.txt").read_text().split()
LITGPT_REPOS = (FIXTURES / "litgpt_download_list.txt").read_text().split()
LITGPT = json.loads((FIXTURES / "litgpt_registry_configs.json").read_text())


def _names(prefixes: tuple[str, ...]) -> list[str]:
    return [n for n in LITGPT_NAMES if n.startswith(prefixes)]


# name -> {field: why our value differs from LitGPT 0.5.13's}
DEVIATIONS: dict[str, dict[str, str]] = {}


def _deviate(names: list[str], reason: str, *fields: str) -> None:
    assert names, reason
    for name in names:
        DEVIATIONS.setdefault(name, {}).update({f: reason for f in fields})


_deviate(_names(("Gemma-", "CodeGemma-")), "rms_norm_eps of config.json is 1e-6 (LitGPT keeps its 1e-5 default)",
         "norm_eps")
_deviate(["Qwen2.5-14B-Instruct", "Qwen2.5-32B-Instruct", "Qwen2.5-72B-Instruct", "Qwen2.5-Coder-14B-Instruct",
          "Qwen2.5-Coder-32B-Instruct", "Qwen2.5-Math-72B", "Qwen2.5-Math-72B-Instruct"],
         "rms_norm_eps of config.json is 1e-6", "norm_eps")
_deviate(["Gemma-2b", "Gemma-2b-it", "Gemma-7b", "Gemma-7b-it", "CodeGemma-7b-it", "Gemma-3-1b-it",
          "CodeLlama-13b-Instruct-hf", "Falcon3-1B-Instruct", "Falcon3-3B-Base", "LLaMA-2-7B-32K",
          "Mistral-7B-v0.1", "Mistral-7B-Instruct-v0.1", "Phi-3.5-mini-instruct",
          "Qwen2.5-1.5B-Instruct", "Qwen2.5-7B-Instruct", "Qwen2.5-14B-Instruct", "Qwen2.5-32B-Instruct",
          "Qwen2.5-72B-Instruct", "Qwen3-0.6B-Base", "Qwen3-1.7B-Base", "Qwen3-4B-Base", "Qwen3-8B-Base",
          "Qwen3-14B-Base", "Qwen3-30B-A3B-Base"],
         "block_size is max_position_embeddings of config.json", "block_size")
_deviate(["Gemma-3-4b-it", "Gemma-3-12b-it", "Gemma-3-27b-it"],
         "the checkpoints have 262208 embedding rows (64 image tokens)", "padded_vocab_size")
_deviate(["CodeLlama-70b-Instruct-hf"], "config.json: 4096 positions, RoPE base 1e4, 32016 tokens",
         "block_size", "rope_base", "vocab_size")
_deviate(["stable-code-3b"], "config.json: rope_theta 1e6", "rope_base")
_deviate(["Platypus2-70B"], "a Llama-2-70B fine-tune: 8 key/value heads (LitGPT's entry has 64)", "n_query_groups")
_deviate(["Phi-3-mini-4k-instruct"], "config.json: sliding_window 2047", "sliding_window_size")
_deviate(["Phi-3-mini-128k-instruct", "Phi-4-mini-instruct", "Phi-4-mini-reasoning"],
         "LitGPT's window (262145) exceeds block_size: no window is the same model, without a mask",
         "sliding_window_size", "sliding_window_indices")


def test_every_litgpt_name_is_in_the_registry():
    missing = sorted(set(LITGPT_NAMES) - set(name_to_config))
    assert not missing
    assert len(LITGPT_NAMES) >= 210


def test_download_list_covers_litgpt_repositories():
    assert set(LITGPT_REPOS) <= set(supported_repo_ids())


def test_download_list_cli_prints_every_litgpt_repository():
    out = subprocess.run(
        [sys.executable, "-m", "litgpt", "download", "list"], capture_output=True, text=True, timeout=120, check=True
    )
    printed = set(out.stdout.split())
    assert set(LITGPT_REPOS) <= printed


@pytest.mark.parametrize("name", sorted(LITGPT["configs"]))
def test_fields_match_litgpt(name):
    ours = Config.from_name(name).to_dict()
    theirs = dict(LITGPT["defaults"], **LITGPT["configs"][name])
    allowed = DEVIATIONS.get(name, {})
    differing = {k: (theirs[k], ours[k]) for k in theirs if ours[k] != theirs[k] and k not in allowed}
    assert not differing, f"{name}: (LitGPT, ours) {differing}"
    stale = [k for k in allowed if ours[k] == theirs[k]]
    assert not stale, f"{name}: listed as deviating but equal: {stale}"


def _override(config: Config, label: str) -> dict:
    return {
        "n_head/2": dict(n_head=config.n_head // 2),
        "n_embd/2": dict(n_embd=config.n_embd // 2),
        "n_head=n_query_groups": dict(n_head=config.n_query_groups),
        "n_layer=2": dict(n_layer=2),
    }[label]


@pytest.mark.parametrize("name", sorted(LITGPT["overrides"]))
def test_overrides_derive_what_litgpt_derives(name):
    """`Config.from_name(name, n_head=...)`: head_size and n_query_groups follow as in LitGPT. Where LitGPT
    fails with a bare AssertionError we raise ValueError, or (MHA entries LitGPT stores with an explicit
    n_query_groups) derive the consistent config."""
    base = Config.from_name(name)
    for label, expected in LITGPT["overrides"][name].items():
        if name in DEVIATIONS and "n_query_groups" in DEVIATIONS[name]:
            continue
        try:
            config = Config.from_name(name, **_override(base, label))
        except ValueError:
            assert expected == "AssertionError", f"{name} {label}: LitGPT gives {expected}"
            continue
        got = dict(head_size=config.head_size, n_query_groups=config.n_query_groups, n_head=config.n_head,
                   n_embd=config.n_embd)
        if expected == "AssertionError":
            assert base.n_query_groups == base.n_head and config.n_query_groups == config.n_head, (name, label)
        else:
            assert got == expected, f"{name} {label}"


# --------------------------------------------------------------------------------------------------
# Names
def test_hugging_face_spellings_resolve_like_litgpt():
    assert Config.from_name("gemma-2-2b").name == "Gemma-2-2b"
    assert Config.from_name("google/gemma-2-2b").name == "Gemma-2-2b"
    assert Config.from_name("Meta-Llama-3-8B").name == "Llama-3-8B"
    assert Config.from_name("meta-llama/Meta-Llama-3-8B").name == "Llama-3-8B"
    assert Config.from_name("DeepSeek-R1-Distill-Llama-8B").name == "R1-Distill-Llama-8B"
    assert Config.from_name("mathstral-7B-v0.1").name == "Mathstral-7B-v0.1"
    # repositories renamed on the Hub: both ids
    assert Config.from_name("meta-llama/Llama-3.1-8B").name == "Llama-3.1-8B"
    assert Config.from_name("meta-llama/Meta-Llama-3.1-8B").name == "Llama-3.1-8B"
    assert Config.from_name("mistral-community/Mistral-7B-v0.2").name == "Mistral-7B-v0.2"


def test_exact_names_resolve_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in LITGPT_NAMES:
            assert Config.from_name(name).name == name


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("gemma-2-2B", "Gemma-2-2b"), ("pythia-14M", "pythia-14m"), ("llama-3-8b", "Llama-3-8B"),
     ("QWEN3-4B-INSTRUCT-2507", "Qwen3-4B-Instruct-2507"), ("GOOGLE/GEMMA-2-2B", "Gemma-2-2b")],
)
def test_other_case_resolves_with_a_warning(spelling, name):
    with pytest.warns(UserWarning, match=f"{spelling!r} resolved to {name!r}"):
        assert Config.from_name(spelling).name == name


def test_unknown_name_is_a_value_error_with_close_matches():
    expected = r"'Qwen3-4B-Instruct-2508' is not a supported config name.*Qwen3-4B-Instruct-2507"
    with pytest.raises(ValueError, match=expected):
        Config.from_name("Qwen3-4B-Instruct-2508")
    with pytest.raises(ValueError, match="not a supported config name.*litgpt download list"):
        Config.from_name("no-such-model-anywhere")
    with pytest.raises(ValueError):
        Config.from_name("")


# --------------------------------------------------------------------------------------------------
# New entries: spot checks of the published values
@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("R1-Distill-Llama-8B", dict(n_layer=32, n_query_groups=8, rope_base=500000, padded_vocab_size=128256)),
        ("R1-Distill-Llama-70B", dict(n_layer=80, n_embd=8192, intermediate_size=28672)),
        ("Qwen3-4B-Instruct-2507", dict(block_size=262144, rope_base=5000000, head_size=128, tie_embeddings=True)),
        ("Qwen3-4B-Thinking-2507", dict(block_size=262144, rope_base=5000000)),
        ("Qwen3-30B-A3B-Instruct-2507", dict(n_expert=128, moe_intermediate_size=768, rope_base=10000000)),
        ("Qwen3-235B-A22B-Thinking-2507", dict(n_layer=94, n_expert=128, n_expert_per_token=8, rope_base=5000000)),
        ("Phi-4-reasoning", dict(n_layer=40, n_query_groups=10, block_size=32768, rope_base=500000)),
        ("Phi-4-mini-instruct", dict(n_head=24, n_query_groups=8, rotary_percentage=0.75, padded_vocab_size=200064,
                                     tie_embeddings=True)),
        ("Phi-4-mini-reasoning", dict(n_layer=32, intermediate_size=8192)),
        ("Mathstral-7B-v0.1", dict(padded_vocab_size=32768, sliding_window_size=4096, rope_base=1000000)),
        ("pythia-14m", dict(block_size=512)),
        ("pythia-31m", dict(block_size=1024)),
        ("pythia-70m", dict(block_size=2048)),
    ],
)
def test_new_entries(name, fields):
    config = Config.from_name(name)
    for key, value in fields.items():
        assert getattr(config, key) == value, f"{name}.{key}"


# --------------------------------------------------------------------------------------------------
# Fields the model reads, or refuses
def _tiny_moe(**overrides) -> Config:
    fields = dict(
        n_layer=2, n_embd=32, n_head=4, n_query_groups=2, head_size=8, intermediate_size=48, moe_intermediate_size=16,
        n_expert=4, n_expert_per_token=2, vocab_size=64, padded_vocab_size=64, block_size=16,
    )
    return Config.from_name("Qwen3-30B-A3B", **dict(fields, **overrides))


def test_routed_scaling_factor_scales_the_moe_output():
    torch.manual_seed(0)
    moe = LLaMAMoE(_tiny_moe())
    scaled = LLaMAMoE(_tiny_moe(routed_scaling_factor=2.5))
    scaled.load_state_dict(moe.state_dict())
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(scaled(x), 2.5 * moe(x))


def test_norm_topk_prob_keeps_litgpt_behaviour():
    """LitGPT's softmax router renormalises the top-k weights for both values (observed); so do we."""
    torch.manual_seed(0)
    moe = LLaMAMoE(_tiny_moe(norm_topk_prob=False))
    other = LLaMAMoE(_tiny_moe(norm_topk_prob=True))
    other.load_state_dict(moe.state_dict())
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(other(x), moe(x))
    # the weights sum to one: with identical experts the output is one expert's output
    for expert in moe.experts[1:]:
        expert.load_state_dict(moe.experts[0].state_dict())
    torch.testing.assert_close(moe(x), moe.experts[0](x))


@pytest.mark.parametrize(
    "field_value",
    [("n_shared_expert", 2), ("n_expert_groups", 8), ("n_topk_groups", 4), ("n_topk_scores_per_group", 2),
     ("first_k_dense_replace", 3), ("latent_attention", {"kv_lora_rank": 512}), ("rope_interleave", True)],
)
def test_unread_litgpt_fields_are_refused(field_value):
    key, value = field_value
    with pytest.raises(ValueError, match=key):
        Config(n_embd=64, n_head=4, **{key: value})
    Config(n_embd=64, n_head=4, **{key: Config.__dataclass_fields__[key].default})  # the default is fine


def test_moe_sizes_are_checked_when_the_moe_is_built():
    config = Config.from_name("Qwen3-30B-A3B", n_expert=2)  # 8 experts per token of 2: accepted, like LitGPT
    with pytest.raises(ValueError, match="n_expert_per_token <= n_expert"):
        LLaMAMoE(config)


@pytest.mark.parametrize("name", ["Qwen3-30B-A3B", "Mixtral-8x7B-v0.1", "Qwen3-235B-A22B-Instruct-2507"])
def test_registry_moe_with_fewer_layers_builds(name):
    config = Config.from_name(name, n_layer=2)
    assert config.n_layer == 2
    with torch.device("meta"):
        model = GPT(config)
    assert len(model.transformer.h) == 2


def test_yarn_config_shrunk_builds_and_runs():
    yarn = dict(rope_type="yarn", factor=4.0, original_max_seq_len=8)
    config = _tiny_moe(n_layer=1, rope_adjustments=yarn)
    torch.manual_seed(0)
    logits = GPT(config)(torch.randint(0, 64, (1, 12)))
    assert logits.shape == (1, 12, 64) and torch.isfinite(logits).all()
