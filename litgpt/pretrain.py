"""`litgpt pretrain`: train a model from random weights (or continue pretraining a checkpoint) on text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.model import GPT
from litgpt.finetune.common import TrainingFlags, training_verb
from litgpt.train.args import EvalArgs, TrainArgs
from litgpt.train.loop import Method, Problems, TrainingRun, fit
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
    """The architecture: `model_config` if given (it overrides `model_name`, as in LitGPT recipes that name
    both), else the registry config `model_name`, else the initial checkpoint's."""
    if model_config is not None:
        if model_name is not None and model_config.name and model_name != model_config.name:
            import warnings

            warnings.warn(f"model_config ({model_config.name!r}) overrides model_name ({model_name!r})")
        return model_config
    if initial_checkpoint_dir is not None and model_name is None:
        return Config.from_file(Path(initial_checkpoint_dir) / "model_config.yaml")
    if model_name is None:
        raise ValueError("give a model name (e.g. `litgpt pretrain pythia-14m`) or --model_config")
    return Config.from_name(model_name)


@training_verb(
    "model_name model_config out_dir precision initial_checkpoint_dir resume data train eval log optimizer devices "
    "num_nodes tokenizer_dir logger_name seed strategy accelerator compile",
    help={"data": "the corpus, e.g. `--data TextFiles --data.train_data_path DIR` (or TinyLlama, MicroLlama, "
                  "OpenWebText, TinyStories, LitData).",
          "precision": "32-true, bf16-mixed, bf16-true, 16-mixed or 16-true (default: bf16-mixed, or 16-mixed on GPUs "
                       "without bfloat16)."},
    out_dir=Path("out/pretrain"), devices="auto", seed=42, eval=EvalArgs(interval=1000, max_iters=100),
    train=TrainArgs(save_interval=1000, log_interval=1, global_batch_size=512, micro_batch_size=4, max_tokens=int(3e12),
                    max_norm=1.0, min_lr=4e-5, lr_warmup_steps=2000, tie_embeddings=False),
)
def pretrain(
    model_name: Optional[str] = None,
    model_config: Optional[Config] = None,
    initial_checkpoint_dir: Optional[Path] = None,
    tokenizer_dir: Optional[Path] = None,
    *,
    flags: TrainingFlags,
) -> Optional[Path]:
    """Pretrain a model from random weights, or continue pretraining a checkpoint.

    Writes `out_dir/step-*/` checkpoints (resumable), `out_dir/final/` (what generate, chat, serve and
    convert_from_litgpt read), `out_dir/logs/metrics.csv` and `out_dir/loss.png`.

    Args:
        model_name: a registry name (e.g. pythia-14m), or "list" to print them. With --model_config, the
            config wins (as in LitGPT).
        model_config: the architecture as Config fields (e.g. in a YAML recipe); overrides model_name.
        initial_checkpoint_dir: continue pretraining from this checkpoint's weights (optimizer starts fresh).
        tokenizer_dir: folder with the tokenizer (default: initial_checkpoint_dir).
    """
    if model_name == "list" and model_config is None:
        from litgpt.config import name_to_config

        print("\n".join(sorted(name_to_config)))
        return None
    # every argument is checked before anything is created, and all problems are reported together
    problems = Problems()
    method = Pretraining(initial_checkpoint_dir)
    config = None
    with problems.check():
        if initial_checkpoint_dir is not None:
            method.check()
    if not problems.errors or model_name is not None or model_config is not None:
        with problems.check():
            config = resolve_config(model_name, model_config, initial_checkpoint_dir)
    train = flags.train
    if config is not None and train.tie_embeddings is not None and train.tie_embeddings != config.tie_embeddings:
        import dataclasses

        config = dataclasses.replace(config, tie_embeddings=train.tie_embeddings)
    if tokenizer_dir is None and initial_checkpoint_dir is not None and any(
            (Path(initial_checkpoint_dir) / f).is_file() for f in TOKENIZER_FILES[:2]):
        tokenizer_dir = initial_checkpoint_dir
    run = TrainingRun(
        verb="pretrain", config=config, data=flags.data, tokenizer_dir=tokenizer_dir, out_dir=Path(flags.out_dir),
        train=train, eval=flags.eval, log=flags.log, optimizer=flags.optimizer, precision=flags.precision,
        devices=flags.devices, num_nodes=flags.num_nodes, strategy=flags.strategy, accelerator=flags.accelerator,
        compile=flags.compile, resume=flags.resume, seed=flags.seed, logger_name=flags.logger_name,
        hyperparameters=flags.hyperparameters,
    )
    return fit(method, run, problems)


setup = pretrain  # LitGPT's Python name (`from litgpt.pretrain import setup`)
