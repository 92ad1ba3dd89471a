"""`litgpt finetune_full`: finetune every weight of a checkpoint on instruction data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from litgpt.finetune.common import FINETUNE_TRAIN, FullFinetuning, TrainingFlags, finetune_order, run_finetuning, training_verb
from litgpt.train.args import EvalArgs


@training_verb(finetune_order(), out_dir=Path("out/finetune/full"), train=FINETUNE_TRAIN,
               eval=EvalArgs(interval=600, max_new_tokens=100, max_iters=100))
def finetune_full(*, flags: TrainingFlags) -> Optional[Path]:
    """Finetune every weight of a checkpoint on instruction data.

    Writes `out_dir/step-*/` checkpoints (resumable), `out_dir/final/` (weights, config, tokenizer files and
    the data's prompt style: what generate, chat, serve and convert_from_litgpt read), `out_dir/logs/metrics.csv`
    and `out_dir/loss.png`.
    """
    return run_finetuning(FullFinetuning(flags.checkpoint_dir), "finetune_full", flags)


setup = finetune_full  # LitGPT's Python name (`from litgpt.finetune.full import setup`)
