"""`litgpt convert_from_litgpt`: `lit_model.pth` + `model_config.yaml` -> a Hugging Face model folder.

The output (`config.json`, `model.safetensors` or shards with `model.safetensors.index.json`, the tokenizer
files) loads with `transformers.AutoModelForCausalLM.from_pretrained(output_dir)`. The architecture is the
most specific Hugging Face family that represents the Config exactly (`hf_families.family_for_config`), and
the weights are written in that family's canonical Hub layout. Like LitGPT, it also writes `model.pth` (the same
tensors, torch.save), for scripts written for LitGPT; `--model_pth false` leaves it out (half the disk space).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from litgpt.config import Config
from litgpt.scripts.convert_hf_checkpoint import lit_shapes, read_hf_config
from litgpt.scripts.hf_families import Rule, family_for_config, weight_rules
from litgpt.utils import check_valid_checkpoint_dir, copy_side_files, load_state_dict

__all__ = ["convert_lit_checkpoint", "parse_size"]

_WEIGHT_FILE = re.compile(r"^model(-\d+-of-\d+)?\.safetensors$|^model\.safetensors\.index\.json$|^model\.pth$")
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def convert_lit_checkpoint(
    checkpoint_dir: Path,
    output_dir: Path,
    *,
    max_shard_size: Union[int, str] = "5GB",
    model_pth: bool = True,
) -> Path:
    """Converts a LitGPT checkpoint into a Hugging Face model folder that transformers loads directly.

    Args:
        checkpoint_dir: Folder holding `lit_model.pth` and `model_config.yaml` (and tokenizer files).
        output_dir: Folder to write `config.json`, the safetensors weights and the tokenizer files into.
        max_shard_size: Largest safetensors file, in bytes or as a string like "5GB" or "500MB"; bigger
            models are split into shards listed in `model.safetensors.index.json`.
        model_pth: Also write `model.pth`, the file LitGPT's convert_from_litgpt writes (the same tensors under
            their Hugging Face names, saved with torch.save), for scripts that load it with `torch.load` and
            pass it to `from_pretrained(..., state_dict=...)`, as LitGPT's convert_from_litgpt does. False leaves it
            out, halving the disk space.

    Returns:
        The output folder.
    """
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    check_valid_checkpoint_dir(checkpoint_dir)
    limit = parse_size(max_shard_size)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    state = load_state_dict(checkpoint_dir / "lit_model.pth")
    if (
        config.tie_embeddings
        and "lm_head.weight" in state
        and "transformer.wte.weight" in state
        and not torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])
    ):  # e.g. trained by a tool that does not tie them: keep both matrices rather than drop the head
        print("lm_head.weight differs from the token embedding: exporting untied", file=sys.stderr)
        config = dataclasses.replace(config, tie_embeddings=False)
    family, hf_config = family_for_config(config)
    shapes = lit_shapes(config)
    _check_state(state, shapes, checkpoint_dir / "lit_model.pth", tied=config.tie_embeddings)

    rules = [r for r in weight_rules(family.weight_layout(config, hf_config), config, list(shapes)) if r.canonical]
    if config.tie_embeddings:  # Hugging Face ties the head to the embedding when loading: no copy on disk
        rules = [r for r in rules if r.lit != ("lm_head.weight",)]
    shards = _plan_shards(rules, state, limit)

    hf_config.update(_extra_config_fields(checkpoint_dir, state))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    try:
        _write_weights(shards, state, tmp_dir)
        if model_pth:
            torch.save(dict(_hf_tensors([r for shard in shards for r in shard], state)), tmp_dir / "model.pth")
        (tmp_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        copy_side_files(checkpoint_dir, tmp_dir)
        _move_into_place(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    print(f"Saved {config.name!r} as {family.architecture} ({len(shards)} shard(s)) to {output_dir}", file=sys.stderr)
    return output_dir


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(size: Union[int, str]) -> int:
    """Bytes from an int or a string like "5GB", "500MB", "2GiB" (ValueError for anything else)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        if m is None or m[2].upper() not in _UNITS:
            raise ValueError(f"max_shard_size={size!r} is not a size like 5GB, 500MB or a number of bytes")
        value = int(float(m[1]) * _UNITS[m[2].upper()])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def _check_state(state: dict, shapes: dict, path: Path, tied: bool) -> None:
    missing = [k for k in shapes if k not in state and not (tied and k == "lm_head.weight")]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensor(s) the model config needs, e.g. {missing[0]!r}")
    unexpected = [k for k in state if k not in shapes]
    if unexpected:
        raise ValueError(
            f"{path} holds {len(unexpected)} tensor(s) the model config does not have, e.g. {unexpected[0]!r}"
        )
    for key, shape in shapes.items():
        if key in state and tuple(state[key].shape) != tuple(shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, the model config expects {tuple(shape)}"
            )


def _nbytes(state: dict, rule: Rule) -> int:
    return sum(state[k].numel() * state[k].element_size() for k in rule.lit)


def _plan_shards(rules: list[Rule], state: dict, limit: int) -> list[list[Rule]]:
    """Rules grouped into shards of at most `limit` bytes (a single bigger group gets a shard of its own)."""
    shards: list[list[Rule]] = [[]]
    size = 0
    for rule in rules:
        n = _nbytes(state, rule)
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(rule)
        size += n
    return shards


def _write_weights(shards: list[list[Rule]], state: dict, out_dir: Path) -> None:
    from safetensors.torch import save_file

    n = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for index, rules in enumerate(shards, start=1):
        name = "model.safetensors" if n == 1 else f"model-{index:05d}-of-{n:05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        for key, tensor in _hf_tensors(rules, state):
            tensors[key] = tensor
            weight_map[key] = name
            total += tensor.numel() * tensor.element_size()
        save_file(tensors, str(out_dir / name), metadata={"format": "pt"})
        del tensors
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _hf_tensors(rules: list[Rule], state: dict) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, tensor) of each weight the rules write, each tensor with its own storage."""
    for rule in rules:
        for key, tensor in zip(rule.hf, rule.to_hf([state[k] for k in rule.lit])):
            tensor = tensor.contiguous()
            if tensor._base is not None:  # a view into a fused tensor: safetensors wants its own storage
                tensor = tensor.clone()
            yield key, tensor


def _extra_config_fields(checkpoint_dir: Path, state: dict) -> dict:
    """dtype and special token ids for config.json (token ids from an original config.json or the
    generation config, when the checkpoint folder has one; null otherwise)."""
    dtype = state["transformer.wte.weight"].dtype
    extra: dict = {"torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True}
    sources: list[Optional[dict]] = []
    try:
        sources.append(read_hf_config(checkpoint_dir))
    except ValueError:
        pass
    generation = checkpoint_dir / "generation_config.json"
    if generation.is_file():
        try:
            sources.append(json.loads(generation.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    for source in sources:
        if not isinstance(source, dict):
            continue
        if isinstance(source.get("text_config"), dict):  # multimodal: the ids live in the text config too
            source = {**source["text_config"], **{k: v for k, v in source.items() if k in _TOKEN_ID_KEYS}}
        for key in _TOKEN_ID_KEYS:
            if key not in extra and source.get(key) is not None:
                extra[key] = source[key]
    for key in _TOKEN_ID_KEYS:  # unknown: null rather than a family default that may not fit the vocabulary
        extra.setdefault(key, None)
    return extra


def _move_into_place(tmp_dir: Path, output_dir: Path) -> None:
    """Renames the finished folder to `output_dir`; into an existing folder, moves file by file and removes
    safetensors files of an earlier export that the new one does not have (transformers would read a
    stale `model.safetensors` before new shards)."""
    if not output_dir.exists():
        os.replace(tmp_dir, output_dir)
        return
    if not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a directory")
    new = {p.name for p in tmp_dir.iterdir()}
    for path in tmp_dir.iterdir():
        os.replace(path, output_dir / path.name)
    for path in output_dir.iterdir():
        if path.is_file() and path.name not in new and _WEIGHT_FILE.match(path.name):
            path.unlink()
    tmp_dir.rmdir()
