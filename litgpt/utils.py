"""Small helpers shared by the verbs: checkpoint files, atomic writes, precision names."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

PathLike = Union[str, Path]

# The tokenizer proper (the first two are the tokenizer models themselves).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
# Everything a checkpoint folder may hold besides the weights and the config: copied along by conversion,
# export and training.
CHECKPOINT_SIDE_FILES = TOKENIZER_FILES + (
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "prompt_style.yaml",
)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is renamed to `path`, on error removed.

    A crash mid-write therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: PathLike) -> Path:
    """`torch.save(obj, path)` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch_file(path: PathLike, map_location: Any = "cpu", mmap: bool = True) -> Any:
    """Loads a `torch.save` file (memory-mapped when possible), with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, mmap=mmap, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as err:
        if mmap:
            try:  # legacy (non-zip) files cannot be memory-mapped
                return torch.load(path, map_location=map_location, weights_only=True)
            except Exception:
                pass
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint file {path} is corrupt or not a PyTorch checkpoint ({first})") from None


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The model state dict in `lit_model.pth` (also accepts {'model': state_dict} training checkpoints)."""
    obj = load_torch_file(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint file {path} does not hold a state dict")
    return obj


def load_checkpoint(fabric: Any, model: torch.nn.Module, checkpoint_path: PathLike, strict: bool = True) -> None:
    """LitGPT's `load_checkpoint(fabric, model, checkpoint_path, strict)`: loads a state-dict file (or a training
    checkpoint's 'model' entry) into `model` with a plain `load_state_dict` (`fabric` is accepted for LitGPT's
    signature and not needed). `litgpt.checkpoint.load_checkpoint(model, path)` is the loader the verbs use: it
    also adds the PEFT modules an adapter folder needs."""
    model = getattr(model, "_forward_module", model)  # a Fabric-wrapped module
    model.load_state_dict(load_state_dict(checkpoint_path), strict=strict)


def check_state_dict_matches(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: PathLike, optional: tuple[str, ...] = ()
) -> None:
    """Raises a one-line ValueError unless `state` has exactly the keys (except `optional` ones) and shapes
    of the model's state dict `own`."""
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) e.g. {unexpected[:3]}")
        raise ValueError(f"{source} does not match the model config: {'; '.join(parts)}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model config expects {tuple(own[key].shape)}"
            )


def check_valid_checkpoint_dir(checkpoint_dir: PathLike, model_filename: str = "lit_model.pth") -> Path:
    """Raises a one-line error unless `checkpoint_dir` holds `model_config.yaml` and the weights."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir} does not exist")
    missing = [f for f in (model_filename, "model_config.yaml") if not (checkpoint_dir / f).is_file()]
    if missing:
        hint = ""
        if any(checkpoint_dir.glob("*.safetensors")) or any(checkpoint_dir.glob("pytorch_model*.bin")):
            hint = f"; it holds Hugging Face weights: run `litgpt convert_to_litgpt {checkpoint_dir}` first"
        elif any((checkpoint_dir / f"{model_filename}.{kind}").is_file() for kind in ("lora", "adapter")):
            hint = f"; it holds only finetuned PEFT weights: run `litgpt merge_lora {checkpoint_dir}` first"
        raise FileNotFoundError(f"{checkpoint_dir} is missing {', '.join(missing)}{hint}")
    return checkpoint_dir


def read_yaml(path: PathLike) -> Any:
    """The data of a YAML file; a one-line ValueError naming the file when it is not valid YAML."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None


def return_freed_memory() -> None:
    """Hands heap memory freed by temporaries back to the OS (glibc's malloc_trim; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def copy_config_files(source_dir: PathLike, out_dir: PathLike) -> list[Path]:
    """Copies the tokenizer, generation and chat-template files that exist in `source_dir` into `out_dir`."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in CHECKPOINT_SIDE_FILES:
        src = source_dir / name
        if src.is_file() and src.resolve() != (out_dir / name).resolve():
            shutil.copy2(src, out_dir / name)
            copied.append(out_dir / name)
    return copied


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "32": torch.float32, "32-true": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "16-true": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "bf16-true": torch.bfloat16,
}


def parse_dtype(name: Optional[Union[str, torch.dtype]]) -> Optional[torch.dtype]:
    """'bfloat16' / 'bf16-true' / torch.bfloat16 ... -> torch dtype; None stays None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    key = str(name).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of float32, float16, bfloat16")
    return _DTYPES[key]


def check_int(name: str, value: object, minimum: int, maximum: Optional[int] = None, note: str = "") -> None:
    """Raises a one-line ValueError unless `value` is an int (not a bool) in [minimum, maximum].

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        minimum: the smallest value allowed.
        maximum: the largest value allowed (None: no limit).
        note: appended to the range in the message, e.g. " (the model's block_size)".
    """
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        wanted = f"an integer in [{minimum}, {maximum}]" if maximum is not None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}{note}, got {value!r}")


def num_parameters(module: torch.nn.Module, requires_grad: Optional[bool] = None) -> int:
    """Number of parameters (shared tensors counted once), optionally only (non-)trainable ones."""
    seen = {}
    for p in module.parameters():
        if requires_grad is None or p.requires_grad == requires_grad:
            seen[id(p)] = p.numel()
    return sum(seen.values())
