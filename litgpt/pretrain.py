"""`litgpt pretrain`: train a model from random weights (or continue pretraining a checkpoint) on text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional, Union

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.data.base import DataModule
from litgpt.model import GPT
from litgpt.train.args import EvalArgs, LoggerName, LogArgs, Precision, Strategy, TrainArgs
from litgpt.train.loop import Method, TrainingRun, fit
from litgpt.utils import TOKENIZER_FILES
from litgpt.checkpoint import load_checkpoint


def init_weights(model: GPT) -> None:
    """Random initialisation for pretraining: normal(0, sqrt(2 / (5 n_embd))) for embeddings and linear layers
    ("small init", Nguyen & Salazar 2019), normal(0, 2 / (n_layer sqrt(n_embd))) for the layers writing into
    the residual stream (attention and MLP output projections, GPT-NeoX's "wang init"), zero biases, norms as built (unit scale).
    """
    config = model.config
    std = math.sqrt(2.0 / (5 * config.n_embd))
    out_std = 2.0 / (config.n_layer * math.sqrt(config.n_embd))
    residual_outputs = set()
    for block in model.transformer.h:
        residual_outputs.add(block.attn.proj)
        for name, module in block.mlp.named_modules():
            if name.endswith("proj") and isinstance(module, nn.Linear):
                residual_outputs.add(module)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=out_std if module in residual_outputs else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class Pretraining(Method):
    """Random init (seeded), or the weights of `initial_checkpoint_dir` for continued pretraining."""

    name = "pretrain"

    def __init__(self, initial_checkpoint_dir: Optional[Path] = None) -> None:
        self.initial_checkpoint_dir = initial_checkpoint_dir

    def check(self) -> None:
        if self.initial_checkpoint_dir is not None:
            from litgpt.checkpoint import check_base_checkpoint

            check_base_checkpoint(self.initial_checkpoint_dir)

    def build_model(self, config: Config) -> GPT:
        if self.initial_checkpoint_dir is None:
            model = GPT(config)
            init_weights(model)
            return model
        with torch.device("meta"):
            model = GPT(config)
        load_checkpoint(model, Path(self.initial_checkpoint_dir) / "lit_model.pth")
        return model


def resolve_config(model_name: Optional[str], model_config: Optional[Config],
                   initial_checkpoint_dir: Optional[Path]) -> Config:
    """The architecture from exactly one of model_name / model_config (or the initial checkpoint's)."""
    if model_name is not None and model_config is not None:
        raise ValueError("give either model_name or --model_config, not both")
    if model_config is not None:
        return model_config
    if initial_checkpoint_dir is not None and model_name is None:
        return Config.from_file(Path(initial_checkpoint_dir) / "model_config.yaml")
    if model_name is None:
        raise ValueError("give a model name (e.g. `litgpt pretrain pythia-14m`) or --model_config")
    return Config.from_name(model_name)


def pretrain(
    model_name: Optional[str] = None,
    model_config: Optional[Config] = None,
    out_dir: Path = Path("out/pretrain"),
    precision: Optional[Precision] = None,
    initial_checkpoint_dir: Optional[Path] = None,
    resume: Union[bool, Literal["auto"], Path] = False,
    data: Optional[DataModule] = None,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=512, micro_batch_size=4, max_tokens=int(3e12),
        max_norm=1.0, min_lr=4e-5, lr_warmup_steps=2000, tie_embeddings=False,
    ),
    eval: EvalArgs = EvalArgs(interval=1000, max_iters=100),
    log: LogArgs = LogArgs(),
    optimizer: Union[str, dict] = "AdamW",
    devices: Union[int, str] = "auto",
    num_nodes: int = 1,
    tokenizer_dir: Optional[Path] = None,
    logger_name: LoggerName = "csv",
    seed: int = 42,
    strategy: Strategy = "auto",
    accelerator: str = "auto",
    compile: bool = False,
) -> Optional[Path]:
    """Pretrain a model from random weights, or continue pretraining a checkpoint.

    Writes `out_dir/step-*/` checkpoints (resumable), `out_dir/final/` (what generate, chat, serve and
    convert_from_litgpt read), `out_dir/logs/metrics.csv` and `out_dir/loss.png`.

    Args:
        model_name: a registry name (e.g. pythia-14m); `litgpt download list` shows them. Not with --model_config.
        model_config: the architecture as Config fields (e.g. in a YAML recipe). Not with model_name.
        out_dir: folder for checkpoints, logs and the loss curve.
        precision: 32-true, bf16-mixed, bf16-true, 16-mixed or 16-true (default: bf16-mixed, or 16-mixed on
            GPUs without bfloat16).
        initial_checkpoint_dir: continue pretraining from this checkpoint's weights (optimizer starts fresh).
        resume: continue an interrupted run exactly: "auto" (the latest step-* in out_dir, if any), true (the
            latest, which must exist) or a step-* folder.
        data: the corpus, e.g. `--data TextFiles --data.train_data_path DIR` (or TinyStories, OpenWebText).
        train: batch sizes, stop rules, schedule and checkpoint interval.
        eval: validation interval and size, and the generated sample.
        log: experiment-tracker names.
        optimizer: a torch.optim class name (AdamW) or {"class_path": ..., "init_args": {...}}.
        devices: devices per node (a number or "auto").
        num_nodes: machines taking part (see tutorials/pretrain.md for launching).
        tokenizer_dir: folder with the tokenizer (default: initial_checkpoint_dir).
        logger_name: csv (always written), or also tensorboard, wandb or mlflow.
        seed: seed of the initialisation and the data order.
        strategy: auto (FSDP on several devices), ddp or fsdp.
        accelerator: auto, cpu, cuda (gpu) or mps.
        compile: compile the model with torch.compile.
    """
    hyperparameters = dict(locals())
    if data is None:
        raise ValueError("pass a dataset, e.g. --data TextFiles --data.train_data_path DIR (or TinyStories, OpenWebText)")
    config = resolve_config(model_name, model_config, initial_checkpoint_dir)
    if train.tie_embeddings is not None and train.tie_embeddings != config.tie_embeddings:
        import dataclasses

        config = dataclasses.replace(config, tie_embeddings=train.tie_embeddings)
    if tokenizer_dir is None and initial_checkpoint_dir is not None and any(
            (Path(initial_checkpoint_dir) / f).is_file() for f in TOKENIZER_FILES[:2]):
        tokenizer_dir = initial_checkpoint_dir
    run = TrainingRun(
        verb="pretrain", config=config, data=data, tokenizer_dir=tokenizer_dir, out_dir=Path(out_dir),
        train=train, eval=eval, log=log, optimizer=optimizer, precision=precision, devices=devices,
        num_nodes=num_nodes, strategy=strategy, accelerator=accelerator, compile=compile, resume=resume,
        seed=seed, logger_name=logger_name, hyperparameters=hyperparameters,
    )
    return fit(Pretraining(initial_checkpoint_dir), run)


setup = pretrain  # LitGPT's Python name (`from litgpt.pretrain import setup`)
