"""`litgpt convert_pretrained_checkpoint`: a pretraining checkpoint folder -> a plain checkpoint folder.

The output holds `lit_model.pth` with the model's state dict only (no optimizer or training state),
`model_config.yaml` and the tokenizer / prompt-style files: what finetuning, generate, chat, serve and
`convert_from_litgpt` read. Takes our pretrain folders (`step-*`, `final`) and LitGPT's (a `lit_model.pth` holding
{"model": ..., "optimizer": ..., ...}).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import check_state_dict_matches, check_valid_checkpoint_dir, copy_side_files, load_state_dict, save_atomic

_WRAPPER_PREFIXES = ("_forward_module.", "_orig_mod.", "module.")


def convert_pretrained_checkpoint(checkpoint_dir: Path, output_dir: Path) -> None:
    """Convert a checkpoint after pretraining: keep the model weights, config and tokenizer only.

    Args:
        checkpoint_dir: Path to a checkpoint directory produced by `litgpt pretrain` (ours or LitGPT's).
        output_dir: The output folder where the converted state-dict file and config files will be saved to.
    """
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    check_valid_checkpoint_dir(checkpoint_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} exists and is not a directory")
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    state = {_strip_wrappers(k): v for k, v in load_state_dict(checkpoint_dir / "lit_model.pth").items()}
    with torch.device("meta"):
        own = GPT(config).state_dict()
    check_state_dict_matches(own, state, checkpoint_dir / "lit_model.pth",
                             optional=("lm_head.weight",) if config.tie_embeddings else ())
    output_dir.mkdir(parents=True, exist_ok=True)
    save_atomic(state, output_dir / "lit_model.pth")
    config.save(output_dir)
    copy_side_files(checkpoint_dir, output_dir)
    print(f"Saved the model weights, config and tokenizer of {checkpoint_dir} to {output_dir}", file=sys.stderr)


def _strip_wrappers(key: str) -> str:
    """A key without the prefixes that wrapped (compiled, Fabric, DDP) modules add."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key
