"""`litgpt finetune_adapter`: LLaMA-Adapter (a learned, gated prefix per layer) on instruction data.

The shared training loop with an `AdapterFinetuning` method (`litgpt.finetune.lora.PEFTFinetuning`): the
adapter modules are injected into the loaded base model (bitsandbytes-quantized with --quantize), only they
train, step folders hold `lit_model.pth.adapter`, and the final folder holds the full `lit_model.pth` (base +
adapter tensors) with `adapter.yaml`, which generate, chat, serve and `LLM.load` read directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

import torch

from litgpt.adapter import (
    ADAPTER_FILE,
    AdapterSettings,
    adapter_trainable_names,
    combine_adapter_weights,
    inject_adapter,
    write_adapter_config,
)
from litgpt.config import Config
from litgpt.data.base import DataModule
from litgpt.finetune.lora import PEFTFinetuning, QLoRAMode, run_peft_verb, training_precision
from litgpt.model import GPT
from litgpt.train.args import EvalArgs, LoggerName, LogArgs, Precision, Strategy, TrainArgs


class AdapterFinetuning(PEFTFinetuning):
    """LLaMA-Adapter (v1) or Adapter v2 on the loaded base model."""

    peft_file = ADAPTER_FILE

    def __init__(self, checkpoint_dir: Path, settings: AdapterSettings, precision: str, **kwargs) -> None:
        super().__init__(checkpoint_dir, precision, **kwargs)
        self.settings = settings
        self.name = settings.method

    def check(self) -> None:
        self.settings.validate()
        super().check()
        n_layer = Config.from_file(self.checkpoint_dir / "model_config.yaml").n_layer
        self.settings.validate(n_layer)

    def inject(self, model: GPT) -> None:
        inject_adapter(model, self.settings)

    def trainable_names(self, model: GPT) -> list[str]:
        return adapter_trainable_names(model, self.settings)

    def full_weights(self, base: dict[str, torch.Tensor], peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return combine_adapter_weights(base, peft)

    def write_config(self, folder: Path) -> None:
        """Writes `adapter.yaml` into a checkpoint folder."""
        write_adapter_config(folder, self.settings, self.checkpoint_dir)


def run_adapter_verb(version: Literal["v1", "v2"], hyperparameters: dict) -> Optional[Path]:
    """Checks the flags of an adapter verb and trains (shared by finetune_adapter and finetune_adapter_v2)."""
    h = dict(hyperparameters)
    access_token = h.pop("access_token")
    settings = AdapterSettings(version, h["adapter_prompt_length"], h["adapter_start_layer"]).validate()
    precision = training_precision(h["precision"], h["quantize"], h["accelerator"])
    method = AdapterFinetuning(h["checkpoint_dir"], settings, precision, quantize=h["quantize"],
                               accelerator=h["accelerator"], devices=h["devices"], num_nodes=h["num_nodes"])
    method.check()  # PEFT-specific errors first (a step folder given as the base, QLoRA support, layers)
    return run_peft_verb(method, f"finetune_{settings.method}", h, h["data"], access_token, precision,
                extra_files=method.write_config)


def make_adapter_verb(version: Literal["v1", "v2"], default_out_dir: str, summary: str):
    """The verb function of one adapter version: the same flags, its own default out_dir and description
    (the CLI reads both from the returned function's signature and docstring)."""

    def verb(
        checkpoint_dir: Path,
        out_dir: Path = Path(default_out_dir),
        precision: Optional[Precision] = None,
        quantize: Optional[QLoRAMode] = None,
        devices: Union[int, str] = 1,
        num_nodes: int = 1,
        resume: Union[bool, Literal["auto"], Path] = False,
        adapter_prompt_length: int = 10,
        adapter_start_layer: int = 2,
        data: Optional[DataModule] = None,
        train: TrainArgs = TrainArgs(
            save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=100,
            epochs=5, max_seq_length=None,
        ),
        eval: EvalArgs = EvalArgs(interval=100, max_new_tokens=100, max_iters=100),
        log: LogArgs = LogArgs(),
        optimizer: Union[str, dict] = "AdamW",
        logger_name: LoggerName = "csv",
        seed: int = 1337,
        access_token: Optional[str] = None,
        strategy: Strategy = "auto",
        accelerator: str = "auto",
        compile: bool = False,
    ) -> Optional[Path]:
        return run_adapter_verb(version, dict(locals()))

    verb.__doc__ = summary + ADAPTER_VERB_ARGS
    return verb


ADAPTER_VERB_ARGS = """

    `out_dir/step-*/` hold `lit_model.pth.adapter` (small; resumable); `out_dir/final/` holds the full
    `lit_model.pth`, `adapter.yaml`, the config, tokenizer files and the data's prompt style: generate, chat,
    serve and `LLM.load` read it like any checkpoint.

    Args:
        checkpoint_dir: folder with lit_model.pth, model_config.yaml and the tokenizer (the base model).
        out_dir: folder for checkpoints, logs and the loss curve.
        precision: 32-true, bf16-mixed, bf16-true, 16-mixed or 16-true (default: bf16-mixed, or 16-mixed on GPUs
            without bfloat16; with --quantize: bf16-true, or 16-true there).
        quantize: keep the frozen base weights in a bitsandbytes format: bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq
            or bnb.int8-training (needs a "-true" precision and one device).
        devices: devices per node (a number or "auto").
        num_nodes: machines taking part.
        resume: continue an interrupted run exactly: "auto" (the latest step-* in out_dir, if any), true (the
            latest, which must exist) or a step-* folder.
        adapter_prompt_length: learned prefix vectors per adapted layer.
        adapter_start_layer: first layer (0-based) that gets a prefix.
        data: the instruction data, e.g. `--data JSON --data.json_path FILE` (default: Alpaca).
        train: batch sizes, stop rules, schedule and checkpoint interval.
        eval: validation interval and size, and the generated sample.
        log: experiment-tracker names.
        optimizer: a torch.optim class name (AdamW) or {"class_path": ..., "init_args": {...}}.
        logger_name: csv (always written), or also tensorboard, wandb or mlflow.
        seed: seed of the data order and of the prefix initialisation.
        access_token: Hugging Face token for gated datasets (default: the HF_TOKEN environment variable).
        strategy: auto (FSDP on several devices), ddp or fsdp.
        accelerator: auto, cpu, cuda (gpu) or mps.
        compile: compile the model with torch.compile.
    """

finetune_adapter = make_adapter_verb(
    "v1", "out/finetune/adapter",
    "Finetune a checkpoint with LLaMA-Adapter: a learned prefix per layer, added through zero-initialised gates.\n\n"
    "    Only the prefixes and gates train.",
)
finetune_adapter.__name__ = finetune_adapter.__qualname__ = "finetune_adapter"

setup = finetune_adapter  # LitGPT's Python name (`from litgpt.finetune.adapter import setup`)
