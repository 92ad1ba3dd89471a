"""LitGPT's `litgpt.finetune.lora_legacy` (its older LoRA script): `setup` with the same arguments, here the one
LoRA finetuning of `litgpt finetune_lora` (same loop, checkpoints and flags)."""

from litgpt.finetune.lora import finetune_lora

setup = finetune_lora
"""`setup(checkpoint_dir, out_dir=..., precision=..., quantize=..., devices=..., lora_r=..., ...)`: finetune with LoRA
(`litgpt.finetune.lora.finetune_lora`)."""

__all__ = ["setup"]
