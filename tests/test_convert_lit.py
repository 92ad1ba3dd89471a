"""`convert_from_litgpt`: choosing the Hugging Face architecture from the Config's fields, exports that
transformers loads with the same logits, sharding, copied tokenizer files, atomic output, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from litgpt import GPT, Config
from litgpt.config import name_to_config
from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint, parse_size
from litgpt.scripts.hf_families import family_for_config
from litgpt.utils import save_atomic

VOCAB = 97
SMALL = dict(name="tiny", n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, padded_vocab_size=VOCAB, block_size=64)
LLAMA = dict(SMALL, n_query_groups=2, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=96,
             bias=False, parallel_residual=False, rotary_percentage=1.0, norm_eps=1e-5)

# case -> (Config fields, architecture the export must choose)
CASES = {
    "llama": (LLAMA, "LlamaForCausalLM"),
    "llama_tied_condensed_rope": (dict(LLAMA, tie_embeddings=True, rope_condense_ratio=4), "LlamaForCausalLM"),
    "mistral": (dict(LLAMA, sliding_window_size=5), "MistralForCausalLM"),
    "qwen2": (dict(LLAMA, attn_bias=True), "Qwen2ForCausalLM"),
    "qwen2_last_layer_slides": (dict(LLAMA, attn_bias=True, sliding_window_size=5, sliding_window_indices=[0, 1]),
                                "Qwen2ForCausalLM"),
    "qwen3": (dict(LLAMA, norm_qk=True, head_size=32), "Qwen3ForCausalLM"),
    "phi3_partial_rotary": (dict(LLAMA, rotary_percentage=0.5), "Phi3ForCausalLM"),
    "stablelm": (dict(LLAMA, norm_class_name="LayerNorm", rotary_percentage=0.25), "StableLmForCausalLM"),
    "gpt2": (dict(SMALL, learned_pos_embedding=True, rotary_percentage=0.0, parallel_residual=False, bias=True,
                  gelu_approximate="tanh", tie_embeddings=True), "GPT2LMHeadModel"),
    "gemma": (dict(LLAMA, mlp_class_name="GemmaMLP", gelu_approximate="tanh", rmsnorm_add_unit_offset=True,
                   scale_embeddings=True, head_size=32, tie_embeddings=True), "GemmaForCausalLM"),
    "olmo": (dict(LLAMA, norm_class_name="LayerNorm", norm_affine=False), "OlmoForCausalLM"),
    "olmo2": (dict(LLAMA, norm_1=False, norm_2=False, post_attention_norm=True, post_mlp_norm=True, norm_qk=True,
                   norm_qk_type="olmo2"), "Olmo2ForCausalLM"),
    "falcon_sequential_mqa": (dict(SMALL, n_query_groups=1, parallel_residual=False, bias=False, rotary_percentage=1.0),
                              "FalconForCausalLM"),
    "falcon_grouped_shared_norm": (dict(SMALL, n_query_groups=2, parallel_residual=True, shared_attention_norm=True,
                                        bias=False, rotary_percentage=1.0), "FalconForCausalLM"),
    "gpt_neox": (dict(SMALL, bias=True, rotary_percentage=0.25), "GPTNeoXForCausalLM"),
}


def make_checkpoint(folder: Path, config: Config, seed: int = 0) -> GPT:
    """A random-weight LitGPT checkpoint (norm weights perturbed too, so a misplaced norm shows)."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic(model.state_dict(), folder / "lit_model.pth")
    config.save(folder)
    return model.eval()


def hf_logits(folder: Path, ids: torch.Tensor) -> tuple[str, torch.Tensor]:
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return type(model).__name__, model(ids).logits


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_our_model(case: str, tmp_path: Path, ids: torch.Tensor) -> None:
    fields, architecture = CASES[case]
    model = make_checkpoint(tmp_path / "lit", Config(**fields))
    out = convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    name, logits = hf_logits(out, ids)
    assert name == architecture
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids), rtol=1e-5, atol=1e-5)


REGISTRY_CASES = {
    "EleutherAI/pythia-14m": "gpt_neox",
    "meta-llama/Llama-3.2-1B": "llama",
    "Qwen/Qwen3-30B-A3B": "qwen3_moe",
    "google/gemma-3-1b-it": "gemma3_text",
    "google/gemma-2-2b": "gemma2",
    "tiiuae/falcon-7b": "falcon",
    "microsoft/phi-2": "phi",
    "mistralai/Mixtral-8x7B-v0.1": "mixtral",
    "allenai/OLMo-2-1124-7B": "olmo2",
}


@pytest.mark.parametrize("repo_id", list(REGISTRY_CASES))
def test_registry_configs_export_in_small(repo_id: str, tmp_path: Path, ids: torch.Tensor) -> None:
    """Registry architectures shrunk to a few layers export to their own family and keep their logits."""
    full = Config.from_name(repo_id)  # every case must be in the registry
    small = dict(n_layer=2, n_embd=64, n_head=4, head_size=16, vocab_size=VOCAB, padded_vocab_size=VOCAB,
                 intermediate_size=96, block_size=64)
    small["n_query_groups"] = 1 if full.n_query_groups == 1 else (4 if full.n_query_groups == full.n_head else 2)
    if full.mlp_class_name == "LLaMAMoE":
        small.update(n_expert=4, n_expert_per_token=2, moe_intermediate_size=32 if full.moe_intermediate_size else None)
    if full.sliding_window_size:
        small["sliding_window_size"] = 5
    if full.attention_scores_scalar:
        small["attention_scores_scalar"] = 24
    if full.rope_adjustments and "original_max_seq_len" in full.rope_adjustments:
        small["rope_adjustments"] = dict(full.rope_adjustments, original_max_seq_len=16)
    config = Config.from_name(repo_id, **small)
    assert family_for_config(config)[0].model_type == REGISTRY_CASES[repo_id]
    model = make_checkpoint(tmp_path / "lit", config)
    name, logits = hf_logits(convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf"), ids)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids), rtol=1e-5, atol=1e-5)


def test_every_registry_config_has_an_exact_family() -> None:
    unmapped = []
    for name in name_to_config:
        try:
            family_for_config(Config.from_name(name))
        except ValueError as err:
            unmapped.append(f"{name}: {err}")
    assert not unmapped, unmapped[:3]


def test_unrepresentable_config_is_a_one_line_error(tmp_path: Path) -> None:
    config = Config(**dict(LLAMA, mlp_class_name="GptNeoxMLP", parallel_residual=True))  # RMSNorm + GELU MLP
    make_checkpoint(tmp_path / "lit", config)
    with pytest.raises(ValueError, match="No supported Hugging Face architecture represents") as err:
        convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "hf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["lit"]


def test_sharded_export_reloads(tmp_path: Path, ids: torch.Tensor) -> None:
    from safetensors import safe_open

    model = make_checkpoint(tmp_path / "lit", Config(**dict(LLAMA, tie_embeddings=True)))
    out = convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf", max_shard_size=30_000)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 3 and not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    keys = set()
    for shard in shards:
        with safe_open(shard, "pt") as f:
            keys |= set(f.keys())
    assert keys == set(index["weight_map"]) and "lm_head.weight" not in keys  # tied: the head is not stored
    assert index["metadata"]["total_size"] == sum(
        t.numel() * 4 for n, t in model.state_dict().items() if n != "lm_head.weight"
    )
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["torch_dtype"] == "float32"
    _, logits = hf_logits(out, ids)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids), rtol=1e-5, atol=1e-5)


def test_tokenizer_files_and_token_ids_are_carried(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "lit", Config(**LLAMA))
    (tmp_path / "lit" / "tokenizer.json").write_text('{"fake": true}')
    (tmp_path / "lit" / "tokenizer_config.json").write_text("{}")
    (tmp_path / "lit" / "generation_config.json").write_text(json.dumps({"bos_token_id": 5, "eos_token_id": [6, 7]}))
    out = convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    assert (out / "tokenizer.json").read_text() == '{"fake": true}'
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (5, [6, 7])
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]


def test_export_into_existing_folder_replaces_stale_weights(tmp_path: Path, ids: torch.Tensor) -> None:
    model = make_checkpoint(tmp_path / "lit", Config(**LLAMA))
    out = tmp_path / "hf"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"stale")
    (out / "README.md").write_text("keep me")
    convert_lit_checkpoint(tmp_path / "lit", out, max_shard_size="40KB")
    assert not (out / "model.safetensors").exists() and (out / "README.md").read_text() == "keep me"
    _, logits = hf_logits(out, ids)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids), rtol=1e-5, atol=1e-5)


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    make_checkpoint(tmp_path / "lit", Config(**LLAMA))
    real = safetensors.torch.save_file
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf", max_shard_size=30_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lit"]


def test_missing_checkpoint_files(tmp_path: Path) -> None:
    (tmp_path / "lit").mkdir()
    with pytest.raises(FileNotFoundError, match="lit_model.pth") as err:
        convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    assert "\n" not in str(err.value)
    make_checkpoint(tmp_path / "lit", Config(**LLAMA))
    (tmp_path / "lit" / "model_config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="model_config.yaml"):
        convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_state_that_does_not_match_the_config(tmp_path: Path) -> None:
    model = make_checkpoint(tmp_path / "lit", Config(**LLAMA))
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "transformer.h.1.attn.proj.weight"}
    save_atomic(missing, tmp_path / "lit" / "lit_model.pth")
    with pytest.raises(ValueError, match="transformer.h.1.attn.proj.weight"):
        convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    save_atomic({**state, "transformer.h.0.mlp.fc_1.weight": torch.zeros(8, 64)}, tmp_path / "lit" / "lit_model.pth")
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.mlp\.fc_1\.weight has shape \(8, 64\)") as err:
        convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "hf").exists()


def test_parse_size() -> None:
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size(1234) == 1234
    assert parse_size("1.5kb") == 1500
    for bad in ("lots", "5XB", 0, "-1GB"):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)


def test_tied_config_with_diverged_head_exports_untied(tmp_path: Path, ids: torch.Tensor) -> None:
    """A checkpoint whose head was trained apart from the embedding (LitGPT does not tie them) keeps both."""
    config = Config(**dict(LLAMA, tie_embeddings=True))
    make_checkpoint(tmp_path / "lit", config)
    untied = GPT(Config(**LLAMA))
    state = untied.state_dict()
    save_atomic(state, tmp_path / "lit" / "lit_model.pth")
    out = convert_lit_checkpoint(tmp_path / "lit", tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    _, logits = hf_logits(out, ids)
    with torch.no_grad():
        torch.testing.assert_close(logits, untied.eval()(ids), rtol=1e-5, atol=1e-5)
