"""`litgpt convert_to_litgpt`: a Hugging Face checkpoint folder -> `lit_model.pth` + `model_config.yaml`.

The weights are streamed: safetensors files are opened lazily and read tensor by tensor, `.bin` files are
memory-mapped, and a tensor that is part of a fused group (q/k/v, Phi-3's gate/up, stacked experts) is kept
only until its group is complete. Family tables live in `litgpt.scripts.hf_families`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from litgpt.config import Config
from litgpt.scripts.hf_families import (
    Family,
    Rule,
    Unrepresentable,
    config_from_hf,
    family_for_config,
    text_config,
    weight_rules,
)
from litgpt.utils import atomic_path, load_torch_file, parse_dtype

__all__ = ["convert_hf_checkpoint", "find_weight_files", "lit_shapes", "read_hf_config"]


def convert_hf_checkpoint(
    checkpoint_dir: Path,
    *,
    model_name: Optional[str] = None,
    dtype: Optional[str] = None,
) -> Path:
    """Converts a Hugging Face checkpoint into LitGPT's format, in the same folder.

    Reads `model.safetensors` (or shards with `model.safetensors.index.json`) or `pytorch_model.bin` (or
    shards with `pytorch_model.bin.index.json`) and writes `lit_model.pth` and `model_config.yaml` next to
    them. The architecture comes from `--model_name`, else from the folder name when it is a registry name,
    else it is inferred from `config.json`.

    Args:
        checkpoint_dir: Folder holding the Hugging Face weights and `config.json`, or a `.gguf` file (imported
            into the folder of the same name without `.gguf`; quantized tensors are dequantized).
        model_name: A registry name whose config to use instead of inferring it from `config.json`.
        dtype: Cast the weights to this precision (float32, float16 or bfloat16); default: keep them.

    Returns:
        The path of the written `lit_model.pth`.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if checkpoint_dir.suffix == ".gguf" and checkpoint_dir.is_file():  # a GGUF file -> a folder beside it
        from litgpt.scripts.gguf_families import convert_gguf_file

        return convert_gguf_file(checkpoint_dir, dtype=parse_dtype(dtype))
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir} does not exist")
    target_dtype = parse_dtype(dtype)
    files = find_weight_files(checkpoint_dir)
    config, family, hf = resolve_config(checkpoint_dir, model_name)
    shapes = lit_shapes(config)
    try:
        rules = weight_rules(family.weight_layout(config, hf), config, list(shapes))
    except Unrepresentable as err:
        raise ValueError(f"config {config.name!r} cannot be read as {family.model_type!r} weights: {err}") from None

    state = _convert_weights(files, family, config, rules, shapes, target_dtype)

    out_path = checkpoint_dir / "lit_model.pth"
    with atomic_path(out_path) as tmp:
        torch.save(state, tmp)
        config.save(checkpoint_dir)
    print(f"Saved {len(state)} tensors of {config.name!r} ({family.model_type}) to {out_path}", file=sys.stderr)
    return out_path


# --------------------------------------------------------------------------------------------------
# inputs
def read_hf_config(checkpoint_dir: Path) -> Optional[dict]:
    """The parsed `config.json` of a folder, None if there is none; ValueError (one line) if unreadable."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def resolve_config(checkpoint_dir: Path, model_name: Optional[str]) -> tuple[Config, Family, dict]:
    """The Config to convert to, the family whose names the weights use, and that family's config dict."""
    hf_config = read_hf_config(checkpoint_dir)
    config = None
    if model_name:
        config = Config.from_name(model_name)
    else:
        try:
            config = Config.from_name(checkpoint_dir.name)
        except ValueError:
            config = None
    if config is None:
        if hf_config is None:
            raise FileNotFoundError(
                f"{checkpoint_dir} has no config.json and {checkpoint_dir.name!r} is not a registry name; "
                "pass --model_name"
            )
        name = checkpoint_dir.name
        config, family, hf = config_from_hf(hf_config, name=name)
        return config, family, hf
    if hf_config is not None and "model_type" in hf_config:
        try:  # the weights are named as config.json's architecture names them
            family, hf = text_config(hf_config)
            return config, family, hf
        except ValueError:
            pass  # an architecture we do not know by name: assume the one the Config maps to
    family, hf = family_for_config(config)
    return config, family, hf


def find_weight_files(checkpoint_dir: Path) -> list[Path]:
    """The weight files of a Hugging Face checkpoint folder, in reading order (one-line errors)."""
    checkpoint_dir = Path(checkpoint_dir)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = checkpoint_dir / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
                names = list(dict.fromkeys(weight_map.values()))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"{index_path} is not a valid index file ({type(err).__name__}: {err})") from None
            missing = [n for n in names if not (checkpoint_dir / n).is_file()]
            if missing:
                raise FileNotFoundError(f"{index_path} lists {missing[0]}, which does not exist in {checkpoint_dir}")
            return [checkpoint_dir / n for n in names]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (checkpoint_dir / single).is_file():
            return [checkpoint_dir / single]
    shards = sorted(checkpoint_dir.glob("model-*-of-*.safetensors"))
    shards = shards or sorted(checkpoint_dir.glob("pytorch_model-*-of-*.bin"))
    if shards:
        return shards
    raise FileNotFoundError(
        f"no Hugging Face weights in {checkpoint_dir} (expected model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin or pytorch_model.bin.index.json)"
    )


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, Path, Callable[[], torch.Tensor]]]:
    """(key, file, loader) for every tensor of the files; loaders read one tensor when called."""
    for path in files:
        if path.suffix == ".safetensors":
            yield from _iter_safetensors(path)
        else:
            state = load_torch_file(path, mmap=True)
            if not isinstance(state, dict):
                raise ValueError(f"{path} does not hold a state dict")
            for key in list(state):
                tensor = state.pop(key)
                if not isinstance(tensor, torch.Tensor):
                    raise ValueError(f"{path}: entry {key!r} is not a tensor")
                yield key, path, (lambda t=tensor: t)
            del state


def _iter_safetensors(path: Path):
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # safetensors raises its own error type for malformed headers
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a valid safetensors file ({first})") from None
    with handle as f:
        for key in f.keys():
            def load(key=key):
                try:
                    return f.get_tensor(key)
                except Exception as err:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise ValueError(f"{path}: tensor {key!r} cannot be read ({first})") from None

            yield key, path, load


def lit_shapes(config: Config) -> dict[str, torch.Size]:
    """Name -> shape of every tensor in our model's state dict for `config` (built on the meta device)."""
    from litgpt.model import GPT

    with torch.device("meta"):
        model = GPT(config)
    return {name: t.shape for name, t in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# conversion
def _expected_hf_shapes(rule: Rule, shapes: dict[str, torch.Size]) -> list[torch.Size]:
    metas = [torch.empty(shapes[name], device="meta") for name in rule.lit]
    return [t.shape for t in rule.to_hf(metas)]


def _convert_weights(
    files: list[Path],
    family: Family,
    config: Config,
    rules: list[Rule],
    shapes: dict[str, torch.Size],
    dtype: Optional[torch.dtype],
) -> dict[str, torch.Tensor]:
    by_key: dict[str, tuple[Rule, int]] = {}
    for rule in rules:
        for pos, key in enumerate(rule.hf):
            by_key[key] = (rule, pos)
    pending: dict[int, dict[int, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}

    for raw_key, path, load in iter_tensors(files):
        key = family.normalize_key(raw_key)
        if key is None:
            continue
        if key not in by_key:
            raise ValueError(
                f"{path.name}: unexpected tensor {raw_key!r}, not part of a {family.model_type} model with this "
                f"config ({config.n_layer} layers)"
            )
        rule, pos = by_key[key]
        tensor = load()
        expected = _expected_hf_shapes(rule, shapes)[pos]
        if tuple(tensor.shape) != tuple(expected):
            raise ValueError(
                f"{path.name}: tensor {raw_key!r} has shape {tuple(tensor.shape)}, but the config expects "
                f"{tuple(expected)}"
            )
        group = pending.setdefault(id(rule), {})
        if pos in group:
            raise ValueError(f"{path.name}: tensor {raw_key!r} appears twice in the checkpoint")
        group[pos] = tensor
        if len(group) < len(rule.hf):
            continue
        del pending[id(rule)]
        results = rule.to_lit([group[i] for i in range(len(rule.hf))])
        for name, value in zip(rule.lit, results):
            if name in out:
                raise ValueError(
                    f"{path.name}: {raw_key!r} and {source[name]!r} both hold {name!r} "
                    "(two layouts of the same weights)"
                )
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            out[name] = value.contiguous()
            source[name] = raw_key

    if pending:
        rule = next(r for r in rules if id(r) in pending)
        have = set(pending[id(rule)])
        missing = [k for i, k in enumerate(rule.hf) if i not in have]
        raise ValueError(f"the checkpoint lacks {missing[0]!r} (needed together with {rule.hf[min(have)]!r})")
    if config.tie_embeddings and "transformer.wte.weight" in out:
        head, embedding = out.get("lm_head.weight"), out["transformer.wte.weight"]
        if head is not None and not torch.equal(head, embedding):
            print(
                f"Note: config {config.name!r} ties the LM head to the token embedding; the checkpoint's own "
                "lm_head.weight differs and is replaced by the embedding",
                file=sys.stderr,
            )
        out["lm_head.weight"] = embedding
    missing = [name for name in shapes if name not in out]
    if missing:
        hf_names = [r.hf[0] for r in rules if r.canonical and missing[0] in r.lit]
        what = f" ({hf_names[0]!r})" if hf_names else ""
        raise ValueError(
            f"the checkpoint lacks {len(missing)} weight(s) the config needs, e.g. {missing[0]!r}{what}"
        )
    return {name: out[name] for name in shapes}

