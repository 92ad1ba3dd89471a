"""`litgpt finetune_adapter_v2`: LLaMA-Adapter v2 (gated prefix, plus bias and scale on every linear layer and
trainable norms) on instruction data. Same loop, files and loading as `litgpt finetune_adapter`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt.data.base import DataModule
from litgpt.finetune.adapter import run_adapter_verb
from litgpt.finetune.lora import QLoRAMode
from litgpt.train.args import EvalArgs, LoggerName, LogArgs, Precision, Strategy, TrainArgs


def finetune_adapter_v2(
    checkpoint_dir: Path,
    out_dir: Path = Path("out/finetune/adapter-v2"),
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
    """Finetune a checkpoint with LLaMA-Adapter v2: a gated prefix per layer, a bias and a scale on every linear
    layer (starting at 0 and 1) and the norms' weights.

    Only those train. `out_dir/step-*/` hold `lit_model.pth.adapter` (small; resumable); `out_dir/final/` holds the
    full `lit_model.pth`, `adapter.yaml`, the config, tokenizer files and the data's prompt style: generate, chat,
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
    return run_adapter_verb("v2", dict(locals()))


setup = finetune_adapter_v2  # LitGPT's Python name (`from litgpt.finetune.adapter_v2 import setup`)
