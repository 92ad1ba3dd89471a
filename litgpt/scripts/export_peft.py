"""`litgpt export_peft`: a LoRA run's weights in the PEFT library's format.

The output folder holds `adapter_config.json` and `adapter_model.safetensors`, which
`peft.PeftModel.from_pretrained(model, folder)` loads on top of the base checkpoint exported with
`litgpt convert_from_litgpt` (so transformers, vLLM and other PEFT-aware tools can serve the adapter without
merging it).

Names follow the layout `convert_from_litgpt` writes for the family. Where that layout splits one of our
layers into several (the fused qkv into q_proj / k_proj / v_proj), the LoRA update splits the same way: each
part (query, key, value) has its own rank-r update here as in PEFT, so each projection gets its own lora_A
and lora_B. A fused HF qkv (GPT-NeoX's query_key_value) with several parts enabled gets one update of rank
r per part (`rank_pattern` / `alpha_pattern` in adapter_config.json keep the scale). Layouts PEFT cannot
express are refused with a one-line error: a layer fused with another one (Phi-3's gate_up_proj), transposed
Conv1D weights, MoE experts (3-D tensors in transformers), and a LoRA head tied to the token embedding
(PEFT's `merge_and_unload` would fold the head's update into the shared embedding matrix as well).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

import torch

from litgpt.config import Config
from litgpt.lora import LORA_FILE, LoRASettings, is_lora_key, lora_blocks, place_blocks, qkv_segments, read_hyperparameters
from litgpt.utils import atomic_path, load_state_dict

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def export_peft(
    checkpoint_dir: Path,
    out_dir: Optional[Path] = None,
    base_model_name_or_path: Optional[str] = None,
) -> Path:
    """Export the LoRA weights of a finetuning run as a PEFT adapter (adapter_config.json +
    adapter_model.safetensors) for the Hugging Face model that `litgpt convert_from_litgpt` makes of its base.

    Args:
        checkpoint_dir: a LoRA run's step-* or final folder (lit_model.pth.lora, hyperparameters.yaml,
            model_config.yaml).
        out_dir: folder to write the adapter into (default: checkpoint_dir/peft).
        base_model_name_or_path: recorded in adapter_config.json (default: the model's Hugging Face repository,
            else the base checkpoint folder of the run).

    Returns:
        The output folder.
    """
    folder = Path(checkpoint_dir)
    for name in (LORA_FILE, "model_config.yaml"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}: give the step-* or final folder of a LoRA run")
    hparams = read_hyperparameters(folder)
    settings = LoRASettings.from_hyperparameters(hparams, source=str(folder / "hyperparameters.yaml"))
    config = Config.from_file(folder / "model_config.yaml")
    tensors, targets, ranks = peft_tensors(load_state_dict(folder / LORA_FILE), settings, config)
    if base_model_name_or_path is None:
        hf = config.hf_config or {}
        base_model_name_or_path = f"{hf['org']}/{hf['name']}" if hf.get("org") and hf.get("name") else \
            str(hparams.get("checkpoint_dir", ""))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": ranks,
        "alpha_pattern": {target: settings.alpha * rank / settings.r for target, rank in ranks.items()},
    }
    out_dir = Path(out_dir) if out_dir is not None else folder / "peft"
    _write(out_dir, tensors, adapter_config)
    print(f"Saved the LoRA weights of {folder} as a PEFT adapter ({len(targets)} target modules) to {out_dir}",
          file=sys.stderr)
    return out_dir


def peft_tensors(
    lora_state: dict[str, torch.Tensor], settings: LoRASettings, config: Config
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, int]]:
    """PEFT's tensors (`base_model.model.<hf module>.lora_A.weight` / `.lora_B.weight`) for our LoRA tensors,
    the target module names (suffixes of the Hugging Face module names) and the targets whose rank is not r."""
    from litgpt.scripts.convert_hf_checkpoint import lit_shapes
    from litgpt.scripts.hf_families import family_for_config, weight_rules

    family, hf_config = family_for_config(config)
    layout = family.weight_layout(config, hf_config)
    shapes = lit_shapes(config)
    rules = {r.lit: r for r in weight_rules(layout, config, list(shapes)) if r.canonical}
    prefixes = sorted({k.rsplit(".", 1)[0] for k in lora_state if is_lora_key(k)})
    if not prefixes:
        raise ValueError(f"{LORA_FILE} holds no LoRA tensors")
    if config.tie_embeddings and "lm_head" in prefixes:
        raise ValueError(
            "the run has a LoRA head (--lora_head true) on a model whose head is tied to the token embedding, which "
            "PEFT's merge_and_unload would change too; export the merged model (the run's final folder) with "
            "convert_from_litgpt instead"
        )
    tensors: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    ranks: dict[str, int] = {}
    for prefix in prefixes:
        if ".experts." in prefix:
            raise ValueError(
                f"{prefix} is a MoE expert, which transformers keeps in fused 3-D tensors that PEFT's LoRA cannot "
                "target; merge the run (its final folder) and export it with convert_from_litgpt instead"
            )
        rule = rules.get((prefix + ".weight",))
        if rule is None:
            raise ValueError(
                f"{family.architecture} stores {prefix} fused with another layer, which a PEFT LoRA adapter cannot "
                "express; export the merged model (the run's final folder) with convert_from_litgpt instead"
            )
        A, B = lora_state[prefix + ".lora_A"], lora_state[prefix + ".lora_B"]
        out_features = shapes[prefix + ".weight"][0]
        segments = qkv_segments(config, settings) if prefix.endswith("attn.qkv") else None
        # one low-rank pair (each qkv part in its own columns of B) and a mask of B's used entries, with B's rows
        # where the weight's rows are, then split / reordered like the weight
        a_full, b_full = lora_blocks(A, B, out_features, segments)
        mask = place_blocks(torch.ones_like(B), out_features, segments)
        parts, masks = rule.to_hf([b_full]), rule.to_hf([mask])
        layer = re.match(r"transformer\.h\.(\d+)\.", prefix)
        strip = layout.layer_prefix.format(i=int(layer[1])) if layer else ""
        for hf_key, part, part_mask in zip(rule.hf, parts, masks):
            if part.dim() != 2 or part.size(1) != b_full.size(1) or part_mask.size(1) != b_full.size(1):
                raise ValueError(
                    f"{family.architecture} stores {prefix} transposed, which a PEFT LoRA adapter cannot express; "
                    "export the merged model (the run's final folder) with convert_from_litgpt instead"
                )
            used = part_mask.bool().any(0)  # the columns (rank-r blocks of parts) this HF module uses
            if not bool(used.any()):
                continue  # a part without LoRA (e.g. the keys when only query and value are targets)
            module = hf_key.removesuffix(".weight")
            tensors[f"base_model.model.{module}.lora_A.weight"] = a_full[used].contiguous().clone()
            tensors[f"base_model.model.{module}.lora_B.weight"] = part[:, used].contiguous().clone()
            target = module.removeprefix(strip)
            targets.add(target)
            if int(used.sum()) != settings.r:
                ranks[target] = int(used.sum())
    return tensors, sorted(targets), ranks


def _write(out_dir: Path, tensors: dict[str, torch.Tensor], adapter_config: dict) -> None:
    from safetensors.torch import save_file

    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / PEFT_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    with atomic_path(out_dir / PEFT_CONFIG) as tmp:
        tmp.write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
