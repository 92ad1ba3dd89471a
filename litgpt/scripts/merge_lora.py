"""`litgpt merge_lora`: fold a finetuning run's LoRA weights into its base checkpoint's weights.

A LoRA run's step folders hold only `lit_model.pth.lora` (and its settings in `hyperparameters.yaml`); this
writes the merged `lit_model.pth` next to them, which makes the folder an ordinary checkpoint for generate,
chat, serve, `LLM.load`, evaluate and convert_from_litgpt. (The final folder of a run is merged already.)
A step folder of an adapter run (`lit_model.pth.adapter`) gets its full `lit_model.pth` the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch

from litgpt.adapter import ADAPTER_FILE, combine_adapter_weights, read_adapter_config
from litgpt.checkpoint import check_base_checkpoint
from litgpt.config import Config
from litgpt.lora import LORA_FILE, LoRASettings, merge_lora_state, read_hyperparameters
from litgpt.model import GPT
from litgpt.utils import (
    check_state_dict_matches,
    copy_side_files,
    load_state_dict,
    parse_dtype,
    save_atomic,
)


def merge_lora(
    checkpoint_dir: Path,
    pretrained_checkpoint_dir: Optional[Path] = None,
    precision: Optional[str] = None,
) -> Path:
    """Merge the LoRA weights of a finetuning run's checkpoint folder into the base model's weights.

    Writes `lit_model.pth` into `checkpoint_dir` (atomically): the base checkpoint with the LoRA updates folded
    in, so the folder loads like any checkpoint and gives the same logits as the unmerged LoRA model.

    Args:
        checkpoint_dir: a LoRA run's step-* or final folder (lit_model.pth.lora, hyperparameters.yaml,
            model_config.yaml), or an adapter run's step-* folder (lit_model.pth.adapter, adapter.yaml).
        pretrained_checkpoint_dir: the base checkpoint the run finetuned (default: the checkpoint_dir recorded
            in the run's hyperparameters.yaml / adapter.yaml).
        precision: dtype of the merged weights, e.g. bf16-true or float32 (default: the base checkpoint's).

    Returns:
        The path of the written lit_model.pth.
    """
    folder = Path(checkpoint_dir)
    dtype = parse_dtype(precision.replace("-mixed", "-true")) if precision is not None else None
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint directory {folder} does not exist")
    is_lora = (folder / LORA_FILE).is_file()
    if not is_lora and not (folder / ADAPTER_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} has no {LORA_FILE}: give the step-* or final folder of a `litgpt finetune_lora` run"
        )
    if is_lora:
        hparams = read_hyperparameters(folder)
        settings = LoRASettings.from_hyperparameters(hparams, source=str(folder / "hyperparameters.yaml"))
        recorded, record = hparams.get("checkpoint_dir"), "hyperparameters.yaml"
    else:
        found = read_adapter_config(folder)
        if found is None:
            raise FileNotFoundError(f"{folder} has {ADAPTER_FILE} but no adapter.yaml saying which adapter it is")
        recorded, record = found[1].get("checkpoint_dir"), "adapter.yaml"
    base_dir = _base_dir(folder, pretrained_checkpoint_dir, recorded, record)
    config = Config.from_file((folder if (folder / "model_config.yaml").is_file() else base_dir) / "model_config.yaml")

    base = load_state_dict(base_dir / "lit_model.pth")
    with torch.device("meta"):
        own = GPT(config).state_dict()
    check_state_dict_matches(own, base, base_dir / "lit_model.pth",
                             optional=("lm_head.weight",) if config.tie_embeddings else ())
    if is_lora:
        merged = merge_lora_state(base, load_state_dict(folder / LORA_FILE), settings, config,
                                    source=str(folder / LORA_FILE))
    else:
        merged = combine_adapter_weights(base, load_state_dict(folder / ADAPTER_FILE))
    if dtype is not None:
        merged = {k: v.to(dtype) if v.is_floating_point() else v for k, v in merged.items()}
    out = save_atomic(merged, folder / "lit_model.pth")
    if not (folder / "model_config.yaml").is_file():
        config.save(folder)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        copy_side_files(base_dir, folder)
    what = "LoRA" if is_lora else "adapter"
    print(f"Merged the {what} weights of {folder} with {base_dir} into {out}", file=sys.stderr)
    return out


def _base_dir(folder: Path, given: Optional[Path], recorded: Optional[str], record: str) -> Path:
    """The base checkpoint folder: the one given, else the one the run recorded (one-line errors)."""
    if given is not None:
        return check_base_checkpoint(given)
    if not recorded:
        raise ValueError(f"{folder / record} records no checkpoint_dir: pass --pretrained_checkpoint_dir")
    base = Path(recorded)
    if not base.is_dir():
        raise FileNotFoundError(
            f"the base checkpoint {base} recorded in {folder / record} does not exist (here); pass "
            "--pretrained_checkpoint_dir"
        )
    return check_base_checkpoint(base)
