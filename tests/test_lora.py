"""LoRA by injection (`litgpt.lora`): exact base logits when fresh, gradients only on LoRA tensors, per-part qkv
updates, merge (in memory and from state dicts), MoE experts and new MLP classes, bitsandbytes bases (QLoRA),
and the PEFT-format export that `peft` loads on top of `convert_from_litgpt`'s export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

import litgpt.model as model_module
from litgpt import GPT, Config
from litgpt.lora import (
    LORA_FILE,
    LoRALayer,
    LoRASettings,
    inject_lora,
    lora_filter,
    lora_modules,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_lora_state,
    merge_lora_weights,
    unmerge_lora_weights,
)
from tests._train_helpers import one_thread  # noqa: F401 (autouse fixture)

V = 97
BASE = dict(name="tiny", n_layer=2, n_embd=64, n_head=4, vocab_size=V, padded_vocab_size=V, block_size=64)
LLAMA = dict(BASE, n_query_groups=2, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=96,
             bias=False, parallel_residual=False, rotary_percentage=1.0, norm_eps=1e-5)
FAMILIES = {
    "llama_gqa": LLAMA,
    "gpt_neox": dict(BASE, bias=True, rotary_percentage=0.25),
    "mixtral_moe": dict(LLAMA, mlp_class_name="LLaMAMoE", n_expert=4, n_expert_per_token=2),
    "gemma_tied": dict(LLAMA, mlp_class_name="GemmaMLP", gelu_approximate="tanh", rmsnorm_add_unit_offset=True,
                       scale_embeddings=True, head_size=32, tie_embeddings=True),
    "gemma2_softcap": dict(LLAMA, mlp_class_name="GemmaMLP", post_attention_norm=True, post_mlp_norm=True,
                           attention_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window_size=8,
                           sliding_window_indices=[1, 0], tie_embeddings=True),
    "olmo2_qk_norm": dict(LLAMA, norm_1=False, norm_2=False, post_attention_norm=True, post_mlp_norm=True,
                          norm_qk=True, norm_qk_type="olmo2"),
}
EVERYTHING = LoRASettings(r=4, alpha=8, dropout=0.0, query=True, key=True, value=True, projection=True, mlp=True,
                          head=True)


def build(fields: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config(**fields)).eval()


def ids(batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(5))


def randomize_lora_b(model: nn.Module, std: float = 0.2) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=std)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fresh_injection_keeps_the_exact_logits_and_only_lora_gets_gradients(family):
    model = build(FAMILIES[family])
    x = ids(4, 32)  # enough tokens that every MoE expert gets some
    with torch.no_grad():
        before = model(x)
    names = inject_lora(model, EVERYTHING)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    trainable = mark_only_lora_as_trainable(model)
    assert trainable and all(lora_filter(n) for n in trainable)
    assert len(trainable) == 2 * len(names)
    randomize_lora_b(model)
    model(x).float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == lora_filter(name), name
        if p.grad is not None:
            assert p.grad.abs().sum() > 0, name
    # base parameter names are unchanged: the base checkpoint still loads into the injected model
    assert "transformer.h.0.attn.qkv.weight" in dict(model.named_parameters())


def test_targets_select_layers_by_their_place_in_the_model():
    model = build(FAMILIES["mixtral_moe"])
    names = inject_lora(model, LoRASettings(query=False, value=False, mlp=True))
    assert names[:3] == ["transformer.h.0.mlp.experts.0.fc_1", "transformer.h.0.mlp.experts.0.fc_2",
                         "transformer.h.0.mlp.experts.0.proj"]
    assert len(names) == 2 * 4 * 3  # layers x experts x linears; the router (mlp.gate) is left alone
    assert not isinstance(model.transformer.h[0].mlp.gate, LoRALayer)
    model = build(LLAMA)
    names = inject_lora(model, LoRASettings(query=False, key=True, value=False, projection=True, head=True))
    assert names == ["transformer.h.0.attn.qkv", "transformer.h.0.attn.proj", "transformer.h.1.attn.qkv",
                     "transformer.h.1.attn.proj", "lm_head"]


def test_only_the_enabled_parts_of_the_fused_qkv_change():
    model = build(LLAMA)  # 4 query heads, 2 key/value groups of 16: q rows 0-63, k 64-95, v 96-127
    qkv = model.transformer.h[0].attn.qkv
    x = torch.randn(3, 64)
    with torch.no_grad():
        base = qkv(x)
    inject_lora(model, LoRASettings(r=2, dropout=0.0, query=True, key=False, value=True))
    assert qkv.lora_B.shape == (64 + 32, 2)
    randomize_lora_b(model)
    with torch.no_grad():
        out = qkv(x)
    assert not torch.allclose(out[:, :64], base[:, :64])  # query
    assert torch.equal(out[:, 64:96], base[:, 64:96])  # key: untouched
    assert not torch.allclose(out[:, 96:], base[:, 96:])  # value
    # each part has its own rank-2 update (LitGPT's and PEFT's layout): lora_A stacks the parts' A blocks
    assert qkv.lora_A.shape == (2 * 2, 64)
    A, B = qkv.lora_A, qkv.lora_B
    expected = base.clone()
    expected[:, :64] += (x @ A[:2].T @ B[:64].T) * (16 / 2)
    expected[:, 96:] += (x @ A[2:].T @ B[64:].T) * (16 / 2)
    torch.testing.assert_close(out, expected)


def load_plain(fields: dict, state: dict, folder: Path) -> GPT:
    """A plain GPT loaded as every verb loads `lit_model.pth` (a tied head that differs gets untied)."""
    from litgpt.checkpoint import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "lit_model.pth")
    with torch.device("meta"):
        model = GPT(Config(**fields))
    load_checkpoint(model, folder / "lit_model.pth")
    return model.eval()


@pytest.mark.parametrize("family", ["llama_gqa", "mixtral_moe", "gemma_tied", "gpt_neox"])
def test_merged_equals_unmerged_in_memory_and_from_state_dicts(family, tmp_path):
    fields = FAMILIES[family]
    model = build(fields)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    settings = LoRASettings(r=4, alpha=8, dropout=0.0, query=True, key=False, value=True, projection=True,
                            mlp=True, head=True)
    inject_lora(model, settings)
    randomize_lora_b(model)
    x = ids()
    with torch.no_grad():
        unmerged = model(x)
    # from state dicts: what the final folder and `litgpt merge_lora` write
    merged_state = merge_lora_state(base_state, lora_state_dict(model), settings, model.config)
    plain = load_plain(fields, merged_state, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), unmerged, atol=2e-5, rtol=1e-5)
    assert merged_state["transformer.h.0.norm_1.weight"] is base_state["transformer.h.0.norm_1.weight"]  # no copy
    # in memory; a tied head gets its own weight and leaves the embedding alone
    wte = model.transformer.wte.weight.detach().clone()
    merge_lora_weights(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), unmerged, atol=2e-5, rtol=1e-5)
    assert torch.equal(model.transformer.wte.weight, wte)
    unmerge_lora_weights(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), unmerged, atol=2e-5, rtol=1e-5)
    assert all(not m.merged for _, m in lora_modules(model))


class SquaredReLUMLP(nn.Module):
    """An MLP class this file's LoRA code has never heard of: proj(relu(up(x))^2) + a gated side branch."""

    def __init__(self, config: Config, intermediate_size=None) -> None:
        super().__init__()
        size = intermediate_size or config.intermediate_size
        self.up = nn.Linear(config.n_embd, size, bias=False)
        self.side = nn.ModuleDict({"gate_in": nn.Linear(config.n_embd, config.n_embd, bias=False)})
        self.proj = nn.Linear(size, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.up(x)).pow(2)) + torch.sigmoid(self.side["gate_in"](x)) * x


def test_a_new_mlp_class_gets_lora_without_lora_code_changes(monkeypatch, tmp_path):
    monkeypatch.setitem(model_module.MLP_CLASSES, "SquaredReLUMLP", SquaredReLUMLP)
    fields = dict(LLAMA, mlp_class_name="SquaredReLUMLP")
    model = build(fields)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = ids()
    with torch.no_grad():
        before = model(x)
    names = inject_lora(model, LoRASettings(query=False, value=False, mlp=True))
    assert sorted(names) == [f"transformer.h.{i}.mlp.{m}" for i in range(2) for m in ("proj", "side.gate_in", "up")]
    with torch.no_grad():
        assert torch.equal(model(x), before)
    randomize_lora_b(model)
    with torch.no_grad():
        after = model(x)
    merged = merge_lora_state(base_state, lora_state_dict(model), LoRASettings(query=False, value=False, mlp=True),
                                model.config)
    plain = load_plain(fields, merged, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), after, atol=2e-5, rtol=1e-5)


def test_dropout_only_in_training_and_rank_first_products():
    model = build(LLAMA)
    inject_lora(model, LoRASettings(r=2, dropout=0.5))
    randomize_lora_b(model)
    qkv = model.transformer.h[0].attn.qkv
    x = torch.randn(4, 64)
    with torch.no_grad():
        qkv.eval()
        assert torch.equal(qkv(x), qkv(x))
        qkv.train()
        assert not torch.equal(qkv(x), qkv(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(r=0), "lora_r must be an integer >= 1"),
        (dict(alpha=0), "lora_alpha must be > 0"),
        (dict(dropout=1.0), r"lora_dropout must be in \[0, 1\)"),
        (dict(query=False, value=False), "no LoRA target is enabled"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        inject_lora(build(LLAMA), LoRASettings(**kwargs))
    assert "\n" not in str(err.value)


def test_settings_round_trip_through_hyperparameters_and_injecting_twice_fails():
    settings = LoRASettings(r=16, alpha=32, dropout=0.1, key=True, mlp=True)
    assert LoRASettings.from_hyperparameters(settings.to_hyperparameters()) == settings
    with pytest.raises(ValueError, match="not written by a LoRA finetuning run"):
        LoRASettings.from_hyperparameters({"checkpoint_dir": "x"})
    model = build(LLAMA)
    inject_lora(model, settings)
    with pytest.raises(ValueError, match="already has LoRA weights"):
        inject_lora(model, settings)


def test_merge_rejects_lora_files_that_do_not_fit_the_settings():
    model = build(LLAMA)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, LoRASettings(query=True, value=True))
    with pytest.raises(ValueError, match="were the lora_\\* settings changed"):
        merge_lora_state(base_state, lora_state_dict(model), LoRASettings(query=True, value=False), model.config)


# ------------------------------------------------------------------------------------------------------------
# QLoRA: LoRA on bitsandbytes layers (bitsandbytes quantizes and runs them on the CPU)


@pytest.mark.parametrize("mode", ["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.int8"])
def test_lora_on_bitsandbytes_layers_trains_only_lora(mode):
    import bitsandbytes  # noqa: F401 (a test dependency: missing means failing)
    from litgpt.quantization import quantize_model

    model = build(LLAMA)
    quantize_model(model, mode, dtype=torch.float32, device="cpu")
    model.train()
    for m in model.modules():  # as finetune_lora does: keep bitsandbytes' training layout on the CPU
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    x = ids()
    with torch.no_grad():
        before = model(x)
    inject_lora(model, LoRASettings(r=4, dropout=0.0, projection=True, mlp=True))
    assert type(model.transformer.h[0].attn.qkv).__name__.startswith("LoRALayer[Linear")
    with torch.no_grad():
        assert torch.equal(model(x), before)
    mark_only_lora_as_trainable(model)
    randomize_lora_b(model)
    model(x).pow(2).mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(lora_filter(n) for n in grads)
    assert len(grads) == 2 * len(list(lora_modules(model)))
    with pytest.raises(ValueError, match="quantized"):
        merge_lora_weights(model)


# ------------------------------------------------------------------------------------------------------------
# PEFT-format export


def make_lora_run(root: Path, fields: dict, settings: LoRASettings) -> tuple[GPT, Path, Path]:
    """A base checkpoint and a LoRA run folder (lit_model.pth.lora with nonzero lora_B + hyperparameters)."""
    model = build(fields)
    base, run = root / "base", root / "run"
    base.mkdir(parents=True)
    torch.save(model.state_dict(), base / "lit_model.pth")
    model.config.save(base)
    inject_lora(model, settings)
    randomize_lora_b(model)
    run.mkdir()
    torch.save(lora_state_dict(model), run / LORA_FILE)
    model.config.save(run)
    hparams = {"checkpoint_dir": str(base), **settings.to_hyperparameters()}
    (run / "hyperparameters.yaml").write_text(yaml.safe_dump(hparams))
    return model, base, run


PEFT_CASES = {
    "llama_q_v_proj_mlp_head": (LLAMA, LoRASettings(r=4, alpha=8, dropout=0.0, projection=True, mlp=True, head=True),
                                ["lm_head", "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.o_proj",
                                 "self_attn.q_proj", "self_attn.v_proj"]),
    "neox_fused_grouped_qkv_query_only": (FAMILIES["gpt_neox"], LoRASettings(r=4, alpha=16, value=False, mlp=True),
                                          ["attention.query_key_value", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h"]),
}


@pytest.mark.parametrize("case", list(PEFT_CASES))
def test_peft_export_loads_with_peft_on_the_transformers_export_and_gives_our_logits(case, tmp_path):
    import transformers
    import peft
    from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint
    from litgpt.scripts.export_peft import export_peft

    fields, settings, targets = PEFT_CASES[case]
    model, base, run = make_lora_run(tmp_path, fields, settings)
    convert_lit_checkpoint(base, tmp_path / "hf")
    out = export_peft(run, tmp_path / "peft")
    config = yaml.safe_load((out / "adapter_config.json").read_text())  # JSON is YAML
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (settings.r, settings.alpha, targets)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    adapted = peft.PeftModel.from_pretrained(hf, out).eval()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(adapted(x).logits, model.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fields, settings, match",
    [
        (FAMILIES["mixtral_moe"], LoRASettings(mlp=True), "MoE expert"),
        (dict(LLAMA, rotary_percentage=0.5), LoRASettings(mlp=True), "fused with another layer"),  # Phi-3 gate_up
    ],
)
def test_peft_export_refuses_layouts_peft_cannot_express(fields, settings, match, tmp_path):
    from litgpt.scripts.export_peft import export_peft

    _, _, run = make_lora_run(tmp_path, fields, settings)
    with pytest.raises(ValueError, match=match) as err:
        export_peft(run, tmp_path / "peft")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "peft").exists()


def test_cpu_dropout_drops_the_right_fraction_scales_exactly_and_follows_the_seed():
    from litgpt.lora import dropout

    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.05)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.95) < 0.003
    scale = 65536 / (65536 - round(0.05 * 65536))
    assert torch.equal(y[kept], torch.full_like(y[kept], scale))  # E[y] = x
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * scale)
    torch.manual_seed(3)
    assert torch.equal(dropout(x.detach(), 0.05), y.detach())
    assert torch.equal(dropout(torch.ones(1000, dtype=torch.bfloat16), 0.0), torch.ones(1000, dtype=torch.bfloat16))
