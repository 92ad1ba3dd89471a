"""`litgpt finetune_full`: finetune every weight of a checkpoint on instruction data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt.data.base import DataModule
from litgpt.finetune.common import FullFinetuning, run_finetuning
from litgpt.train.args import EvalArgs, LoggerName, LogArgs, Precision, Strategy, TrainArgs


def finetune_full(
    checkpoint_dir: Path,
    out_dir: Path = Path("out/finetune/full"),
    precision: Optional[Precision] = None,
    devices: Union[int, str] = 1,
    num_nodes: int = 1,
    resume: Union[bool, Literal["auto"], Path] = False,
    data: Optional[DataModule] = None,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=100,
        epochs=5, max_seq_length=None,
    ),
    eval: EvalArgs = EvalArgs(interval=600, max_new_tokens=100, max_iters=100),
    log: LogArgs = LogArgs(),
    optimizer: Union[str, dict] = "AdamW",
    logger_name: LoggerName = "csv",
    seed: int = 1337,
    access_token: Optional[str] = None,
    strategy: Strategy = "auto",
    accelerator: str = "auto",
    compile: bool = False,
) -> Optional[Path]:
    """Finetune every weight of a checkpoint on instruction data.

    Writes `out_dir/step-*/` checkpoints (resumable), `out_dir/final/` (weights, config, tokenizer files and
    the data's prompt style: what generate, chat, serve and convert_from_litgpt read), `out_dir/logs/metrics.csv`
    and `out_dir/loss.png`.

    Args:
        checkpoint_dir: folder with lit_model.pth, model_config.yaml and the tokenizer.
        out_dir: folder for checkpoints, logs and the loss curve.
        precision: 32-true, bf16-mixed, bf16-true, 16-mixed or 16-true (default: bf16-mixed, or 16-mixed on
            GPUs without bfloat16).
        devices: devices per node (a number or "auto").
        num_nodes: machines taking part.
        resume: continue an interrupted run exactly: "auto" (the latest step-* in out_dir, if any), true (the
            latest, which must exist) or a step-* folder.
        data: the instruction data, e.g. `--data JSON --data.json_path FILE` (default: Alpaca).
        train: batch sizes, stop rules, schedule and checkpoint interval.
        eval: validation interval and size, and the generated sample.
        log: experiment-tracker names.
        optimizer: a torch.optim class name (AdamW) or {"class_path": ..., "init_args": {...}}.
        logger_name: csv (always written), or also tensorboard, wandb or mlflow.
        seed: seed of the data order.
        access_token: Hugging Face token for gated datasets (default: the HF_TOKEN environment variable).
        strategy: auto (FSDP on several devices), ddp or fsdp.
        accelerator: auto, cpu, cuda (gpu) or mps.
        compile: compile the model with torch.compile.
    """
    hyperparameters = dict(locals())
    hyperparameters.pop("access_token")
    if access_token is not None and data is not None and hasattr(data, "access_token") and data.access_token is None:
        data.access_token = access_token
    return run_finetuning(
        FullFinetuning(checkpoint_dir), "finetune_full", checkpoint_dir, out_dir, precision, devices, num_nodes,
        resume, data, train, eval, log, optimizer, logger_name, seed, strategy, accelerator, compile, hyperparameters,
    )


setup = finetune_full  # LitGPT's Python name (`from litgpt.finetune.full import setup`)
