"""What every finetuning verb shares: load the checkpoint's config, default the data, build the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from litgpt.config import Config
from litgpt.data.base import DataModule
from litgpt.model import GPT
from litgpt.train.args import EvalArgs, LogArgs, TrainArgs
from litgpt.train.loop import Method, TrainingRun, fit
from litgpt.utils import check_valid_checkpoint_dir
from litgpt.checkpoint import load_checkpoint


class FullFinetuning(Method):
    """Every weight of the checkpoint trains; checkpoints hold the whole model."""

    name = "full"

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)

    def check(self) -> None:
        from litgpt.checkpoint import check_base_checkpoint

        check_base_checkpoint(self.checkpoint_dir)  # not a folder of PEFT weights only, nor an adapter run's

    def build_model(self, config: Config) -> GPT:
        """The checkpoint's model: built on the meta device, then its weights assigned (no random init)."""
        with torch.device("meta"):
            model = GPT(config)
        load_checkpoint(model, self.checkpoint_dir / "lit_model.pth")
        return model


def run_finetuning(
    method: Method,
    verb: str,
    checkpoint_dir: Path,
    out_dir: Path,
    precision: Optional[str],
    devices: Union[int, str],
    num_nodes: int,
    resume: Union[bool, str, Path],
    data: Optional[DataModule],
    train: TrainArgs,
    eval: EvalArgs,
    log: LogArgs,
    optimizer: Union[str, dict],
    logger_name: str,
    seed: int,
    strategy: str,
    accelerator: str,
    compile: bool,
    hyperparameters: dict[str, Any],
    extra_files: Optional[Callable[[Path], None]] = None,
) -> Optional[Path]:
    """Checks the checkpoint folder, defaults the data to Alpaca, and trains with `fit`.

    `extra_files(folder)` writes the method's own files into every checkpoint folder (e.g. `adapter.yaml`).
    Returns the final checkpoint folder (on rank 0).
    """
    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    if data is None:
        from litgpt.data import Alpaca

        data = Alpaca()
    run = TrainingRun(
        verb=verb, config=config, data=data, tokenizer_dir=checkpoint_dir, out_dir=Path(out_dir), train=train,
        eval=eval, log=log, optimizer=optimizer, precision=precision, devices=devices, num_nodes=num_nodes,
        strategy=strategy, accelerator=accelerator, compile=compile, resume=resume, seed=seed,
        logger_name=logger_name, hyperparameters=hyperparameters, extra_files=extra_files,
    )
    return fit(method, run)
