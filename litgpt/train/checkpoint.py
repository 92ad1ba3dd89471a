"""Checkpoint folders of a training run and exact resumption.

`out_dir/step-00000100/` holds what `generate`, `chat`, `serve` and `convert_from_litgpt` read
(`lit_model.pth`, `model_config.yaml`, tokenizer files, `prompt_style.yaml`, `hyperparameters.yaml`) plus
`training_state.pth` (optimizer, scheduler, RNG states, data position, counters, loss history).
`out_dir/final/` is the same without the training state. Every folder is written under a temporary name
and renamed into place, so a crash mid-write never damages the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import yaml

from litgpt.train.args import STEP_DIR_RE
from litgpt.utils import load_torch_file

TRAINING_STATE = "training_state.pth"
STATE_FORMAT = 1


def check_writable(out_dir: Path) -> None:
    """Raises a one-line error unless `out_dir` exists as a writable folder or could be created.

    Creates nothing.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {out_dir} exists and is not a folder")
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"out_dir {out_dir} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"out_dir {out_dir} is not writable ({probe} does not allow writing)")


def write_folder(target: Path, write: Callable[[Path], Any]) -> Path:
    """Creates the folder `target` with the files `write(folder)` puts into the folder it is given.

    Everything is written into a hidden temporary folder beside `target`, which is then renamed to
    `target`. An existing `target` is replaced only after the new folder is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
        _default_permissions(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _default_permissions(folder: Path) -> None:
    """Gives a folder made by mkdtemp (0700) and the files in it the modes the umask allows (0755 / 0644),
    as if they had been created directly."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink() and os.stat(path).st_nlink == 1:
            os.chmod(path, 0o666 & ~umask)


def remove_stale_partial_saves(out_dir: Path) -> Optional[tuple[int, int]]:
    """Removes the hidden folders `write_folder` leaves behind when a save is killed (`.step-*.tmp`,
    `.final.*.tmp`, `.*.old-*`) in `out_dir`; returns (folders removed, bytes freed), or None if there were none."""
    out_dir = Path(out_dir)
    stale = [p for p in out_dir.glob(".*") if p.is_dir() and (p.name.endswith(".tmp") or ".old-" in p.name)]
    if not stale:
        return None
    freed = 0
    for folder in stale:
        freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale), freed


def step_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints in `out_dir` (those holding a training state), oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for child in out_dir.iterdir():
        m = STEP_DIR_RE.match(child.name)
        if m and (child / TRAINING_STATE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def find_resume_dir(out_dir: Path, resume: Union[bool, str, Path]) -> Optional[Path]:
    """The checkpoint folder to resume from: None for a fresh start.

    `resume` is False (fresh), "auto" (the latest in out_dir if any), True (the latest; an error when there
    is none) or a path to a step folder or its training_state.pth.
    """
    if resume is False or resume is None or (isinstance(resume, str) and resume.lower() == "false"):
        return None
    if resume is True or (isinstance(resume, str) and resume.lower() in ("auto", "true")):
        found = step_checkpoints(out_dir)
        if found:
            return found[-1][1]
        if resume is True or str(resume).lower() == "true":
            raise FileNotFoundError(f"--resume true: {out_dir} holds no step-* checkpoint with a {TRAINING_STATE}")
        return None
    path = Path(resume)
    if path.is_file() and path.name == TRAINING_STATE:
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
    if not (path / TRAINING_STATE).is_file():
        raise FileNotFoundError(f"--resume {resume}: the folder holds no {TRAINING_STATE} (is it a final/ folder?)")
    return path


def load_training_state(folder: Path) -> dict[str, Any]:
    """The training state saved in a step folder (a one-line error for a broken file)."""
    state = load_torch_file(Path(folder) / TRAINING_STATE, mmap=False)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{Path(folder) / TRAINING_STATE} is not a training state this version can resume")
    return state


# -------------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """The RNG states of python, numpy, torch and CUDA, in a form `torch.load(weights_only=True)` reads."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Sets the RNG states captured by `capture_rng`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ hyperparameters
def to_plain(value: Any) -> Any:
    """Arguments of a verb as YAML-able values; data modules become {class_path, init_args} so the
    file can be given back to the verb with --config."""
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if _is_data_module(value):
            cls = type(value)
            return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": fields}
        return fields
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    from litgpt.prompts import PromptStyle

    if isinstance(value, PromptStyle):
        cls = type(value)
        if cls.__module__ == "litgpt.prompts" and not value.init_args():
            return value.name
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": value.init_args()}
    return str(value)


def _is_data_module(value: Any) -> bool:
    from litgpt.data.base import DataModule

    return isinstance(value, DataModule)


def write_yaml(data: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
