"""`convert_to_litgpt`: config inference, input layouts (shards, .bin, fused experts, multimodal Gemma 3),
dtype casting and one-line errors that leave nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from litgpt import Config
from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint, find_weight_files
from litgpt.scripts.hf_families import SUPPORTED_MODEL_TYPES, architecture_signature, config_from_hf

VOCAB = 97
_SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_hf_model(model_type: str, **overrides):
    import transformers
    config = transformers.AutoConfig.for_model(model_type, **{**_SMALL, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_clean(folder: Path) -> None:
    """No lit_model.pth, no model_config.yaml and no temporary file remains after a failed conversion."""
    names = sorted(p.name for p in folder.iterdir())
    assert "lit_model.pth" not in names and "model_config.yaml" not in names
    assert not [n for n in names if n.endswith(".tmp")], names


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama checkpoint in Hugging Face format (never converted in place: tests copy it)."""
    folder = tmp_path_factory.mktemp("llama") / "tiny-llama"
    tiny_hf_model("llama").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_reference(llama_dir: Path, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ref") / "tiny-llama"
    shutil.copytree(llama_dir, folder)
    return load(convert_hf_checkpoint(folder))


def copy_hf(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("lit_model.pth", "model_config.yaml"))
    return dst


# ---------------------------------------------------------------------------------------------------
# realistic config.json files (published values) against the registry
PUBLISHED = {
    "meta-llama/Llama-3.2-1B": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 128000,
        "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 128256,
    },
    "Qwen/Qwen3-0.6B": {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "bos_token_id": 151643, "eos_token_id": 151645,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
        "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16,
        "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "use_sliding_window": False, "vocab_size": 151936,
    },
    "google/gemma-2-2b": {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attn_logit_softcapping": 50.0,
        "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
        "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2304, "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2",
        "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
        "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
        "torch_dtype": "float32", "vocab_size": 256000,
    },
    "google/gemma-3-1b-it": {
        "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attn_logit_softcapping": None,
        "bos_token_id": 2, "eos_token_id": [1, 106], "final_logit_softcapping": None, "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "intermediate_size": 6912,
        "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
        "num_hidden_layers": 26, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "vocab_size": 262144,
    },
    "EleutherAI/pythia-14m": {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 128, "intermediate_size": 512, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
        "model_type": "gpt_neox", "num_attention_heads": 4, "num_hidden_layers": 6, "rotary_emb_base": 10000,
        "rotary_pct": 0.25, "tie_word_embeddings": False, "use_parallel_residual": True, "vocab_size": 50304,
    },
    "Qwen/Qwen2.5-0.5B": {
        "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
        "use_sliding_window": False, "vocab_size": 151936,
    },
    "HuggingFaceTB/SmolLM2-135M": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "hidden_act": "silu", "hidden_size": 576,
        "intermediate_size": 1536, "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
        "num_hidden_layers": 30, "num_key_value_heads": 3, "rms_norm_eps": 1e-05, "rope_scaling": None,
        "rope_theta": 100000, "tie_word_embeddings": True, "vocab_size": 49152,
    },
    "microsoft/phi-2": {
        "architectures": ["PhiForCausalLM"], "hidden_act": "gelu_new", "hidden_size": 2560, "intermediate_size": 10240,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "phi", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 32, "partial_rotary_factor": 0.4, "qk_layernorm": False,
        "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False, "vocab_size": 51200,
    },
    "tiiuae/falcon-7b": {
        "alibi": False, "architectures": ["FalconForCausalLM"], "bias": False, "hidden_size": 4544,
        "layer_norm_epsilon": 1e-05, "model_type": "falcon", "multi_query": True, "new_decoder_architecture": False,
        "num_attention_heads": 71, "num_hidden_layers": 32, "parallel_attn": True, "vocab_size": 65024,
    },
    "Qwen/Qwen3-30B-A3B": {
        "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "decoder_sparse_step": 1, "head_dim": 128,
        "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960,
        "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768, "norm_topk_prob": True,
        "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
        "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "use_sliding_window": False, "vocab_size": 151936,
    },
}


@pytest.mark.parametrize("repo_id", list(PUBLISHED))
def test_inferred_config_matches_registry(repo_id: str) -> None:
    inferred, family, _ = config_from_hf(PUBLISHED[repo_id], name=repo_id.split("/")[1])
    assert family.model_type == PUBLISHED[repo_id]["model_type"]
    registered = Config.from_name(repo_id)  # every published config must have its registry entry
    ours, theirs = architecture_signature(inferred), architecture_signature(registered)
    diff = {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    assert not diff, f"(inferred, registry) differ: {diff}"


def test_config_inference_details() -> None:
    llama, _, _ = config_from_hf(PUBLISHED["meta-llama/Llama-3.2-1B"])
    assert llama.rope_adjustments == dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_seq_len=8192)
    assert (llama.n_query_groups, llama.head_size, llama.tie_embeddings) == (8, 64, True)
    gemma2, _, _ = config_from_hf(PUBLISHED["google/gemma-2-2b"])
    assert gemma2.sliding_window_indices[:4] == [1, 0, 1, 0] and gemma2.sliding_window_size == 4096
    assert (gemma2.attention_logit_softcapping, gemma2.final_logit_softcapping) == (50.0, 30.0)
    assert gemma2.rmsnorm_add_unit_offset and gemma2.scale_embeddings and gemma2.post_mlp_norm
    gemma3, _, _ = config_from_hf(PUBLISHED["google/gemma-3-1b-it"])
    assert [gemma3.is_sliding_layer(i) for i in range(6)] == [True] * 5 + [False]
    assert [gemma3.uses_local_rope(i) for i in range(6)] == [True] * 5 + [False]
    assert (gemma3.rope_base, gemma3.rope_local_base_freq, gemma3.norm_qk) == (1000000, 10000, True)
    qwen, _, _ = config_from_hf(PUBLISHED["Qwen/Qwen2.5-0.5B"])
    assert qwen.sliding_window_size is None and qwen.attn_bias and not qwen.bias  # use_sliding_window=False
    falcon, _, _ = config_from_hf(PUBLISHED["tiiuae/falcon-7b"])
    assert (falcon.n_query_groups, falcon.shared_attention_norm, falcon.intermediate_size) == (1, True, 4 * 4544)
    yarn = dict(PUBLISHED["Qwen/Qwen2.5-0.5B"], rope_scaling={"type": "yarn", "factor": 4.0,
                                                            "original_max_position_embeddings": 32768})
    assert config_from_hf(yarn)[0].rope_adjustments == dict(rope_type="yarn", factor=4.0, original_max_seq_len=32768,
                                                           beta_fast=32.0, beta_slow=1.0)
    linear = dict(PUBLISHED["Qwen/Qwen2.5-0.5B"], rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert config_from_hf(linear)[0].rope_adjustments == {"factor": 2.0}


def test_multimodal_gemma3_config_uses_text_config() -> None:
    text = {k: v for k, v in PUBLISHED["google/gemma-3-1b-it"].items() if k not in ("architectures",)}
    text["rope_scaling"] = {"factor": 8.0, "rope_type": "linear"}
    wrapped = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
               "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152}}
    config, family, _ = config_from_hf(wrapped)
    assert family.model_type == "gemma3_text"
    assert config.n_embd == 1152 and config.rope_adjustments == {"factor": 8.0}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "bert"}, "Unsupported model_type 'bert'"),
        ({"model_type": "olmo", "clip_qkv": 8.0}, "clip_qkv"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"hidden_act": "relu"}, "hidden_act='relu'"),
        ({"hidden_size": None}, "lacks 'hidden_size'"),
    ],
)
def test_unsupported_configs_are_one_line_errors(change: dict, message: str) -> None:
    data = {k: v for k, v in {**PUBLISHED["HuggingFaceTB/SmolLM2-135M"], **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message) as err:
        config_from_hf(data)
    assert "\n" not in str(err.value)
    if change.get("model_type") == "bert":
        assert all(t in str(err.value) for t in SUPPORTED_MODEL_TYPES)


# ---------------------------------------------------------------------------------------------------
# input layouts
def test_sharded_safetensors(llama_reference: dict, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    tiny_hf_model("llama").save_pretrained(folder, max_shard_size="40KB")
    assert len(find_weight_files(folder)) > 2
    assert_same_state(load(convert_hf_checkpoint(folder)), llama_reference)


def test_bin_shards_with_index(llama_dir: Path, llama_reference: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(llama_dir / "config.json", folder)
    tensors = load_file(llama_dir / "model.safetensors")
    keys = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), start=1):
        name = f"pytorch_model-0000{i}-of-00002.bin"
        torch.save({k: tensors[k] for k in part}, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_state(load(convert_hf_checkpoint(folder)), llama_reference)


def test_single_bin_and_dtype_cast(llama_dir: Path, llama_reference: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "bin1"
    folder.mkdir()
    shutil.copy(llama_dir / "config.json", folder)
    torch.save(load_file(llama_dir / "model.safetensors"), folder / "pytorch_model.bin")
    state = load(convert_hf_checkpoint(folder, dtype="bfloat16"))
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert torch.equal(state["transformer.wte.weight"], llama_reference["transformer.wte.weight"].bfloat16())


@pytest.mark.parametrize("model_type, extra", [
    ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2)),
    ("qwen3_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True)),
])
def test_fused_and_per_expert_moe_checkpoints_convert_alike(model_type: str, extra: dict, tmp_path: Path) -> None:
    from safetensors import safe_open

    model = tiny_hf_model(model_type, **extra)
    model.save_pretrained(tmp_path / "per_expert")
    model.save_pretrained(tmp_path / "fused", save_original_format=False)  # transformers 5's in-memory layout
    with safe_open(tmp_path / "fused" / "model.safetensors", "pt") as f:
        assert any(k.endswith("experts.gate_up_proj") for k in f.keys())
    with safe_open(tmp_path / "per_expert" / "model.safetensors", "pt") as f:
        assert any(".experts.0." in k for k in f.keys())
    fused = load(convert_hf_checkpoint(tmp_path / "fused"))
    assert_same_state(fused, load(convert_hf_checkpoint(tmp_path / "per_expert")))
    assert "transformer.h.1.mlp.experts.3.fc_2.weight" in fused


@pytest.mark.parametrize("prefix", ["model.language_model.", "language_model.model."])
def test_multimodal_gemma3_weights(prefix: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    overrides = dict(head_dim=16, num_hidden_layers=2, sliding_window=4)
    text_dir = tmp_path / "text"
    tiny_hf_model("gemma3_text", **overrides).save_pretrained(text_dir)
    reference = load(convert_hf_checkpoint(text_dir))

    folder = tmp_path / "multimodal"
    folder.mkdir()
    text_config = json.loads((text_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text_config,
        "vision_config": {"model_type": "siglip_vision_model"}, "image_token_index": 5,
    }))
    tensors = {prefix + k.removeprefix("model."): v for k, v in load_file(text_dir / "model.safetensors").items()}
    tensors["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = torch.zeros(4, 3)
    tensors["model.multi_modal_projector.mm_input_projection_weight"] = torch.zeros(4, 4)
    save_file(tensors, folder / "model.safetensors")
    assert_same_state(load(convert_hf_checkpoint(folder)), reference)


def test_gpt2_hub_layout_without_prefix(tmp_path: Path) -> None:
    """The Hub's `gpt2` weights were saved from GPT2Model: no `transformer.` prefix, plus mask buffers."""
    from safetensors.torch import load_file, save_file

    model = tiny_hf_model("gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=32)
    model.save_pretrained(tmp_path / "new")
    reference = load(convert_hf_checkpoint(tmp_path / "new"))
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(tmp_path / "new" / "config.json", old)
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "new" / "model.safetensors").items()}
    tensors.pop("lm_head.weight", None)
    tensors["h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    save_file(tensors, old / "model.safetensors")
    assert_same_state(load(convert_hf_checkpoint(old)), reference)


def test_registry_name_from_folder_or_argument(tmp_path: Path) -> None:
    registered = Config.from_name("pythia-14m")
    hf = dict(hidden_size=registered.n_embd, num_hidden_layers=registered.n_layer,
              num_attention_heads=registered.n_head, intermediate_size=registered.intermediate_size,
              vocab_size=registered.padded_vocab_size, rotary_pct=registered.rotary_percentage,
              max_position_embeddings=2048, num_key_value_heads=None)
    folder = tmp_path / "pythia-14m"
    tiny_hf_model("gpt_neox", **hf).save_pretrained(folder)
    (folder / "config.json").unlink()  # the folder name alone decides the config
    convert_hf_checkpoint(folder)
    assert Config.from_file(folder / "model_config.yaml").name == "pythia-14m"

    renamed = folder.rename(tmp_path / "anything")
    (renamed / "lit_model.pth").unlink()
    convert_hf_checkpoint(renamed, model_name="pythia-14m")
    assert (renamed / "lit_model.pth").is_file()


# ---------------------------------------------------------------------------------------------------
# errors
def test_missing_folder_and_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_hf_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(PUBLISHED["HuggingFaceTB/SmolLM2-135M"]))
    with pytest.raises(FileNotFoundError, match="no Hugging Face weights") as err:
        convert_hf_checkpoint(tmp_path / "empty")
    assert "\n" not in str(err.value)
    assert_clean(tmp_path / "empty")


def test_index_naming_a_missing_shard(llama_dir: Path, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002.safetensors"):
        convert_hf_checkpoint(folder)
    assert_clean(folder)


def test_no_config_and_unknown_folder_name(llama_dir: Path, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="--model_name"):
        convert_hf_checkpoint(folder)


def test_unknown_model_type(llama_dir: Path, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                    "model_type": "t5"}))
    with pytest.raises(ValueError, match="Unsupported model_type 't5'.*supported: .*llama") as err:
        convert_hf_checkpoint(folder)
    assert "\n" not in str(err.value)
    assert_clean(folder)


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights_file(llama_dir: Path, tmp_path: Path, filename: str) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    (folder / "model.safetensors").unlink()
    (folder / filename).write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    with pytest.raises(ValueError, match=filename) as err:
        convert_hf_checkpoint(folder)
    assert "\n" not in str(err.value)
    assert_clean(folder)


def test_truncated_safetensors(llama_dir: Path, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors") as err:
        convert_hf_checkpoint(folder)
    assert "\n" not in str(err.value)
    assert_clean(folder)


def test_shape_mismatch_names_the_tensor(llama_dir: Path, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape") as err:
        convert_hf_checkpoint(folder)
    assert "\n" not in str(err.value)
    assert_clean(folder)


def test_wrong_registry_name_is_a_shape_error(llama_dir: Path, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    with pytest.raises(ValueError, match="has shape"):
        convert_hf_checkpoint(folder, model_name="Llama-3.2-1B")
    assert_clean(folder)


def test_missing_and_unexpected_tensors(llama_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(llama_dir / "model.safetensors")
    folder = copy_hf(llama_dir, tmp_path / "missing")
    save_file({k: v for k, v in tensors.items() if k != "model.layers.1.self_attn.k_proj.weight"},
              folder / "model.safetensors")
    with pytest.raises(ValueError, match="lacks 'model.layers.1.self_attn.k_proj.weight'"):
        convert_hf_checkpoint(folder)
    assert_clean(folder)

    folder = copy_hf(llama_dir, tmp_path / "extra")
    save_file({**tensors, "model.layers.2.mlp.up_proj.weight": torch.zeros(96, 64)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="unexpected tensor 'model.layers.2.mlp.up_proj.weight'"):
        convert_hf_checkpoint(folder)
    assert_clean(folder)

    folder = copy_hf(llama_dir, tmp_path / "no_head")
    save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="lm_head.weight"):
        convert_hf_checkpoint(folder)
    assert_clean(folder)


def test_failed_conversion_keeps_an_earlier_result(llama_dir: Path, llama_reference: dict, tmp_path: Path) -> None:
    folder = copy_hf(llama_dir, tmp_path / "x")
    convert_hf_checkpoint(folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        convert_hf_checkpoint(folder)
    assert_same_state(load(folder / "lit_model.pth"), llama_reference)
