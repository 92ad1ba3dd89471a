"""LLaMA-Adapter and Adapter v2 by injection (`litgpt.adapter`): exact base logits when fresh, gradients only on
the adapter tensors (and v2's norms), the prefix attention with a KV cache, and loading an adapter run's folder
through the ordinary checkpoint loader."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from litgpt import GPT, Config
from litgpt.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    AdapterSettings,
    adapter_trainable_names,
    inject_adapter,
    is_adapter_key,
    mark_only_adapter_as_trainable,
    write_adapter_config,
)
from litgpt.lora import LORA_FILE
from litgpt.checkpoint import apply_peft_files, check_base_checkpoint, load_checkpoint
from tests._train_helpers import one_thread  # noqa: F401 (autouse fixture)
from tests.test_lora import FAMILIES, build, ids


def open_gates(model: GPT, value: float = 0.5) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("adapter_gate"):
                p.fill_(value)
            elif name.endswith("adapter_bias"):
                p.normal_(std=0.1)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fresh_adapter_keeps_the_exact_logits_and_only_adapter_tensors_train(family, version):
    model = build(FAMILIES[family])
    x = ids()
    with torch.no_grad():
        before = model(x)
    settings = AdapterSettings(version, prompt_length=3, start_layer=1)
    new = inject_adapter(model, settings)
    assert new[:2] == ["transformer.h.1.attn.adapter_prefix", "transformer.h.1.attn.adapter_gate"] or version == "v2"
    assert not any(n.startswith("transformer.h.0.attn.adapter_") for n in new)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    trainable = set(mark_only_adapter_as_trainable(model, settings))
    open_gates(model)
    with torch.no_grad():
        assert not torch.allclose(model(x), before)
    model(x).float().pow(2).mean().backward()
    for name, p in model.named_parameters():  # (an expert no token was routed to gets no gradient)
        assert (p.grad is not None) == (name in trainable) or ".experts." in name, name
    norms = {n for n in trainable if not is_adapter_key(n)}
    if version == "v1":
        assert not norms and len(trainable) == 2
    else:
        assert norms and all("norm" in n or n.startswith("transformer.ln_f") for n in norms)
        assert "lm_head.adapter_scale" in trainable and "transformer.h.0.attn.qkv.adapter_bias" in trainable


def test_prefix_attention_is_a_gated_softmax_over_the_projected_prefix():
    model = build(FAMILIES["llama_gqa"])
    inject_adapter(model, AdapterSettings("v1", prompt_length=5, start_layer=0))
    attn = model.transformer.h[0].attn
    open_gates(model, 0.7)
    q = torch.randn(2, 4, 6, 16)
    got = attn.prefix_attention(q)
    qkv = attn.qkv(attn.adapter_prefix)  # (5, (4 + 2 + 2) * 16)
    # LitGPT's reading of the prefix projection: per query group [2 queries, key, value], 16 features each
    groups = qkv.view(5, 2, 4, 16)
    k, v = groups[:, :, 2], groups[:, :, 3]
    k, v = k.repeat_interleave(2, dim=1).transpose(0, 1), v.repeat_interleave(2, dim=1).transpose(0, 1)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1)  # every query sees every prefix slot
    expected = (0.7 * (probs @ v)).transpose(1, 2).reshape(2, 6, 64)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_adapted_model_gives_the_same_logits_with_the_kv_cache(version):
    model = build(FAMILIES["gemma2_softcap"])
    inject_adapter(model, AdapterSettings(version, prompt_length=4, start_layer=0))
    open_gates(model)
    x = ids(1, 10)
    with torch.no_grad():
        full = model(x)
        model.set_kv_cache(batch_size=1, max_seq_length=16)
        prefill = model(x[:, :7], input_pos=torch.arange(7))
        step = model(x[:, 7:8], input_pos=torch.tensor([7]))
    torch.testing.assert_close(prefill, full[:, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step, full[:, 7:8], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_adapter_folder_loads_through_the_ordinary_checkpoint_loader(version, tmp_path):
    fields = FAMILIES["llama_gqa"]
    model = build(fields)
    settings = AdapterSettings(version, prompt_length=3, start_layer=1)
    inject_adapter(model, settings)
    open_gates(model)
    torch.save(model.state_dict(), tmp_path / "lit_model.pth")
    write_adapter_config(tmp_path, settings, "base/ckpt")
    with torch.device("meta"):
        plain = GPT(Config(**fields))
    load_checkpoint(plain, tmp_path / "lit_model.pth")  # adapter.yaml: the adapter modules come first
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), model(x))
    assert not apply_peft_files(plain, tmp_path)  # already adapted: left alone
    (tmp_path / ADAPTER_CONFIG).unlink()
    with torch.device("meta"):
        plain = GPT(Config(**fields))
    with pytest.raises(ValueError, match="does not match the model config"):  # the marker is what makes it load
        load_checkpoint(plain, tmp_path / "lit_model.pth")


def test_peft_folders_are_refused_where_a_base_checkpoint_is_needed(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    torch.save(build(FAMILIES["llama_gqa"]).state_dict(), base / "lit_model.pth")
    Config(**FAMILIES["llama_gqa"]).save(base)
    assert check_base_checkpoint(base) == base
    step = tmp_path / "step"
    step.mkdir()
    (step / LORA_FILE).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"only finetuned lit_model.pth.lora weights.*litgpt merge_lora"):
        check_base_checkpoint(step)
    final = tmp_path / "final"
    final.mkdir()
    for name in ("lit_model.pth", ADAPTER_FILE, "model_config.yaml"):
        (final / name).write_bytes((base / name).read_bytes() if (base / name).exists() else b"")
    write_adapter_config(final, AdapterSettings(), base)
    with pytest.raises(ValueError, match="adapter finetuning checkpoint"):
        check_base_checkpoint(final)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_base_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize(
    "settings, match",
    [
        (AdapterSettings(prompt_length=0), "adapter_prompt_length must be an integer >= 1"),
        (AdapterSettings(start_layer=-1), "adapter_start_layer must be an integer >= 0"),
        (AdapterSettings(start_layer=2), "adapter_start_layer=2 leaves no layer"),
    ],
)
def test_bad_adapter_settings_are_one_line_errors(settings, match):
    with pytest.raises(ValueError, match=match):
        inject_adapter(build(FAMILIES["llama_gqa"]), settings)


def test_v2_trains_every_norm_and_every_linear_gets_bias_and_scale():
    model = build(FAMILIES["mixtral_moe"])
    settings = AdapterSettings("v2", prompt_length=2, start_layer=0)
    inject_adapter(model, settings)
    names = set(adapter_trainable_names(model, settings))
    assert "transformer.h.0.mlp.experts.3.proj.adapter_scale" in names
    assert "transformer.h.0.mlp.gate.adapter_scale" in names  # the MoE router too, as in LitGPT (its files have it)
    assert {"transformer.ln_f.weight", "transformer.h.1.norm_2.weight"} <= names
    x = torch.randn(3, 64)
    linear = model.transformer.h[0].attn.proj
    with torch.no_grad():
        linear.adapter_bias.fill_(0.5)
        linear.adapter_scale.fill_(2.0)
        torch.testing.assert_close(linear(x), 2.0 * (F.linear(x, linear.weight) + 0.5))
