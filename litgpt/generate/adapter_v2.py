"""`litgpt generate_adapter_v2`: `generate_adapter` for Adapter v2 runs (LitGPT's flags, the one generate path)."""

from __future__ import annotations

from litgpt.generate.adapter import make_generate_adapter_verb

main = make_generate_adapter_verb(
    "v2", "out/finetune/adapter-v2/final/lit_model.pth.adapter_v2",
    "For models finetuned with `litgpt finetune_adapter_v2`: generate text with the base checkpoint and the\n"
    "    run's adapter tensors.",
)
