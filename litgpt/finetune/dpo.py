"""`litgpt finetune_dpo`: preference tuning (DPO, IPO, SimPO, ORPO) of a checkpoint, full or with LoRA, on the
training loop every verb shares. The loss lives in `litgpt.train.preference`, the data in
`litgpt.data.preference`; this verb only picks the method (full finetuning or the LoRA of `finetune_lora`) and
hands the loop the preference objective.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

from litgpt.data.preference import PreferenceDataModule
from litgpt.finetune.common import (
    FINETUNE_TRAIN,
    FullFinetuning,
    TrainingFlags,
    finetune_order,
    run_finetuning,
    training_verb,
)
from litgpt.finetune.peft import LoRAFinetuning, run_peft
from litgpt.lora import LoRASettings
from litgpt.train.args import EvalArgs
from litgpt.train.preference import PreferenceLoss, PreferenceObjective

LORA_FLAGS = "lora_r lora_alpha lora_dropout lora_query lora_key lora_value lora_projection lora_mlp lora_head"


@training_verb(
    finetune_order("method loss beta label_smoothing simpo_gamma precompute_ref " + LORA_FLAGS, quantize=True),
    help={"data": "the preference pairs: `--data Preference --data.json_path FILE`, `--data UltraFeedback` or "
                  "`--data AnthropicHH` (required)."},
    out_dir=Path("out/finetune/dpo"), train=dataclasses.replace(FINETUNE_TRAIN, epochs=1),
    eval=EvalArgs(interval=100, max_new_tokens=100, max_iters=100),
)
def finetune_dpo(
    method: Literal["lora", "full"] = "lora",
    loss: Literal["dpo", "ipo", "simpo", "orpo"] = "dpo",
    beta: Optional[float] = None,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    precompute_ref: bool = False,
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
    """Preference-tune a checkpoint (DPO, IPO, SimPO or ORPO) on pairs of chosen and rejected responses.

    Logs loss, rewards/chosen, rewards/rejected, rewards/accuracy, rewards/margin and logps/chosen, logps/rejected
    every step (and their val_ means at validation). Checkpoints are those of finetune_full (--method full) or
    finetune_lora (--method lora: step folders hold lit_model.pth.lora, final/ also the merged lit_model.pth;
    merge_lora and export_peft work on them). Resumable with --resume.

    Args:
        method: lora (only LoRA weights train; the reference model is the same model with LoRA switched off) or
            full (every weight trains; the reference is a frozen copy, or none with --precompute_ref true).
        loss: dpo (sigmoid loss), ipo, simpo (reference-free, length-normalised) or orpo (reference-free odds
            ratio plus the chosen answer's language-model loss).
        beta: dpo/ipo: strength of the pull towards the reference; simpo: reward scale; orpo: weight of the
            odds-ratio term (default 0.1; 2.0 for simpo).
        label_smoothing: dpo and simpo: assumed probability that a pair's preference is flipped (conservative DPO).
        simpo_gamma: simpo: target reward margin.
        precompute_ref: compute the reference log-probabilities of every pair once before training (cached in
            out_dir) instead of at every step; halves a full-finetuning step's forward passes.
        lora_r: rank of the LoRA update (>= 1).
        lora_alpha: scaling: the update is multiplied by lora_alpha / lora_r.
        lora_dropout: dropout on the LoRA branch's input during training.
        lora_query: LoRA on the query part of the attention projection.
        lora_key: LoRA on the key part of the attention projection.
        lora_value: LoRA on the value part of the attention projection.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP's linear layers.
        lora_head: LoRA on the output head.
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method must be lora or full, got {method!r}")
    spec = PreferenceLoss(loss, beta, label_smoothing, simpo_gamma).validate()
    data = flags.data
    if data is None:
        raise ValueError("finetune_dpo needs preference data: --data Preference --data.json_path FILE "
                         "(or --data UltraFeedback, --data AnthropicHH)")
    if not isinstance(data, PreferenceDataModule):
        raise ValueError(f"--data {type(data).__name__} holds no preference pairs; use Preference, UltraFeedback or "
                         "AnthropicHH")
    if data.prompt_style is None:
        data.prompt_style = _model_prompt_style(flags.checkpoint_dir)
    if method == "full":
        if flags.quantize is not None:
            raise ValueError("--quantize needs --method lora (full finetuning trains unquantized weights)")
        full = FullFinetuning(flags.checkpoint_dir)
        full.objective = PreferenceObjective(spec, reference="copy", precompute=precompute_ref)
        return run_finetuning(full, "finetune_dpo", flags)
    settings = LoRASettings(lora_r, lora_alpha, lora_dropout, lora_query, lora_key, lora_value, lora_projection,
                            lora_mlp, lora_head).validate()
    lora = LoRAFinetuning(flags, settings)
    lora.objective = PreferenceObjective(spec, reference="lora_off", precompute=precompute_ref)
    return run_peft(lora, "finetune_dpo")


def _model_prompt_style(checkpoint_dir: Path):
    """The checkpoint's prompt style: its prompt_style.yaml, else the one its model name implies."""
    from litgpt.config import Config
    from litgpt.prompts import resolve_prompt_style
    from litgpt.utils import check_valid_checkpoint_dir

    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    return resolve_prompt_style(checkpoint_dir, Config.from_file(checkpoint_dir / "model_config.yaml"))


setup = finetune_dpo
