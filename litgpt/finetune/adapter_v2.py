"""`litgpt finetune_adapter_v2`: LLaMA-Adapter v2 (gated prefix, plus bias and scale on every linear layer and
trainable norms) on instruction data. Same loop, flags, files and loading as `litgpt finetune_adapter`."""

from __future__ import annotations

from litgpt.finetune.adapter import make_adapter_verb

finetune_adapter_v2 = make_adapter_verb(
    "v2", "finetune_adapter_v2", "out/finetune/adapter-v2",
    "Finetune a checkpoint with LLaMA-Adapter v2: a gated prefix per layer, a bias and a scale on every linear\n"
    "    layer (starting at 0 and 1) and the norms' weights.\n\n    Only those train.",
)

setup = finetune_adapter_v2  # LitGPT's Python name (`from litgpt.finetune.adapter_v2 import setup`)
