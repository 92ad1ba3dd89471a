"""LitGPT 0.5's PEFT names (`litgpt.lora`, `litgpt.adapter`, `litgpt.adapter_v2`) over our injection: called with
LitGPT's arguments, state dicts in LitGPT's key layout, LitGPT-written LoRA / adapter checkpoints loaded with
LitGPT's logits (fixtures written by tests/compat/make_peft_fixtures.py with the reference LitGPT), and the
PEFT export of LoRA heads (tied heads refused, untied ones merged by `peft` as we merge them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

import litgpt.adapter as adapter
import litgpt.adapter_v2 as adapter_v2
import litgpt.lora as lora
from litgpt.adapter import inject_adapter, settings_from_litgpt_state_dict
from litgpt.config import Config as BaseConfig
from litgpt.lora import LoRASettings, from_litgpt_state_dict, inject_lora, merge_lora_state
from litgpt.model import GPT as BaseGPT
from litgpt.utils import load_state_dict
from tests._train_helpers import one_thread  # noqa: F401 (autouse fixture)

FIXTURES = Path(__file__).parent / "fixtures" / "litgpt_peft"
TINY = dict(n_layer=2, n_embd=16, n_head=4, head_size=8, rotary_percentage=1.0, n_query_groups=2, vocab_size=40, padded_vocab_size=40, block_size=16,
            mlp_class_name="LLaMAMLP", intermediate_size=24, norm_class_name="RMSNorm", bias=False)
PEFT_FILES = {"lora": "lit_model.pth.lora", "adapter": "lit_model.pth.adapter", "adapter_v2": "lit_model.pth.adapter_v2"}


def fixture(case: str) -> tuple[Path, dict, dict]:
    folder = FIXTURES / case
    io = torch.load(folder / "io.pt")
    hparams = yaml.safe_load((folder / "hyperparameters.yaml").read_text())
    return folder, io, hparams


def litgpt_model(case: str):
    """LitGPT's class of the case, built as a LitGPT user builds it (its Config with the PEFT fields)."""
    folder, _, hparams = fixture(case)
    kind = case.rsplit("_", 1)[0] if not case.startswith("lora") else "lora"
    module = {"lora": lora, "adapter": adapter, "adapter_v2": adapter_v2}[kind]
    if kind == "lora":
        config = lora.Config.from_file(folder / "model_config.yaml", **{k: v for k, v in hparams.items()
                                                                      if k.startswith("lora_")})
    else:  # LitGPT records no adapter settings: they are read from the prefix tensors
        n_layer = BaseConfig.from_file(folder / "model_config.yaml").n_layer
        peft = load_state_dict(folder / PEFT_FILES[kind])
        s = settings_from_litgpt_state_dict(peft, "v2" if kind == "adapter_v2" else "v1", n_layer)
        config = module.Config.from_file(folder / "model_config.yaml", adapter_prompt_length=s.prompt_length,
                                         adapter_start_layer=s.start_layer)
    return kind, module.GPT(config).eval(), folder


LORA_CASES = ["lora_llama", "lora_pythia_key", "lora_mixtral"]
# llama: GQA; pythia: qkv bias, partial RoPE, MHA, prompt length 1 from layer 0; qwen3: qk norms, MQA, last layer
# only; gemma2: softcapping, attention_scores_scalar, a sliding window shorter than the input
ADAPTER_CASES = ["adapter_llama", "adapter_v2_llama", "adapter_v2_mixtral", "adapter_pythia", "adapter_qwen3",
                 "adapter_v2_gemma2"]
CASES = LORA_CASES + ADAPTER_CASES


@pytest.mark.parametrize("case", LORA_CASES + ADAPTER_CASES)
def test_litgpt_written_checkpoints_have_litgpt_keys_and_load_strictly(case):
    kind, model, folder = litgpt_model(case)
    full = torch.load(folder / "full_state.pth")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in full.items()}
    model.load_state_dict(full)
    for key, value in model.state_dict().items():
        assert torch.equal(value, full[key]), key


@pytest.mark.parametrize("case", CASES)
def test_litgpt_written_checkpoints_load_into_litgpt_names_and_give_litgpt_logits(case):
    kind, model, folder = litgpt_model(case)
    _, io, _ = fixture(case)
    full = torch.load(folder / "full_state.pth")
    # the same keys and shapes as LitGPT's model
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in full.items()}
    model.load_state_dict(full)
    with torch.no_grad():
        torch.testing.assert_close(model(io["idx"]), io["logits"], atol=2e-5, rtol=1e-5)
    # what a LitGPT run folder holds: the base checkpoint, then the trained tensors ({"model": ...})
    _, fresh, _ = litgpt_model(case)
    missing = fresh.load_state_dict(torch.load(folder / "lit_model.pth"), strict=False).missing_keys
    assert missing and not fresh.load_state_dict(torch.load(folder / PEFT_FILES[kind]), strict=False).unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(fresh(io["idx"]), io["logits"], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_litgpt_files_load_into_our_injected_model_through_the_one_key_mapping(case):
    kind, litgpt_style, folder = litgpt_model(case)
    _, io, hparams = fixture(case)
    # LitGPT's checkpoints hold two head matrices: the loader (litgpt.checkpoint) unties such a model
    config = dataclasses.replace(BaseConfig.from_file(folder / "model_config.yaml"), tie_embeddings=False)
    model = BaseGPT(config)
    base = load_state_dict(folder / "lit_model.pth")
    peft = load_state_dict(folder / PEFT_FILES[kind])
    if kind == "lora":
        settings = LoRASettings.from_hyperparameters(hparams)
        inject_lora(model, settings, router=True)
        # merge_lora's path: LitGPT's lit_model.pth.lora merged into the base state dict
        merged = BaseGPT(config).eval()
        merged.load_state_dict(merge_lora_state(base, peft, settings, config))
        with torch.no_grad():
            torch.testing.assert_close(merged(io["idx"]), io["logits"], atol=2e-5, rtol=1e-5)
    else:
        inject_adapter(model, settings_from_litgpt_state_dict(peft, "v2" if kind == "adapter_v2" else "v1",
                                                              config.n_layer))
    model.load_state_dict(from_litgpt_state_dict(torch.load(folder / "full_state.pth")))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(io["idx"]), io["logits"], atol=2e-5, rtol=1e-5)
    # and back: our model's state in LitGPT's layout is LitGPT's state dict
    assert set(litgpt_style.state_dict()) == set(torch.load(folder / "full_state.pth"))


@pytest.mark.parametrize("case", ADAPTER_CASES)
def test_litgpt_adapter_files_give_litgpt_logits_through_the_kv_cache(case):
    """Prefill and decode steps with the KV cache give LitGPT's full-sequence logits (the prefix is attended by
    every new query, whatever its position). Compared with LitGPT's full forward, not its KV path: LitGPT 0.5.13's
    own KV path differs from its full forward with logit softcapping (Gemma 2), with or without an adapter."""
    _, model, folder = litgpt_model(case)
    _, io, _ = fixture(case)
    model.load_state_dict(torch.load(folder / "full_state.pth"))
    idx, expected = io["idx"], io["logits"]
    model.max_seq_length = idx.size(1)
    model.set_kv_cache(batch_size=idx.size(0))
    with torch.no_grad():
        prefill = model(idx[:, :6], input_pos=torch.arange(6))
        steps = [model(idx[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(6, idx.size(1))]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), expected, atol=2e-5, rtol=1e-5)


def test_lora_names_with_litgpt_arguments():
    config = lora.Config(**TINY, lora_r=2, lora_alpha=4, lora_dropout=0.0, lora_query=True, lora_value=True,
                         lora_projection=False, lora_mlp=True, lora_head=True)
    assert [f for f in ("lora_r", "lora_alpha", "lora_dropout", "lora_query", "lora_key", "lora_value",
                        "lora_projection", "lora_mlp", "lora_head") if not hasattr(config, f)] == []
    torch.manual_seed(0)
    model = lora.GPT(config)
    assert isinstance(model, BaseGPT) and isinstance(model.lm_head, lora.LoRALinear)
    assert isinstance(model.transformer.h[0].attn.qkv, lora.LoRAQKVLinear)
    assert model.transformer.h[0].attn.qkv.lora_A.shape == (2 * 2, 16)  # (query, value)  # a rank-2 block per enabled part
    assert "transformer.h.0.attn.proj.linear.weight" in model.state_dict()  # every linear wrapped, as in LitGPT
    # a plain base checkpoint loads with strict=False, missing only the LoRA tensors
    base = BaseGPT(BaseConfig(**TINY)).state_dict()
    missing = model.load_state_dict(base, strict=False).missing_keys
    assert missing and all(lora.lora_filter(k, None) for k in missing)
    trainable = lora.mark_only_lora_as_trainable(model, bias="none")
    assert trainable and all(lora.lora_filter(n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_()
    x = torch.randint(0, 40, (2, 8))
    with torch.no_grad():
        before = model(x)
        lora.merge_lora_weights(model)
        torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)
    assert lora.GPT.from_name("pythia-14m", n_layer=1, lora_r=2, lora_query=True).config.lora_r == 2


def test_lora_layers_and_module_classes_with_litgpt_arguments():
    layer = lora.LoRALinear(4, 3, r=2, lora_alpha=4, lora_dropout=0.0, bias=True)
    assert list(layer.state_dict()) == ["lora_A", "lora_B", "linear.weight", "linear.bias"]
    assert (layer.r, layer.lora_alpha, layer.scaling, layer.merged) == (2, 4, 2.0, False)
    with torch.no_grad():
        layer.lora_B.normal_()
        x = torch.randn(5, 4)
        torch.testing.assert_close(layer(x), layer.linear(x) + x @ layer.get_lora_AB().T)
        copy = lora.LoRALinear(4, 3, r=2, lora_alpha=4, bias=True)
        copy.load_state_dict(layer.state_dict())
        torch.testing.assert_close(copy(x), layer(x))
        layer.merge()
        torch.testing.assert_close(layer(x), copy(x), atol=1e-5, rtol=1e-5)
    assert list(lora.LoRALinear(4, 3).state_dict()) == ["linear.weight", "linear.bias"]  # r=0: no update
    assert lora.LoRALayer(r=2, lora_alpha=4, lora_dropout=0.0).scaling == 2.0
    qkv = lora.LoRAQKVLinear(16, 32, head_size=4, n_head=4, n_query_groups=2, r=2, lora_alpha=4, lora_dropout=0.0,
                             enable_lora=(False, True, True), bias=False)
    assert (qkv.lora_A.shape, qkv.lora_B.shape) == ((4, 16), (16, 2))  # k and v: 2 groups of 4 rows each
    with torch.no_grad():
        qkv.lora_B.normal_()
        x = torch.randn(3, 16)
        delta = qkv(x) - qkv.linear(x)
    assert torch.equal(delta[:, :16], torch.zeros(3, 16)) and delta[:, 16:].abs().sum() > 0  # query untouched
    config = lora.Config(**TINY, lora_r=2, lora_alpha=4, lora_query=True, lora_mlp=True)
    assert list(lora.create_lora_linear(config, 4, 3).state_dict()) == ["linear.weight"]
    assert "lora_A" in lora.create_lora_linear(config, 4, 3, bias=True, use_r=True).state_dict()
    block = lora.Block(config, 0)
    assert isinstance(block.attn.qkv, lora.LoRAQKVLinear) and isinstance(block.mlp.fc_1, lora.LoRALinear)
    assert not isinstance(block.attn.proj, lora.LoRALayer)  # lora_projection is off
    attn = lora.CausalSelfAttention(config, 1)
    assert attn.qkv.lora_A.shape == (2, 16)
    assert isinstance(lora.LLaMAMLP(config, intermediate_size=8).proj, lora.LoRALinear)
    assert isinstance(lora.GemmaMLP(config).fc_2, lora.LoRALinear)
    assert isinstance(lora.GptNeoxMLP(lora.Config(**{**TINY, "mlp_class_name": "GptNeoxMLP"}, lora_r=1,
                                                  lora_mlp=True)).fc, lora.LoRALinear)
    moe = lora.LLaMAMoE(lora.Config(**{**TINY, "mlp_class_name": "LLaMAMoE"}, n_expert=2, n_expert_per_token=1,
                                    lora_r=1, lora_mlp=True))
    assert isinstance(moe.gate, lora.LoRALinear) and isinstance(moe.experts[1].fc_2, lora.LoRALinear)
    assert moe(torch.randn(1, 3, 16)).shape == (1, 3, 16)
    assert block(torch.randn(1, 3, 16), *_rope(config, 3)).shape == (1, 3, 16)


def _rope(config, T):
    """cos and sin (T, rope_n_elem) of the identity rotation."""
    return torch.ones(T, config.rope_n_elem), torch.zeros(T, config.rope_n_elem)


def test_adapter_names_with_litgpt_arguments():
    config = adapter.Config(**TINY, adapter_prompt_length=3, adapter_start_layer=1)
    model = adapter.GPT(config)
    keys = model.state_dict()
    assert keys["transformer.h.1.attn.adapter_wte.weight"].shape == (3, 16)
    assert keys["transformer.h.1.attn.gating_factor"].shape == (1, 1, 4, 1)
    assert "transformer.h.0.attn.gating_factor" not in keys and "lm_head.weight" in keys
    trainable = adapter.mark_only_adapter_as_trainable(model)
    assert sorted(trainable) == ["transformer.h.1.attn.adapter_gate", "transformer.h.1.attn.adapter_prefix"]
    assert sorted(k for k in keys if adapter.adapter_filter(k, keys[k])) == [
        "transformer.h.1.attn.adapter_wte.weight", "transformer.h.1.attn.gating_factor"]
    assert adapter.GPT(adapter.Config(**TINY)).state_dict().keys() == BaseGPT(BaseConfig(**TINY)).state_dict().keys()
    assert hasattr(adapter.Block(config, 1).attn, "adapter_prefix")
    assert not hasattr(adapter.CausalSelfAttention(config, 0), "adapter_prefix")
    assert adapter.GPT.from_name("pythia-14m", n_layer=2, adapter_start_layer=1).config.adapter_start_layer == 1


def test_adapter_v2_names_with_litgpt_arguments():
    config = adapter_v2.Config(**{**TINY, "mlp_class_name": "LLaMAMoE"}, n_expert=2, n_expert_per_token=1,
                               adapter_prompt_length=2, adapter_start_layer=0)
    model = adapter_v2.GPT(config)
    keys = model.state_dict()
    for key in ("lm_head.linear.weight", "lm_head.adapter_scale", "transformer.h.0.mlp.gate.adapter_bias",
                "transformer.h.0.attn.qkv.linear.weight", "transformer.h.1.attn.adapter_wte.weight"):
        assert key in keys, key
    trainable = adapter_v2.mark_only_adapter_v2_as_trainable(model)
    assert "transformer.ln_f.weight" in trainable and "transformer.h.0.mlp.gate.adapter_scale" in trainable
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.endswith("attn.qkv.weight"))
    assert adapter_v2.adapter_filter("transformer.h.0.norm_1.weight", None)
    assert not adapter_v2.adapter_filter("transformer.h.0.attn.qkv.linear.weight", None)
    linear = adapter_v2.AdapterV2Linear(4, 3, bias=False)
    assert list(linear.state_dict()) == ["adapter_bias", "adapter_scale", "linear.weight"]
    with torch.no_grad():
        linear.adapter_bias.fill_(0.5)
        linear.adapter_scale.fill_(2.0)
        x = torch.randn(2, 4)
        torch.testing.assert_close(linear(x), 2.0 * (linear.linear(x) + 0.5))
    dense = adapter_v2.Config(**TINY, adapter_start_layer=1)
    block = adapter_v2.Block(dense, 1)
    assert hasattr(block.attn, "adapter_prefix") and isinstance(block.mlp.fc_1, adapter_v2.AdapterV2Linear)
    assert isinstance(adapter_v2.CausalSelfAttention(dense, 0).proj, adapter_v2.AdapterV2Linear)
    assert isinstance(adapter_v2.LLaMAMLP(dense, intermediate_size=8).proj, adapter_v2.AdapterV2Linear)
    assert isinstance(adapter_v2.GemmaMLP(dense).fc_1, adapter_v2.AdapterV2Linear)
    assert isinstance(adapter_v2.GptNeoxMLP(adapter_v2.Config(**{**TINY, "mlp_class_name": "GptNeoxMLP"})).fc,
                      adapter_v2.AdapterV2Linear)
    assert isinstance(adapter_v2.LLaMAMoE(config).gate, adapter_v2.AdapterV2Linear)
    assert isinstance(adapter_v2.GPT.from_name("pythia-14m", n_layer=1), adapter.GPT)


# ------------------------------------------------------------------------------------------------------------
# PEFT export of LoRA heads and fused qkv layers


def make_lora_run(root: Path, fields: dict, settings: LoRASettings):
    torch.manual_seed(0)
    model = BaseGPT(BaseConfig(**fields)).eval()
    base, run = root / "base", root / "run"
    base.mkdir(parents=True)
    torch.save(model.state_dict(), base / "lit_model.pth")
    model.config.save(base)
    inject_lora(model, settings)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.2)
    run.mkdir()
    torch.save(lora.lora_state_dict(model), run / lora.LORA_FILE)
    model.config.save(run)
    (run / "hyperparameters.yaml").write_text(yaml.safe_dump({"checkpoint_dir": str(base),
                                                              **settings.to_hyperparameters()}))
    return model, base, run


SMOL = dict(name="tiny", n_layer=2, n_embd=64, n_head=4, n_query_groups=2, vocab_size=97, padded_vocab_size=97,
            block_size=64, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=96, bias=False,
            parallel_residual=False, rotary_percentage=1.0, tie_embeddings=True)  # SmolLM2's layout: a tied head
NEOX = dict(name="tiny", n_layer=2, n_embd=64, n_head=4, vocab_size=97, padded_vocab_size=97, block_size=64)
EXPORTS = {
    "untied_head": (dict(SMOL, tie_embeddings=False), LoRASettings(r=4, alpha=8, dropout=0.0, mlp=True, head=True)),
    "tied_model_without_head": (SMOL, LoRASettings(r=4, alpha=8, dropout=0.0, key=True, mlp=True)),
    "neox_fused_qkv_query_and_value": (NEOX, LoRASettings(r=4, alpha=8, dropout=0.0)),
}


@pytest.mark.parametrize("case", list(EXPORTS))
def test_peft_merge_and_unload_of_the_export_gives_our_merged_logits(case, tmp_path):
    import peft
    import transformers

    from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint
    from litgpt.scripts.export_peft import export_peft

    fields, settings = EXPORTS[case]
    model, base, run = make_lora_run(tmp_path, fields, settings)
    convert_lit_checkpoint(base, tmp_path / "hf")
    out = export_peft(run, tmp_path / "peft")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    merged = peft.PeftModel.from_pretrained(hf, out).merge_and_unload().eval()
    lora.merge_lora_weights(model)
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, model(x), rtol=1e-5, atol=1e-5)


def test_peft_export_refuses_a_lora_head_tied_to_the_embedding(tmp_path):
    from litgpt.scripts.export_peft import export_peft

    _, _, run = make_lora_run(tmp_path, SMOL, LoRASettings(r=4, alpha=8, dropout=0.0, head=True))
    with pytest.raises(ValueError, match="tied to the token embedding") as err:
        export_peft(run, tmp_path / "peft")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "peft").exists()


def test_injected_modules_keep_the_models_names_and_litgpt_layout_is_only_in_litgpt_classes():
    model = BaseGPT(BaseConfig(**TINY))
    inject_lora(model, LoRASettings(r=2))
    assert "transformer.h.0.attn.qkv.weight" in model.state_dict()
    assert isinstance(model.transformer.h[0].attn.qkv, nn.Linear)
