"""Checkpoint loading: the one place that decides how a checkpoint folder's files become a model's weights.

Layer 4 (above the model and the module-swapping PEFT/quantization modules, below the engines and verbs):
- base weights: `lit_model.pth` (plain state dict or a training checkpoint's {'model': ...});
- PEFT files: an adapter run's folder (`adapter.yaml`) gives the model its adapter modules before loading;
- tied embeddings: a checkpoint with different `lm_head` and `wte` matrices (trained untied, as LitGPT always
  trains) loads untied, whatever the config's `tie_embeddings` says;
- whether a folder is a full checkpoint a finetuning run can start from.
Quantized loading (`litgpt.quantization.loading`) sits in the same layer and shares the key checks below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch.nn as nn

from litgpt.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    AdapterAttention,
    inject_adapter,
    read_adapter_config,
)
from litgpt.lora import LORA_FILE
from litgpt.utils import check_state_dict_matches, check_valid_checkpoint_dir, load_state_dict

PathLike = Union[str, Path]


def apply_peft_files(model: nn.Module, checkpoint_dir: PathLike) -> bool:
    """Gives `model` the adapter modules the weights of `checkpoint_dir` need (from its `adapter.yaml`), before
    they are loaded; returns whether it did. A folder without `adapter.yaml` (a plain or merged LoRA
    checkpoint) and a model that has its adapter already are left alone."""
    found = read_adapter_config(checkpoint_dir)
    if found is None or any(isinstance(m, AdapterAttention) for m in model.modules()):
        return False
    settings, _ = found
    settings.validate(model.config.n_layer)
    inject_adapter(model, settings)
    return True


def load_checkpoint(model: nn.Module, path: PathLike, strict: bool = True) -> None:
    """Loads `lit_model.pth` at `path` into `model` (a GPT, possibly on the meta device).

    The folder of an adapter run (with `adapter.yaml`) first gives the model its adapter modules; when strict,
    missing or unexpected keys are named in one line; a checkpoint whose `lm_head` differs from `wte` loads
    untied even if the config ties them.
    """
    state = load_state_dict(path)
    apply_peft_files(model, Path(path).parent)
    if strict:
        check_state_dict_matches(model.state_dict(), state, path)
    # GPT.load_state_dict unties a tied head when the checkpoint's lm_head and wte differ, and keeps (or
    # re-makes, after assign=True) the tie when they are equal
    model.load_state_dict(state, strict=strict, assign=any(p.is_meta for p in model.parameters()))


def check_base_checkpoint(checkpoint_dir: PathLike) -> Path:
    """Raises a one-line error unless `checkpoint_dir` is a full checkpoint a PEFT run can start from: not a
    folder of PEFT weights only (a step folder: run `litgpt merge_lora` on it first), nor an adapter run's
    folder (its weights need the adapter modules)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint directory {folder} does not exist")
    peft_only = [name for name in (LORA_FILE, ADAPTER_FILE) if (folder / name).is_file()]
    if peft_only and not (folder / "lit_model.pth").is_file():
        raise FileNotFoundError(
            f"{folder} holds only finetuned {peft_only[0]} weights, not a full lit_model.pth: run "
            f"`litgpt merge_lora {folder}` to merge them with their base checkpoint first"
        )
    if (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(
            f"{folder} is an adapter finetuning checkpoint ({ADAPTER_CONFIG}), not a base checkpoint: pass the "
            "checkpoint it was finetuned from (checkpoint_dir in its adapter.yaml)"
        )
    return check_valid_checkpoint_dir(folder)


def check_tokenizer_fits(tokenizer: object, config: object, checkpoint: PathLike) -> None:
    """A one-line ValueError when the tokenizer can produce ids the model has no embedding row for (a tokenizer
    from another model, or a checkpoint/tokenizer mismatch), which would otherwise decode to empty or wrong text."""
    rows = getattr(config, "padded_vocab_size", None) or getattr(config, "vocab_size", None)
    size = getattr(tokenizer, "vocab_size", None)
    if rows is not None and size is not None and size > rows:
        source = getattr(tokenizer, "checkpoint_dir", None) or "the tokenizer"
        raise ValueError(
            f"the tokenizer in {source} has {size} tokens but the model of {checkpoint} has only {rows} embedding "
            "rows: they do not belong together (pass the tokenizer of this model, e.g. with --tokenizer_dir)"
        )
