"""Foundations shared by every layer: checkpoint files, atomic writes, argument checks, optimizers by name,
and LitGPT's utility names (`CLI`, `lazy_load`, `chunked_cross_entropy`, `choose_logger`, ...).

Layer 0: imports nothing from the project but `litgpt.precision` (also layer 0); see tutorials/architecture.md.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import inspect
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Union

import torch

PathLike = Union[str, Path]
OptimizerSpec = Union[str, dict]

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


def check_valid_checkpoint_dir(
    checkpoint_dir: PathLike, model_filename: str = "lit_model.pth", verbose: bool = True, raise_error: bool = False,
    ignore_tokenizer_files: bool = True,
) -> Path:
    """Raises a one-line FileNotFoundError unless `checkpoint_dir` holds `model_config.yaml` and the weights (and,
    with `ignore_tokenizer_files=False`, a tokenizer); returns the folder.

    LitGPT's `verbose` and `raise_error` are accepted: the error is always raised (LitGPT exits the process
    unless `raise_error`); the tokenizer is checked where it is needed, so it is not required by default here."""
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
    if not ignore_tokenizer_files and not any((checkpoint_dir / f).is_file() for f in TOKENIZER_FILES[:2]):
        raise FileNotFoundError(f"{checkpoint_dir} is missing its tokenizer (tokenizer.json or tokenizer.model)")
    return checkpoint_dir


class MappedFilePages:
    """Drops the pages of the memory-mapped checkpoint from this process once a tensor read from them is used.

    Pages of a memory-mapped file count in the resident memory until the mapping goes (with the last tensor of
    the state dict): without this, loading would end with the whole full-precision file resident next to the
    quantized model. Only addresses inside a mapping of the file itself are released (never anonymous memory);
    reading such a tensor again faults its pages back in from the file. A no-op where /proc or madvise is missing.
    """

    _MADV_DONTNEED = 4

    def __init__(self, path: Path) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        target = str(Path(path).resolve())
        try:
            self.madvise = ctypes.CDLL(None, use_errno=True).madvise
            self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].strip() == target:
                        lo, hi = (int(a, 16) for a in parts[0].split("-"))
                        self.ranges.append((lo, hi))
        except (OSError, AttributeError):
            self.ranges = []

    def release(self, t: Optional[torch.Tensor]) -> None:
        if t is None or not self.ranges or t.device.type != "cpu" or sys.platform != "linux":
            return
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        start = -(-start // self.page) * self.page  # whole pages inside the tensor only
        end = end // self.page * self.page
        if end > start and any(lo <= start and end <= hi for lo, hi in self.ranges):
            self.madvise(start, end - start, self._MADV_DONTNEED)


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


def copy_side_files(source_dir: PathLike, out_dir: PathLike) -> list[Path]:
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


class CompiledKernel:
    """`fn` through `torch.compile` (dynamic shapes from the first call, so a new length never recompiles), compiled on
    its first call; `eager` (default: `fn` itself) where compiling is off (`LITGPT_COMPILE_KERNELS=0`, or the
    kernel's own `env_var=0`), where it fails (no C compiler: one warning, then eager for the rest of the process),
    and inside code that torch.compile is already tracing (it traces `eager` with the rest)."""

    def __init__(self, fn: Any, eager: Any = None, env_var: Optional[str] = None, dynamic: Optional[bool] = True) -> None:
        self.fn, self.eager, self.env_var, self.dynamic = fn, eager or fn, env_var, dynamic
        self.compiled: Any = None
        self.failed = False

    @property
    def enabled(self) -> bool:
        """Whether calls run the compiled function (when compiling works)."""
        off = [os.environ.get("LITGPT_COMPILE_KERNELS", "1")] + ([os.environ.get(self.env_var, "1")] if self.env_var else [])
        return not self.failed and "0" not in off

    def __call__(self, *args: Any) -> Any:
        if not self.enabled or torch.compiler.is_compiling():
            return self.eager(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=self.dynamic)
        try:
            return self.compiled(*args)
        except Exception as err:  # no C++ compiler, an unsupported platform: warn once and stay eager
            import warnings

            self.failed = True
            first = (str(err).splitlines() or [type(err).__name__])[0][:200]
            warnings.warn(f"{self.fn.__name__} runs uncompiled (torch.compile failed: {first})")
            return self.eager(*args)


def litgpt_cache_dir() -> Path:
    """litgpt's cache folder (tokenized corpora, compiled kernels): `$LITGPT_CACHE_DIR`, else
    `$XDG_CACHE_HOME/litgpt`, else `~/.cache/litgpt`. Never a folder of the user's data."""
    root = os.environ.get("LITGPT_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "litgpt"


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


def configure_jsonargparse() -> None:
    """The two jsonargparse settings the verbs need, set only by CLI entry points (`litgpt.__main__`, `CLI`), never
    when a library module is imported: dataclass field docstrings become `--help` text, and an optional first
    argument may be given without its flag (`litgpt pretrain NAME`, as LitGPT accepts)."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True, parse_optionals_as_positionals=True)


def device_count(accelerator: str, devices: Union[int, str]) -> int:
    """Devices per node that `devices` selects ("auto": every GPU, or 1 CPU process)."""
    if isinstance(devices, int) or (isinstance(devices, str) and devices.lstrip("-").isdigit()):
        n = int(devices)
        if n == -1:
            return max(1, torch.cuda.device_count()) if accelerator != "cpu" else 1
        if n < 1:
            raise ValueError(f"devices must be >= 1, -1 or 'auto', got {devices}")
        return n
    if devices != "auto":
        raise ValueError(f"devices must be a number or 'auto', got {devices!r}")
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


def training_flops_per_token(model: Any, seq_length: int) -> float:
    """FLOPs of a forward + backward pass per token: 6 x (parameters in matmuls) plus attention scores
    (12 x layers x n_embd-equivalent x sequence length), following the PaLM paper's appendix B."""
    config = model.config
    n = 0
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "wte" not in name and "wpe" not in name:
            n += p.numel()
    if getattr(config, "tie_embeddings", False):
        n += model.lm_head.weight.numel()
    attention = 12 * config.n_layer * config.n_head * config.head_size * seq_length
    return 6 * n + attention


def resolve_optimizer_class(name: str) -> type:
    """'AdamW', 'torch.optim.SGD' or 'package.module.Class' -> the optimizer class."""
    if "." not in name:
        cls = getattr(torch.optim, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
            known = sorted(n for n, c in vars(torch.optim).items()
                           if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
            raise ValueError(f"unknown optimizer {name!r}; torch.optim has {', '.join(known)} (or give a dotted class path)")
        return cls
    module_name, _, cls_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import the optimizer {name!r}: {err}") from None
    cls = getattr(module, cls_name, None)
    if not inspect.isclass(cls):
        raise ValueError(f"{module_name} has no class {cls_name!r}")
    return cls


def parse_optimizer_spec(spec: OptimizerSpec) -> tuple[type, dict[str, Any]]:
    """The optimizer class and its keyword arguments from "AdamW" or {"class_path": ..., "init_args": {...}}."""
    if isinstance(spec, str):
        return resolve_optimizer_class(spec), {}
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"optimizer must be a name such as 'AdamW' or a dict with class_path and init_args, got {spec!r}")
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown:
        raise ValueError(f"optimizer: unknown key(s) {sorted(unknown)}; expected class_path and init_args")
    cls = resolve_optimizer_class(spec["class_path"])
    kwargs = dict(spec.get("init_args") or {})
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        bad = sorted(k for k in kwargs if k not in accepted)
        if bad:
            raise ValueError(f"optimizer {cls.__name__} takes no argument(s) {bad}")
    return cls, kwargs


# --------------------------------------------------------------------------------------------------------
# LitGPT's names (`from litgpt.utils import ...` in LitGPT users' scripts), with LitGPT's signatures. Where this
# project's behaviour is better it is kept and LitGPT's arguments are accepted: see
# tutorials/migrating-from-litgpt.md.

MODEL_CONFIG_FILE = "model_config.yaml"


def CLI(*args: Any, **kwargs: Any) -> Any:
    """`jsonargparse.CLI` with the settings the verbs use (`litgpt.utils.CLI(main)` in a script)."""
    from jsonargparse import CLI as _CLI

    configure_jsonargparse()
    kwargs.setdefault("as_positional", False)
    return _CLI(*args, **kwargs)


def auto_download_checkpoint(model_name: str, access_token: Optional[str] = None,
                             ignore_tokenizer_files: bool = False) -> Path:
    """The checkpoint folder of `model_name` (a folder, Hub repo id or registry name), downloaded and converted
    first when it is not on disk: `litgpt.scripts.download.auto_download_checkpoint`.

    The one import from a higher layer in this module, made when called (see tutorials/architecture.md)."""
    from litgpt.scripts.download import auto_download_checkpoint as download

    return download(model_name, access_token=access_token, ignore_tokenizer_files=ignore_tokenizer_files)


def lazy_load(filename: PathLike) -> Any:
    """The object in a `torch.save` file, memory-mapped (tensors are read when used)."""
    return load_torch_file(filename, mmap=True)


def copy_config_files(source_dir: PathLike, out_dir: PathLike) -> None:
    """Copies `model_config.yaml` and the tokenizer, generation and chat-template files of `source_dir` into
    `out_dir` (LitGPT's behaviour; `copy_side_files` copies all but `model_config.yaml`)."""
    copied = copy_side_files(source_dir, out_dir)
    src, dst = Path(source_dir) / MODEL_CONFIG_FILE, Path(out_dir) / MODEL_CONFIG_FILE
    if src.is_file() and src.resolve() != dst.resolve():
        shutil.copy2(src, dst)
        copied.append(dst)


def save_config(config: Any, checkpoint_dir: PathLike) -> None:
    """Writes `config` (a `litgpt.Config`) as `checkpoint_dir/model_config.yaml` (the folder is created)."""
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    config.save(checkpoint_dir)


def extend_checkpoint_dir(checkpoint_dir: PathLike) -> Path:
    """`checkpoint_dir`, or `checkpoints/<checkpoint_dir>` when only that exists (names as `litgpt download` saves
    them, e.g. "EleutherAI/pythia-14m")."""
    checkpoint_dir = Path(checkpoint_dir)
    extended = Path("checkpoints") / checkpoint_dir
    if not checkpoint_dir.is_absolute() and not checkpoint_dir.exists() and extended.exists():
        return extended
    return checkpoint_dir


def init_out_dir(out_dir: PathLike) -> Path:
    """`out_dir`, placed under `$LIGHTNING_ARTIFACTS_DIR` when that is set and `out_dir` is relative."""
    out_dir = Path(out_dir)
    root = os.environ.get("LIGHTNING_ARTIFACTS_DIR")
    if not out_dir.is_absolute() and root:
        return Path(root) / out_dir
    return out_dir


def find_resume_path(resume: Union[bool, Literal["auto"], PathLike], out_dir: PathLike) -> Optional[Path]:
    """The `lit_model.pth` of the latest `step-*` checkpoint in `out_dir` for `resume=True` / "auto" (None when
    "auto" finds none; FileNotFoundError when True finds none), `resume` itself when it is a path, else None."""
    if not resume or isinstance(resume, (str, Path)) and str(resume).lower() not in ("auto", "true"):
        return Path(resume) if resume and str(resume).lower() != "false" else None
    found = sorted(Path(out_dir).glob("step-*/lit_model.pth"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if found:
        return found[-1]
    if resume is True or str(resume).lower() == "true":
        raise FileNotFoundError(f"--resume true: no step-*/lit_model.pth checkpoint in --out_dir {out_dir}")
    return None


class CycleIterator:
    """Iterates over `iterable` again and again; `epoch` counts the completed passes."""

    def __init__(self, iterable: Iterable) -> None:
        self.iterable = iterable
        self.epoch = 0
        self._iterator: Optional[Iterator] = None

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self.iterable)
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.iterable)
            self.epoch += 1
            return next(self._iterator)

    def __iter__(self) -> "CycleIterator":
        return self


def chunked_cross_entropy(
    logits: Union[torch.Tensor, list[torch.Tensor]], targets: torch.Tensor, chunk_size: int = 128,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not `ignore_index`, computed `chunk_size` rows at a time
    (0: in one go) so the float32 upcast of a large vocabulary never exists for all rows at once.

    Args:
        logits: (B, T, V), or a list of (B, t_i, V) pieces along T (as `GPT(lm_head_chunk_size=...)` returns).
        targets: (B, T) token ids.
        chunk_size: rows per piece of the computation; 0 for one piece.
        ignore_index: target value that does not count.
    """
    if isinstance(logits, list):
        logits = torch.cat(logits, dim=1)
    logits = logits.reshape(-1, logits.size(-1))
    targets = targets.reshape(-1)
    if chunk_size <= 0:
        return torch.nn.functional.cross_entropy(logits, targets, ignore_index=ignore_index)
    total = logits.new_zeros((), dtype=torch.float32)
    for rows, ys in zip(logits.split(chunk_size), targets.split(chunk_size)):
        total = total + torch.nn.functional.cross_entropy(rows.float(), ys, ignore_index=ignore_index, reduction="sum")
    count = (targets != ignore_index).sum().clamp(min=1)
    return (total / count).to(logits.dtype)


def parse_devices(devices: Union[str, int]) -> int:
    """The number of devices `devices` means: a count, or "auto" / -1 for every GPU (1 without GPUs)."""
    return device_count("auto", devices)


def get_default_supported_precision(training: bool) -> str:
    """The default precision of this machine: for training bf16-mixed (16-mixed on GPUs without bfloat16), for
    inference bf16-true (16-true on such GPUs)."""
    from litgpt.precision import default_training_precision

    mixed = default_training_precision("auto")
    return mixed if training else mixed.replace("-mixed", "-true")


def instantiate_torch_optimizer(optimizer: OptimizerSpec, model_parameters: Any, **kwargs: Any) -> torch.optim.Optimizer:
    """An optimizer from a name ("AdamW", "torch.optim.SGD") or {"class_path": ..., "init_args": {...}};
    `kwargs` override the init_args (only those the optimizer accepts)."""
    cls, init_args = parse_optimizer_spec(optimizer)
    accepted = inspect.signature(cls.__init__).parameters
    init_args.update({k: v for k, v in kwargs.items() if k in accepted})
    return cls(model_parameters, **init_args)


def instantiate_bnb_optimizer(optimizer: OptimizerSpec, model_parameters: Any) -> torch.optim.Optimizer:
    """The bitsandbytes 8-bit paged version of an AdamW/Adam/SGD spec (for QLoRA): `bnb.optim.PagedAdamW`, ..."""
    cls, init_args = parse_optimizer_spec(optimizer)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ImportError("instantiate_bnb_optimizer needs bitsandbytes: pip install 'litgpt[bnb]'") from None
    paged = getattr(bnb.optim, f"Paged{cls.__name__}", None)
    if paged is None:
        raise ValueError(f"bitsandbytes has no paged version of {cls.__name__}; use AdamW, Adam or SGD")
    return paged(model_parameters, **init_args)


def choose_logger(
    logger_name: Literal["csv", "tensorboard", "wandb", "mlflow", "litlogger"], out_dir: PathLike, name: str,
    log_interval: int = 1, log_args: Optional[dict] = None, resume: Optional[bool] = None, **kwargs: Any,
) -> Any:
    """A Lightning Fabric logger writing under `out_dir/logs` (csv, tensorboard, wandb or mlflow)."""
    from lightning.fabric import loggers

    out_dir = Path(out_dir)
    if logger_name == "csv":
        return loggers.CSVLogger(root_dir=out_dir / "logs", name="csv", flush_logs_every_n_steps=log_interval, **kwargs)
    if logger_name == "tensorboard":
        return loggers.TensorBoardLogger(root_dir=out_dir / "logs", name="tensorboard", **kwargs)
    if logger_name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(project=name, resume=resume, config=log_args, **kwargs)
    if logger_name == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name=name, **kwargs)
    raise ValueError(f"unknown logger_name {logger_name!r}; expected csv, tensorboard, wandb or mlflow")


def estimate_flops(model: Any, training: bool) -> int:
    """FLOPs of one sequence of `model.max_seq_length` tokens through `model` (a GPT): forward + backward when
    `training`, forward only (a third) otherwise."""
    per_token = training_flops_per_token(model, model.max_seq_length)
    return int(per_token * model.max_seq_length / (1 if training else 3))


def capture_hparams() -> dict[str, Any]:
    """The arguments of the calling function (its local variables when called first thing), with paths as strings
    and dataclasses as dicts: what a verb records as its hyperparameters."""
    frame = inspect.currentframe().f_back
    out = {}
    for key, value in frame.f_locals.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out


def save_hyperparameters(function: Any, checkpoint_dir: PathLike, hparams: Optional[dict] = None) -> Path:
    """Writes `hyperparameters.yaml` into `checkpoint_dir`: `hparams`, or the values of `function`'s parameters
    given on this process's command line (`sys.argv`) on top of its defaults."""
    import sys

    import yaml

    if hparams is None:
        hparams = {name: p.default for name, p in inspect.signature(function).parameters.items()
                   if p.default is not inspect.Parameter.empty}
        argv = sys.argv[1:]
        for i, arg in enumerate(argv):
            if arg.startswith("--") and i + 1 < len(argv):
                key, _, value = arg[2:].partition("=")
                hparams[key] = value if _ else argv[i + 1]

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return plain(dataclasses.asdict(value))
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)

    path = Path(checkpoint_dir) / "hyperparameters.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(plain(hparams), sort_keys=False), encoding="utf-8")
    return path


def get_argument_names(cls: Any) -> set[str]:
    """The names of the arguments `cls(...)` takes."""
    return {name for name, p in inspect.signature(cls).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@dataclasses.dataclass
class CheckpointValidationResult:
    """What `validate_checkpoint` found: keys the model lacks or has more of, shape mismatches, other errors."""

    is_valid: bool
    missing_keys: list = dataclasses.field(default_factory=list)
    unexpected_keys: list = dataclasses.field(default_factory=list)
    shape_mismatches: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)


def validate_checkpoint(checkpoint_path: PathLike, model: torch.nn.Module, verbose: bool = True) -> CheckpointValidationResult:
    """Compares the state dict in `checkpoint_path` with `model`'s (names and shapes) without loading it."""
    result = CheckpointValidationResult(is_valid=False)
    try:
        state = load_state_dict(checkpoint_path)
    except (FileNotFoundError, ValueError) as err:
        result.errors.append(str(err))
    else:
        own = model.state_dict()
        result.missing_keys = [k for k in own if k not in state]
        result.unexpected_keys = [k for k in state if k not in own]
        result.shape_mismatches = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                                   if k in own and tuple(v.shape) != tuple(own[k].shape)]
        result.is_valid = not (result.missing_keys or result.unexpected_keys or result.shape_mismatches)
    if verbose:
        print("Checkpoint validation passed." if result.is_valid else f"Checkpoint validation failed: {result}")
    return result


def estimate_model_memory(config: Any, dtype: Union[str, torch.dtype] = torch.float32, training: bool = False) -> dict[str, Any]:
    """Parameter count and memory of a model of `config`, in GB: weights alone, and in total (training: + gradients
    and AdamW's two float32 moments); whether it fits the free memory of the current GPU (None without one)."""
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    params = estimate_parameter_count(config)
    bytes_per = torch.empty((), dtype=dtype).element_size()
    weights = params * bytes_per
    total = weights + (params * (bytes_per + 8) if training else 0)
    available = None
    if torch.cuda.is_available():
        available = round(torch.cuda.mem_get_info()[0] / 1e9, 2)
    return {
        "param_count": params,
        "param_memory_gb": round(weights / 1e9, 2),
        "estimated_total_gb": round(total / 1e9, 2),
        "available_gpu_memory_gb": available,
        "fits_in_memory": None if available is None else total / 1e9 <= available,
    }


def estimate_parameter_count(config: Any) -> int:
    """Parameters of a model of `config` from its sizes (embedding, attention, MLP or experts, norms, head); an
    estimate for memory planning (biases and norm weights are counted, rarer extras such as q/k norms are not)."""
    c = config
    vocab = getattr(c, "padded_vocab_size", None) or c.vocab_size
    head_size = getattr(c, "head_size", None) or c.n_embd // c.n_head
    groups = getattr(c, "n_query_groups", None) or c.n_head
    qkv_out = (c.n_head + 2 * groups) * head_size
    attention = c.n_embd * qkv_out + c.n_head * head_size * c.n_embd
    if getattr(c, "bias", False) or getattr(c, "attn_bias", False):
        attention += qkv_out + c.n_embd
    inter = getattr(c, "intermediate_size", None) or 4 * c.n_embd
    mlp_class = str(getattr(c, "mlp_class_name", "GptNeoxMLP"))
    if mlp_class == "LLaMAMoE":
        experts = getattr(c, "n_expert", 1)
        expert_size = getattr(c, "moe_intermediate_size", None) or inter
        mlp = experts * 3 * c.n_embd * expert_size + experts * c.n_embd
    else:
        mlp = (2 if mlp_class == "GptNeoxMLP" else 3) * c.n_embd * inter
    layer = attention + mlp + 4 * c.n_embd  # two norms with weight and bias
    head = 0 if getattr(c, "tie_embeddings", False) else vocab * c.n_embd
    return vocab * c.n_embd + c.n_layer * layer + 2 * c.n_embd + head


def kill_process_tree(pid: int) -> None:
    """Kills process `pid` and all its descendants (children first), ignoring those already gone."""
    import signal

    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    order, stack = [], [pid]
    while stack:
        current = stack.pop()
        order.append(current)
        stack.extend(children.get(current, []))
    for target in reversed(order):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
