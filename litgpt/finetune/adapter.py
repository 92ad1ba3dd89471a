"""`litgpt finetune_adapter`: LLaMA-Adapter (a learned, gated prefix per layer) on instruction data.

The adapter modules are injected into the loaded base model (bitsandbytes-quantized with --quantize) by the PEFT
core (`litgpt.finetune.peft`); only they train, step folders hold `lit_model.pth.adapter`, and the final folder
holds the full `lit_model.pth` (base + adapter tensors) with `adapter.yaml`, which generate, chat, serve and
`LLM.load` read directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Optional

from litgpt.adapter import AdapterSettings
from litgpt.finetune.common import FINETUNE_TRAIN, TrainingFlags, finetune_order, training_verb
from litgpt.finetune.peft import AdapterFinetuning, run_peft
from litgpt.train.args import EvalArgs

ADAPTER_VERB_DOC = """

    `out_dir/step-*/` hold `lit_model.pth.adapter` (small; resumable); `out_dir/final/` holds the full
    `lit_model.pth`, `adapter.yaml`, the config, tokenizer files and the data's prompt style: generate, chat,
    serve and `LLM.load` read it like any checkpoint.

    Args:
        adapter_prompt_length: learned prefix vectors per adapted layer.
        adapter_start_layer: first layer (0-based) that gets a prefix.
    """


def make_adapter_verb(version: Literal["v1", "v2"], name: str, default_out_dir: str, summary: str) -> Callable:
    """The verb function of one adapter version: the same flags, its own name, default out_dir and description
    (the CLI reads both from the returned function's signature and docstring)."""

    def verb(adapter_prompt_length: int = 10, adapter_start_layer: int = 2, *,
             flags: TrainingFlags) -> Optional[Path]:
        settings = AdapterSettings(version, adapter_prompt_length, adapter_start_layer)  # validated in run_peft
        return run_peft(AdapterFinetuning(flags, settings), f"finetune_{settings.method}")

    verb.__doc__ = summary + ADAPTER_VERB_DOC
    verb.__name__ = verb.__qualname__ = name
    return training_verb(
        finetune_order("adapter_prompt_length adapter_start_layer", quantize=True),
        out_dir=Path(default_out_dir), train=FINETUNE_TRAIN,
        eval=EvalArgs(interval=100, max_new_tokens=100, max_iters=100),
    )(verb)


finetune_adapter = make_adapter_verb(
    "v1", "finetune_adapter", "out/finetune/adapter",
    "Finetune a checkpoint with LLaMA-Adapter: a learned prefix per layer, added through zero-initialised gates.\n\n"
    "    Only the prefixes and gates train.",
)

setup = finetune_adapter  # LitGPT's Python name (`from litgpt.finetune.adapter import setup`)
