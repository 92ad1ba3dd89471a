"""Writes tiny LoRA / Adapter / Adapter v2 checkpoints with the reference LitGPT 0.5.x (public API only) for
tests/test_peft_compat.py.

Run with the reference venv (`bash ../shared/bench/anchor.sh` builds it):
    $REF/bin/python tests/compat/make_peft_fixtures.py tests/fixtures/litgpt_peft [CASE ...]
Each sub-folder holds what LitGPT's finetune verbs write (checked against `litgpt finetune_lora` /
`finetune_adapter_v2` runs: the trainable tensors under a "model" key in `lit_model.pth.lora`,
`lit_model.pth.adapter` or `lit_model.pth.adapter_v2`, the `lora_*` flags in hyperparameters.yaml), the base
checkpoint (`lit_model.pth` + `model_config.yaml`), the full state dict of LitGPT's PEFT model
(`full_state.pth`, LitGPT's key layout: `.linear.weight`, `adapter_wte`, `gating_factor`, ...) and `io.pt`
with an input and LitGPT's logits for it.
"""

import sys
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from litgpt import Config
from litgpt.utils import save_config

TINY = dict(n_layer=3, n_embd=16, n_head=4, head_size=8, vocab_size=48, padded_vocab_size=48, block_size=32)
LLAMA = dict(TINY, n_query_groups=2, intermediate_size=24)
LORA = dict(lora_r=2, lora_alpha=6, lora_dropout=0.0)
CASES = {
    # module, registry name, config overrides
    "lora_llama": ("lora", "Llama-3.2-1B", dict(LLAMA, **LORA, lora_query=True, lora_value=True,
                                                  lora_projection=True, lora_mlp=True, lora_head=True)),
    "lora_pythia_key": ("lora", "pythia-14m", dict(TINY, **LORA, lora_key=True)),
    "lora_mixtral": ("lora", "Mixtral-8x7B-v0.1", dict(LLAMA, n_expert=3, n_expert_per_token=2, **LORA,
                                                        lora_query=True, lora_key=True, lora_value=True, lora_mlp=True)),
    "adapter_llama": ("adapter", "Llama-3.2-1B", dict(LLAMA, adapter_prompt_length=3, adapter_start_layer=1)),
    "adapter_v2_llama": ("adapter_v2", "Llama-3.2-1B", dict(LLAMA, adapter_prompt_length=3, adapter_start_layer=1)),
    "adapter_v2_mixtral": ("adapter_v2", "Mixtral-8x7B-v0.1", dict(LLAMA, n_expert=3, n_expert_per_token=2,
                                                                    adapter_prompt_length=2, adapter_start_layer=2)),
    # qkv bias, partial RoPE, one query per group, a one-vector prefix from layer 0
    "adapter_pythia": ("adapter", "pythia-14m", dict(TINY, adapter_prompt_length=1, adapter_start_layer=0)),
    # qk norms and one key/value group (MQA), from the last layer only
    "adapter_qwen3": ("adapter", "Qwen3-0.6B", dict(TINY, n_query_groups=1, intermediate_size=24,
                                                    adapter_prompt_length=4, adapter_start_layer=2)),
    # logit softcapping, attention_scores_scalar, post norms, a sliding window shorter than the input
    "adapter_v2_gemma2": ("adapter_v2", "gemma-2-2b", dict(LLAMA, sliding_window_size=4, adapter_prompt_length=2,
                                                           adapter_start_layer=0)),
}

out = Path(sys.argv[1])
only = set(sys.argv[2:])  # optional case names: write only those (each case is seeded on its own)
for case, (module_name, name, overrides) in CASES.items():
    if only and case not in only:
        continue
    module = __import__(f"litgpt.{module_name}", fromlist=["GPT"])
    torch.manual_seed(0)
    config = module.Config.from_name(name, **overrides)
    model = module.GPT(config)
    with torch.no_grad():  # non-trivial base weights and "trained" PEFT tensors, so a wrong layout shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    d = out / case
    d.mkdir(parents=True, exist_ok=True)
    full = model.state_dict()
    torch.save(full, d / "full_state.pth")
    base = {k.replace(".linear.", "."): v for k, v in full.items() if "lora_" not in k and "adapter_" not in k
            and "gating_factor" not in k}
    torch.save(base, d / "lit_model.pth")
    # the run folder's model_config.yaml is the base model's (no lora_* / adapter_* fields), as LitGPT writes it
    save_config(Config(**{k: v for k, v in asdict(config).items() if not k.startswith(("lora_", "adapter_"))}), d)
    if module_name == "lora":
        trained = {k: v for k, v in full.items() if module.lora_filter(k, v)}
        hparams = {"checkpoint_dir": str(d), "precision": "32-true",
                   **{k: getattr(config, k) for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_query",
                                                       "lora_key", "lora_value", "lora_projection", "lora_mlp",
                                                       "lora_head")}}
    else:
        trained = {k: v for k, v in full.items() if module.adapter_filter(k, v)}
        hparams = {"checkpoint_dir": str(d), "precision": "32-true"}
    suffix = {"lora": "lora", "adapter": "adapter", "adapter_v2": "adapter_v2"}[module_name]
    torch.save({"model": trained}, d / f"lit_model.pth.{suffix}")
    (d / "hyperparameters.yaml").write_text(yaml.safe_dump(hparams, sort_keys=False))
    idx = torch.randint(0, config.vocab_size, (2, 10))
    with torch.no_grad():
        logits = model(idx)
    torch.save({"idx": idx, "logits": logits}, d / "io.pt")
    print(case, name, len(full), "tensors,", len(trained), "trained")
