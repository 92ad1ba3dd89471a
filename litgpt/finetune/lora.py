"""`litgpt finetune_lora` (also `litgpt finetune`): LoRA, or QLoRA with `--quantize bnb.*`, on instruction data.

The verb's own flags are the LoRA settings; the rest is the PEFT core (`litgpt.finetune.peft`) on the training
loop every verb shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from litgpt.finetune.common import TrainingFlags, finetune_order, training_verb, FINETUNE_TRAIN
from litgpt.finetune.peft import LoRAFinetuning, run_peft
from litgpt.lora import LoRASettings
from litgpt.train.args import EvalArgs


@training_verb(
    finetune_order("lora_r lora_alpha lora_dropout lora_query lora_key lora_value lora_projection lora_mlp lora_head",
                   quantize=True),
    out_dir=Path("out/finetune/lora"), train=FINETUNE_TRAIN, eval=EvalArgs(interval=100, max_new_tokens=100, max_iters=100),
)
def finetune_lora(
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_query: bool = True,
    lora_key: bool = False,
    lora_value: bool = True,
    lora_projection: bool = False,
    lora_mlp: bool = False,
    lora_head: bool = False,
    *,
    flags: TrainingFlags,
) -> Optional[Path]:
    """Finetune a checkpoint with LoRA (QLoRA with --quantize) on instruction data.

    Only the LoRA weights train. `out_dir/step-*/` hold `lit_model.pth.lora` (small; resumable); `out_dir/final/`
    also holds the merged `lit_model.pth` with the config, tokenizer files and the data's prompt style, which
    generate, chat, serve and convert_from_litgpt read. `litgpt merge_lora` merges a step folder;
    `litgpt export_peft` writes the LoRA weights in the PEFT library's format.

    Args:
        lora_r: rank of the LoRA update (>= 1).
        lora_alpha: scaling: the update is multiplied by lora_alpha / lora_r.
        lora_dropout: dropout on the LoRA branch's input during training.
        lora_query: LoRA on the query part of the attention projection.
        lora_key: LoRA on the key part of the attention projection.
        lora_value: LoRA on the value part of the attention projection.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP's linear layers (every expert's, for mixtures of experts).
        lora_head: LoRA on the output head.
    """
    settings = LoRASettings(lora_r, lora_alpha, lora_dropout, lora_query, lora_key, lora_value, lora_projection,
                            lora_mlp, lora_head)  # validated with the other arguments (run_peft)
    return run_peft(LoRAFinetuning(flags, settings), "finetune_lora")


setup = finetune_lora  # LitGPT's Python name (`from litgpt.finetune.lora import setup`)
